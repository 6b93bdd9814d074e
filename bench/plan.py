"""Benchmark the planner: plan time at full scale, and the cmdlet calls the example needs to converge.

Run: `.venv/bin/python -m bench.plan`.

1. `plan()` on 100 batches x 2,000 members (200,000) and 50 RRsets against a snapshot where every batch
   is observed Syncing or Synced with all its users and every RRset exists: median of several runs.
2. The example `desired/` taken through completion and the DNS cutover on the simulators, with the
   states changed phase by phase as an administrator would commit them: cmdlet calls split into reads
   and writes, against the minimum number of distinct changes, plus DNS messages.
"""

from __future__ import annotations

import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.desired import loader
from controller.desired.models import (
    Batch,
    BatchState,
    DesiredState,
    Endpoint,
    Member,
    MigrationSpec,
    Record,
    RecordType,
    Zone,
)
from controller.exchange.client import ExchangeClient
from controller.model.actions import DnsAction, ExchangeAction
from controller.model.snapshot import (
    ExchangeObserved,
    Memory,
    ObservedBatch,
    ObservedEndpoint,
    ObservedUser,
    RRset,
    Snapshot,
)
from controller.planner.plan import plan
from controller.runtime.applier import apply_plan
from controller.runtime.observe import observe
from controller.sim.dns import DnsSimBackend
from controller.sim.exchange.simulator import ExchangeSimulator, LocalRunner

BATCHES = 100
MEMBERS = 2000
ZONES = 5
RRSETS_PER_ZONE = 10
RUNS = 7
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
EXAMPLE = Path(__file__).resolve().parent.parent / "desired"
STEP = timedelta(hours=2)  # simulated time between two passes
MAX_PASSES = 500


# --- 1. plan time at scale -------------------------------------------------------------------------


def large_desired() -> DesiredState:
    migration = MigrationSpec(
        endpoint=Endpoint(
            name="StagedEndpoint",
            exchange_server="mail.contoso.com",
            rpc_proxy_server="mail.contoso.com",
            email_address="migration.admin@contoso.com",
            credentials_ref="env:ONPREM_MIGRATION_CREDENTIALS",
        ),
        notification_emails=["migration-team@contoso.com"],
    )
    batches = tuple(
        Batch(
            name=f"Wave-{b:03}",
            state=BatchState.STARTED if b % 2 else BatchState.COMPLETED,
            members=tuple(Member(f"User{b:03}.Member{m:04}@contoso.com") for m in range(MEMBERS)),
        )
        for b in range(BATCHES)
    )
    zones = []
    for z in range(ZONES):
        name = "contoso.com" if z == 0 else f"contoso{z}.com"
        records = [Record(name, f"host{r:02}", RecordType.A, 3600, (f"203.0.113.{r}",)) for r in range(8)]
        records.append(
            Record(
                name,
                "@",
                RecordType.MX,
                3600,
                (f"0 {name.replace('.', '-')}.mail.protection.outlook.com.",),
                cutover=True,
            )
        )
        records.append(
            Record(name, "@", RecordType.TXT, 3600, spf="v=spf1 include:spf.protection.outlook.com -all")
        )
        zones.append(Zone(name, tuple(records)))
    return DesiredState(
        migration=migration, name="contoso", batches=batches, zones=tuple(zones), revision="bench"
    )


