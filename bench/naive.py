"""The naive baseline of bench.scale: the per-object pattern of configuration-as-code tools, one read per
batch and per member and one call per difference, measured over the gateway on a small tenant.

Not a benchmark of its own (no `main`): bench.scale runs it in the same run as the controller's passes and
extrapolates it linearly to the full tenant.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from controller.exchange.errors import CmdletError
from controller.exchange.psrp import PsrpRunner
from controller.secrets import Credential
from controller.sim.exchange.simulator import ExchangeSimulator
from controller.sim.exchange.store import SimRunner, SimStore
from controller.sim.pki import Pki
from tests.support.gateway import running_gateway, settings_for

ENDPOINT = "StagedEndpoint"


@dataclass(frozen=True, slots=True)
class Naive:
    """What one naive pass cost on `batches` x `members`, per kind of call."""

    batches: int
    members: int
    calls: int
    response_bytes: int
    seconds: float  # at gateway latency 0

    @property
    def objects(self) -> int:
        return 1 + self.batches + self.batches * self.members

    def scaled(self, batches: int, members: int, differences: int) -> tuple[int, float, float]:
        """Calls, bytes and seconds at 0 latency for `batches` x `members` and `differences` writes: linear
        in the objects read (one call each), the writes priced like a read."""
        factor = (1 + batches + batches * members + differences) / self.objects
        return round(self.calls * factor), self.response_bytes * factor, self.seconds * factor


def _address(batch: int, member: int) -> str:
    return f"naive{batch:03}.m{member:04}@contoso.com"


def _tenant(path: Path, batches: int, members: int) -> None:
    simulator = ExchangeSimulator(now=datetime.now(UTC))
    for batch in range(batches):
        for member in range(members):
            simulator.add_recipient(_address(batch, member))
    simulator.call(
        "New-MigrationEndpoint",
        {
            "ExchangeOutlookAnywhere": True,
            "Name": ENDPOINT,
            "Credentials": Credential("CONTOSO\\migrator", "bench"),
            "ExchangeServer": "mail.contoso.com",
            "RpcProxyServer": "mail.contoso.com",
        },
    )
    for batch in range(batches):
        rows = "".join(f"{_address(batch, member)}\r\n" for member in range(members))
        simulator.call(
            "New-MigrationBatch",
            {
                "Name": f"Naive-{batch:03}",
                "SourceEndpoint": ENDPOINT,
                "CSVData": ("EmailAddress\r\n" + rows).encode(),
                "AutoStart": True,
            },
        )
    SimStore(path).create(simulator)


def _read(runner: PsrpRunner, cmdlet: str, identity: str) -> None:
    try:
        runner.run(cmdlet, {"Identity": identity})
    except CmdletError as error:  # an object that is not there yet is a difference, not a failure
        if not error.not_found:
            raise


def measure(work: Path, pki: Pki, *, batches: int, members: int) -> Naive:
    """One naive observation of a `batches` x `members` tenant through a gateway at latency 0: whole
    objects (no Select-Object), as a per-object tool reads them. Steady state: no differences to write."""
    path = work / "naive" / "exchange.json"
    path.parent.mkdir(parents=True)
    _tenant(path, batches, members)
    with running_gateway(SimRunner(path), pki=pki) as gateway:
        runner = PsrpRunner(settings_for(gateway, caBundle=str(pki.ca), operationTimeout=20, readTimeout=30))
        runner.run("Get-MigrationEndpoint", {"Identity": ENDPOINT})  # opens the session: not counted
        calls, sent, started = len(gateway.received), gateway.response_bytes, time.perf_counter()
        _read(runner, "Get-MigrationEndpoint", ENDPOINT)
        for batch in range(batches):
            _read(runner, "Get-MigrationBatch", f"Naive-{batch:03}")
            for member in range(members):
                _read(runner, "Get-MigrationUser", _address(batch, member))
        seconds = time.perf_counter() - started
        naive = Naive(
            batches=batches,
            members=members,
            calls=len(gateway.received) - calls,
            response_bytes=gateway.response_bytes - sent,
            seconds=seconds,
        )
        runner.close()
    return naive
