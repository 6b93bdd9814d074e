"""Benchmark: milliseconds per simulator call through `SimRunner` at 100 batches x 2,000 members.

Run: `.venv/bin/python -m bench.sim_store [RUNS]` (RUNS: 5 by default, at most 5; about 40 s). The
tenant: 202,000 mail users, 100 batches of 2,000 members, 90 of them Completed and 10 Syncing. Each call
is timed on its own, RUNS times, after an untimed call that prepares it where one is needed (a batch to
start, to complete, room for a new batch); it prints min and median milliseconds per call, the rows the
call wrote, and the first call of a new process.

Before (the JSON store: every call parsed and rewrote the whole tenant under a file lock), measured with
this benchmark, 2 runs, min / median ms:

    first call in a new process                       5159
    Get-MigrationBatch (100 batches)                  4513 / 5238
    Get-MigrationUser -BatchId (2,000 rows)           4978 / 5690
    Get-Recipient -Identity                           4667 / 5010
    Get-Recipient -Filter (one address)               4139 / 4871
    Set-MigrationBatch -NotificationEmails            4998 / 5180
    advance 10 minutes (a transaction)                5075 / 5229
    Start-MigrationBatch (2,000 members)              4198 / 4722
    Complete-MigrationBatch (2,000 members)           3819 / 4945
    New-MigrationBatch (2,000-row CSV)                3794 / 4543

After (the SQLite store, rows read as calls need them and only changed rows written), 5 runs, same
machine (2 cores shared with other work: runs differ by up to 2x), min / median ms:

    first call in a new process                          7
    Get-MigrationBatch (100 batches)                   1.3 / 1.5     (1 row written: the call count)
    Get-MigrationUser -BatchId (2,000 rows)            2.1 / 2.3
    Get-Recipient -Identity                            0.5 / 0.7
    Get-Recipient -Filter (one address)                0.6 / 0.7
    Set-MigrationBatch -NotificationEmails            12.3 / 13.5    (2 rows)
    advance 10 minutes (a transaction)                12.4 / 14.5    (62 rows)
    Start-MigrationBatch (2,000 members)              49.8 / 50.5    (2,002 rows)
    Complete-MigrationBatch (2,000 members)           18.4 / 23.9    (2,002 rows)
    New-MigrationBatch (2,000-row CSV)                59.3 / 71.7    (2,002 rows)

The calls that move users (Set-, Start-MigrationBatch, an advance) cost what the 10 Syncing batches'
20,000 queued and syncing users cost the engine; the Completed batches cost nothing. Reading every row
(`SimStore.load()`, as `stagectl sim export` does) takes 2.5 to 5 s.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.secrets import Credential
from controller.sim.exchange import state as s
from controller.sim.exchange.simulator import ExchangeSimulator
from controller.sim.exchange.store import SimRunner, SimStore

BATCHES = 100
MEMBERS = 2000
COMPLETED = 90
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
SYNCING = [f"Batch{b:03d}" for b in range(COMPLETED, BATCHES)]


def _address(batch: int, i: int) -> str:
    return f"user{batch:03d}-{i:04d}@contoso.com"


def _csv(batch: int) -> bytes:
    return ("EmailAddress\r\n" + "".join(f"{_address(batch, i)}\r\n" for i in range(MEMBERS))).encode()


def _tenant(path: Path) -> None:
    """The batches are created by the simulator's cmdlets; 90 are then set Completed by hand, as if their
    migration had run (running 180,000 syncs through the engine would take the benchmark's whole budget)."""
    simulator = ExchangeSimulator(now=T0)
    for batch in range(BATCHES + 1):  # and the mail users of one more batch, for New-MigrationBatch
        for i in range(MEMBERS):
            simulator.add_recipient(_address(batch, i))
    simulator.call(
        "New-MigrationEndpoint",
        {
            "ExchangeOutlookAnywhere": True,
            "Name": "StagedEndpoint",
            "Credentials": Credential("CONTOSO\\migrator", "pw"),
            "ExchangeServer": "mail.contoso.com",
            "RpcProxyServer": "mail.contoso.com",
        },
    )
    for batch in range(BATCHES):
        simulator.call(
            "New-MigrationBatch",
            {"Name": f"Batch{batch:03d}", "SourceEndpoint": "StagedEndpoint", "CSVData": _csv(batch)},
        )
    for batch in range(COMPLETED):
        finished = simulator.state.batches[f"batch{batch:03d}"]
        finished.phase = s.BatchPhase.COMPLETED
        for address, user in finished.users.items():
            user.status, user.last_sync = s.UserStatus.COMPLETED, T0
            simulator.state.recipients[address].type = s.RecipientType.USER_MAILBOX
    for name in SYNCING:
        simulator.call("Start-MigrationBatch", {"Identity": name})
    simulator.advance(timedelta(minutes=30))
    SimStore(path).create(simulator)


def _synced(store: SimStore, name: str) -> None:
    """Make a Syncing batch Synced, as if its members had finished their initial sync."""
    with store.transaction() as simulator:
        batch = simulator.state.batches[name.lower()]
        batch.phase = s.BatchPhase.RUNNING
        for user in batch.users.values():
            user.status, user.due, user.last_sync = s.UserStatus.SYNCED, None, simulator.now


def _advance(store: SimStore, delta: timedelta) -> None:
    with store.transaction() as simulator:
        simulator.advance(delta)


def _after(store: SimStore, _: object, *, minutes: int) -> None:
    """A call (made as the argument), then the clock moved on so that its batch settles."""
    _advance(store, timedelta(minutes=minutes))


class Bench:
    """Times calls through one `SimRunner`, as the PSRP gateway makes them, after one untimed first call."""

    def __init__(self, path: Path, runs: int) -> None:
        self.runs = runs
        self.runner = SimRunner(path)
        self.store = SimStore(path)  # for the transactions that are not cmdlets
        self.runner.run("Get-MigrationEndpoint", {})  # this process reads the tenant once, untimed

    def call(self, cmdlet: str, parameters: Mapping[str, object]) -> Callable[[int], object]:
        return lambda _: self.runner.run(cmdlet, parameters)

    def time(
        self,
        label: str,
        timed: Callable[[int], object],
        prepare: Callable[[int], object] | None = None,
        *,
        store: SimStore | None = None,
    ) -> None:
        seconds: list[float] = []
        for run in range(self.runs):
            if prepare is not None:
                prepare(run)
            start = time.perf_counter()
            timed(run)
            seconds.append(time.perf_counter() - start)
        low, middle = min(seconds) * 1000, statistics.median(seconds) * 1000
        rows = (store or self.runner.store).rows_written
        print(f"{label:<56} min {low:7.1f} ms  median {middle:7.1f} ms  {rows:5d} rows written", flush=True)


def _first_call_in_a_new_process(path: Path) -> float:
    code = (
        "import sys, time\n"
        "from controller.sim.exchange.store import SimRunner\n"
        "start = time.perf_counter()\n"
        "SimRunner(sys.argv[1]).run('Get-MigrationBatch', {})\n"
        "print(time.perf_counter() - start)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True, cwd=Path.cwd()
    )
    return float(done.stdout.strip())


def main() -> None:
    runs = min(int(sys.argv[1]) if len(sys.argv) > 1 else 5, 5)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "exchange.sqlite"
        start = time.perf_counter()
        _tenant(path)
        print(
            f"tenant: {BATCHES} batches x {MEMBERS} members ({COMPLETED} Completed, {BATCHES - COMPLETED} "
            f"Syncing), {(BATCHES + 1) * MEMBERS} mail users; built and stored in "
            f"{time.perf_counter() - start:.1f} s",
            flush=True,
        )
        first = _first_call_in_a_new_process(path) * 1000
        print(f"first call in a new process (Get-MigrationBatch): {first:.0f} ms", flush=True)
        start = time.perf_counter()
        SimStore(path).load()
        whole = time.perf_counter() - start
        print(
            f"SimStore.load(), every row (what `stagectl sim export` reads): {whole * 1000:.0f} ms",
            flush=True,
        )
        bench = Bench(path, runs)
        run, store = bench.runner.run, bench.store
        bench.time("Get-MigrationBatch (100 batches)", bench.call("Get-MigrationBatch", {}))
        bench.time(
            "Get-MigrationUser -BatchId (2,000 rows)",
            bench.call("Get-MigrationUser", {"BatchId": SYNCING[-2], "ResultSize": "Unlimited"}),
        )
        bench.time("Get-Recipient -Identity", bench.call("Get-Recipient", {"Identity": _address(7, 7)}))
        bench.time(
            "Get-Recipient -Filter (one address)",
            bench.call("Get-Recipient", {"Filter": f"(PrimarySmtpAddress -eq '{_address(8, 8)}')"}),
        )
        bench.time(
            "Set-MigrationBatch -NotificationEmails (Syncing batch)",
            lambda i: run(
                "Set-MigrationBatch", {"Identity": SYNCING[-2], "NotificationEmails": [f"a{i}@x.com"]}
            ),
        )
        bench.time(
            "advance 10 minutes (a transaction; 10 batches Syncing)",
            lambda _: _advance(store, timedelta(minutes=10)),
            store=store,
        )
        bench.time(
            "Start-MigrationBatch (Stopped batch, 2,000 members)",
            bench.call("Start-MigrationBatch", {"Identity": SYNCING[-1]}),
            prepare=lambda _: _after(store, run("Stop-MigrationBatch", {"Identity": SYNCING[-1]}), minutes=2),
        )
        bench.time(
            "Complete-MigrationBatch (Synced batch, 2,000 members)",
            lambda i: run("Complete-MigrationBatch", {"Identity": SYNCING[i]}),
            prepare=lambda i: _synced(store, SYNCING[i]),
        )
        bench.time(
            "New-MigrationBatch (2,000-row CSV)",
            lambda _: run(
                "New-MigrationBatch",
                {"Name": "BatchNew", "SourceEndpoint": "StagedEndpoint", "CSVData": _csv(BATCHES)},
            ),
            prepare=lambda i: _after(
                store,
                run(
                    "Remove-MigrationBatch",
                    {"Identity": "Batch000" if i == 0 else "BatchNew", "Confirm": False},
                ),
                minutes=10,
            ),
        )
        bench.runner.close()


if __name__ == "__main__":
    main()