def large_snapshot(desired: DesiredState) -> Snapshot:
    """Batches Syncing (odd) or Synced (even) with all their users; every RRset observed, MX TTL low."""
    batches, users = [], []
    for index, batch in enumerate(desired.batches):
        syncing = index % 2 == 1
        synced = MEMBERS // 2 if syncing else MEMBERS
        batches.append(
            ObservedBatch(
                Identity=batch.name,
                Status="Syncing" if syncing else "Synced",
                TotalCount=MEMBERS,
                SyncedCount=synced,
                NotificationEmails=["migration-team@contoso.com"],
            )
        )
        users += [
            ObservedUser(Identity=m.address, BatchId=batch.name, Status="Synced" if i < synced else "Syncing")
            for i, m in enumerate(batch.members)
        ]
    dns: dict[str, list[RRset] | None] = {}
    for zone in desired.zones:
        dns[zone.name] = [
            RRset(
                name=r.name,
                type=r.type.value,
                ttl=300 if r.cutover else r.ttl,
                values=["10 mail.contoso.com."],
            )
            if r.cutover
            else RRset(name=r.name, type="TXT", ttl=r.ttl, values=["v=spf1 mx -all", "MS=ms1234"])
            if r.spf
            else RRset(name=r.name, type=r.type.value, ttl=r.ttl, values=list(r.values))
            for r in zone.records
        ]
    mail_users = [m.address.lower() for batch in desired.batches for m in batch.members]
    return Snapshot(
        observedAt=NOW,
        exchange=ExchangeObserved(
            endpoints=[
                ObservedEndpoint(
                    Identity="StagedEndpoint",
                    ExchangeServer="mail.contoso.com",
                    RpcProxyServer="mail.contoso.com",
                    Authentication="Basic",
                    MaxConcurrentMigrations=20,
                )
            ],
            batches=batches,
            users=users,
            mailUsers=mail_users,
        ),
        dns=dns,
        memory=Memory(lowTtlSince={f"{z.name}/@/MX": NOW - timedelta(hours=1) for z in desired.zones}),
    )


def bench_plan_time() -> None:
    desired = large_desired()
    snapshot = large_snapshot(desired)
    members = sum(len(b.members) for b in desired.batches)
    times = []
    for _ in range(RUNS):
        # A pass plans a snapshot once: a fresh users list each run, so nothing indexed by the last
        # run's plan is reused.
        users = list(snapshot.exchange.users or [])
        fresh = snapshot.model_copy(
            update={"exchange": snapshot.exchange.model_copy(update={"users": users})}
        )
        started = time.perf_counter()
        result = plan(desired, fresh, NOW)
        times.append(time.perf_counter() - started)
    kinds = Counter(a.cmdlet if isinstance(a, ExchangeAction) else f"dns {a.kind}" for a in result.actions)
    print(
        f"plan: {len(desired.batches)} batches, {members:,} members, {len(desired.records)} RRsets: "
        f"median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f}, "
        f"{RUNS} runs; target < 0.5 s)"
    )
    print(f"  plan: {dict(kinds)} actions, {len(result.waiting)} waiting, {len(result.blocked)} blocked")


# --- 2. calls to converge the example --------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """A commit of the administrator: new states, made once `ready` holds on the simulator."""

    name: str
    states: dict[str, str]
    ready: Callable[[ExchangeSimulator], bool]


def _synced(*names: str) -> Callable[[ExchangeSimulator], bool]:
    return lambda sim: all(sim.batch_status(n) in ("Synced", "SyncedWithErrors") for n in names)


PHASES = (
    Phase("the example as committed (Batch0, Batch1 started)", {}, lambda sim: True),
    Phase(
        "Batch0 completed; Batch2, Batch3 started",
        {"Batch0-IT": "completed", "Batch2-Sales": "started", "Batch3-Finance": "started"},
        _synced("Batch0-IT"),
    ),
    Phase(
        "Batch1, Batch2, Batch3 completed",
        {"Batch1-EarlyAdopters": "completed", "Batch2-Sales": "completed", "Batch3-Finance": "completed"},
        _synced("Batch1-EarlyAdopters", "Batch2-Sales", "Batch3-Finance"),
    ),
)


def _set_states(directory: Path, states: dict[str, str]) -> None:
    for path in (directory / "batches").glob("*.yaml"):
        text = path.read_text()
        name = re.search(r"^  name: (\S+)$", text, re.MULTILINE)
        if name and name.group(1) in states:
            path.write_text(
                re.sub(r"^  state: \w+$", f"  state: {states[name.group(1)]}", text, flags=re.MULTILINE)
            )


