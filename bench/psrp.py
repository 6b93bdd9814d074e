"""Benchmark: round trips and wall time through the PSRP gateway (TLS, Basic) to the simulator.

Run: `.venv/bin/python -m bench.psrp [N]`; prints HTTP round trips and wall time for opening the pool,
N Get-MigrationBatch calls (100 batches x 2,000 members in the tenant) and one New-MigrationBatch with a
2,000-row CSV.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from controller.exchange.psrp import PsrpRunner
from controller.sim.exchange.simulator import ExchangeSimulator
from controller.sim.exchange.store import SimRunner, SimStore
from tests.support.gateway import PASSWORD, FakeRunner, make_pki, running_gateway, settings_for

BATCHES = 100
MEMBERS = 2000


def _csv(batch: int) -> bytes:
    rows = "".join(f"user{batch:03d}-{i:04d}@contoso.com\r\n" for i in range(MEMBERS))
    return ("EmailAddress\r\n" + rows).encode()


def _tenant(path: Path) -> None:
    """100 batches x 2,000 members already created, and the recipients of one more batch."""
    simulator = ExchangeSimulator(now=datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
    for batch in range(BATCHES + 1):
        for i in range(MEMBERS):
            simulator.add_recipient(f"user{batch:03d}-{i:04d}@contoso.com")
    endpoint = {
        "ExchangeOutlookAnywhere": True,
        "Name": "StagedEndpoint",
        "ExchangeServer": "mail.contoso.com",
        "RpcProxyServer": "mail.contoso.com",
        "EmailAddress": "admin@contoso.com",
    }
    from controller.secrets import Credential

    simulator.call("New-MigrationEndpoint", {**endpoint, "Credentials": Credential("CONTOSO\\m", "pw")})
    for batch in range(BATCHES - 1):  # the last one is created by the benchmark
        simulator.call(
            "New-MigrationBatch",
            {"Name": f"Batch{batch:03d}", "SourceEndpoint": "StagedEndpoint", "CSVData": _csv(batch)},
        )
    SimStore(path).create(simulator)


def _transport_only(calls: int, pki_dir: Path) -> None:
    """The gateway's own cost: a canned runner answering 100 batch objects, no simulator behind it."""
    fake = FakeRunner()
    fake.rows["Get-MigrationBatch"] = [
        {"Identity": f"Batch{i:03d}", "Status": "Syncing", "TotalCount": MEMBERS, "SyncedCount": 0}
        for i in range(BATCHES)
    ]
    fake.rows["New-MigrationBatch"] = [{"Identity": "BatchX", "Status": "Syncing"}]
    pki = make_pki(pki_dir)
    with running_gateway(fake, pki=pki) as gateway:
        runner = PsrpRunner(settings_for(gateway, caBundle=str(pki.ca)))
        runner.run("Get-MigrationBatch", {})
        before, start = gateway.round_trips, time.perf_counter()
        for _ in range(calls):
            runner.run("Get-MigrationBatch", {})
        elapsed = time.perf_counter() - start
        print(
            f"[transport only] {calls} x Get-MigrationBatch (100 objects): {gateway.round_trips - before} "
            f"round trips, {elapsed:.2f} s, {elapsed / calls * 1000:.1f} ms per call"
        )
        before, start = gateway.round_trips, time.perf_counter()
        runner.run(
            "New-MigrationBatch", {"Name": "BatchX", "SourceEndpoint": "StagedEndpoint", "CSVData": _csv(0)}
        )
        print(
            f"[transport only] New-MigrationBatch, 2000-row CSV: {gateway.round_trips - before} round trips, "
            f"{(time.perf_counter() - start) * 1000:.1f} ms"
        )
        runner.close()


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    os.environ["STAGECTL_TEST_GATEWAY_PASSWORD"] = PASSWORD
    with tempfile.TemporaryDirectory() as scratch:
        _transport_only(calls * 10, Path(scratch) / "pki0")
        state = Path(scratch) / "exchange.json"
        _tenant(state)
        pki = make_pki(Path(scratch) / "pki")
        with running_gateway(SimRunner(state), pki=pki) as gateway:
            runner = PsrpRunner(settings_for(gateway, caBundle=str(pki.ca)))
            before, start = gateway.round_trips, time.perf_counter()
            runner.run("Get-MigrationEndpoint", {})
            print(
                f"open pool + first call: {gateway.round_trips - before} round trips, "
                f"{(time.perf_counter() - start) * 1000:.1f} ms"
            )

            before, start = gateway.round_trips, time.perf_counter()
            for _ in range(calls):
                batches = runner.run("Get-MigrationBatch", {})
            elapsed = time.perf_counter() - start
            print(
                f"{calls} x Get-MigrationBatch ({len(batches)} batches each): "
                f"{gateway.round_trips - before} round trips, {elapsed:.2f} s, "
                f"{elapsed / calls * 1000:.1f} ms per call"
            )

            csv = _csv(BATCHES - 1)
            before, start = gateway.round_trips, time.perf_counter()
            runner.run(
                "New-MigrationBatch",
                {"Name": f"Batch{BATCHES - 1:03d}", "SourceEndpoint": "StagedEndpoint", "CSVData": csv},
            )
            print(
                f"New-MigrationBatch, {MEMBERS}-row CSV ({len(csv) // 1024} KiB): "
                f"{gateway.round_trips - before} round trips, {(time.perf_counter() - start) * 1000:.1f} ms"
            )

            before, start = gateway.round_trips, time.perf_counter()
            users = runner.run("Get-MigrationUser", {})
            print(
                f"Get-MigrationUser -ResultSize Unlimited ({len(users)} users): "
                f"{gateway.round_trips - before} round trips, {time.perf_counter() - start:.2f} s"
            )
            runner.close()


if __name__ == "__main__":
    main()