def _minimum(desired: DesiredState, dns_start: dict[tuple[str, str], RRset]) -> tuple[int, int]:
    """Distinct changes no controller can avoid: Exchange writes and DNS changes."""
    exchange = 1 + 2 * len(desired.batches)  # the endpoint; per batch New -AutoStart and Complete
    changes = 0
    for record in desired.records:
        found = dns_start.get((record.name, record.type.value))
        if found is None:
            changes += 1
        elif record.cutover:
            # contract §4: the TTL is lowered first, the values swap at the low TTL once the old TTL has
            # expired, and the desired TTL follows after the rollback window.
            low = found.ttl > desired.policy.low_ttl
            swap = sorted(found.values) != sorted(record.values)
            changes += low + swap + (swap and record.ttl > desired.policy.low_ttl)
        elif record.spf is not None:
            # contract §4, SPF phases: the coexistence string from the first started batch, the final
            # string with the MX swap.
            changes += 2 * (record.spf not in found.values)
        else:
            changes += (found.ttl, sorted(found.values)) != (record.ttl, sorted(record.values))
    return exchange, changes


def bench_example_calls() -> None:
    with tempfile.TemporaryDirectory(prefix="stagectl-bench-plan-") as temp:
        work = Path(temp) / "desired"
        shutil.copytree(EXAMPLE, work)
        simulator = ExchangeSimulator(now=NOW)
        desired = loader.load_directory(work, revision="r0")
        for batch in desired.batches:
            for member in batch.members:
                simulator.add_recipient(member.address)
        dns = DnsSimBackend(Path(temp) / "dns.json")
        start = [
            RRset(name="@", type="MX", ttl=3600, values=["10 mail.contoso.com."]),
            RRset(name="autodiscover", type="CNAME", ttl=3600, values=["mail.contoso.com."]),
            RRset(name="@", type="TXT", ttl=3600, values=["v=spf1 mx -all", "MS=ms12345678"]),
        ]
        dns.seed_zone("contoso.com", start)
        client = ExchangeClient(
            LocalRunner(simulator),
            resolve_secret=lambda ref: "CONTOSO\\migrator:secret",
            sleep=lambda s: None,
        )
        memory = Memory()
        writes: Counter[str] = Counter()
        dns_changes: Counter[str] = Counter()
        passes = active = 0
        phases = list(PHASES)
        while True:
            if passes >= MAX_PASSES:
                raise SystemExit(f"the example did not converge in {MAX_PASSES} passes")
            if phases and phases[0].ready(simulator):
                phase = phases.pop(0)
                _set_states(work, phase.states)
                desired = loader.load_directory(work, revision=f"r{len(PHASES) - len(phases)}")
            passes += 1
            snapshot, _ = observe(desired, exchange=client, dns=dns, memory=memory, now=simulator.now)
            result = plan(desired, snapshot, simulator.now)
            report = apply_plan(result, exchange=client, dns=dns)
            if report.failed is not None:
                raise SystemExit(f"pass {passes}: {report.failed}")
            memory = report.memory
            active += bool(report.outcomes)
            for outcome in report.outcomes:
                action = outcome.action
                if isinstance(action, ExchangeAction):
                    writes[action.cmdlet] += 1
                elif isinstance(action, DnsAction):
                    dns_changes[f"{action.object} ({action.kind})"] += 1
            if (
                not phases
                and not result.actions
                and not result.waiting
                and memory.cutoverAt is not None
                and not result.blocked
            ):
                break
            simulator.advance(STEP)
        reads = {c: n for c, n in simulator.state.calls.items() if c.startswith("Get-")}
        write_total = sum(n for c, n in simulator.state.calls.items() if not c.startswith("Get-"))
        minimum_exchange, minimum_dns = _minimum(desired, {(r.name, r.type): r for r in start})
        print(
            f"example through completion and cutover: {passes} passes {STEP} of simulated time apart "
            f"({active} of them applied something)"
        )
        print(
            f"  Exchange writes: {write_total} (minimum {minimum_exchange}): {dict(sorted(writes.items()))}"
        )
        print(
            f"  Exchange reads: {sum(reads.values())} = {len(reads)} per pass x {passes}: "
            f"{dict(sorted(reads.items()))}"
        )
        print(
            f"  DNS changes: {sum(dns_changes.values())} (minimum {minimum_dns}): "
            f"{dict(sorted(dns_changes.items()))}"
        )
        print(f"  DNS messages: {dns.messages.queries} queries, {dns.messages.updates} updates")


def main() -> None:
    bench_plan_time()
    bench_example_calls()
    print(f"Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
