"""The simulator's JSON store: persistence across runners and processes, locking, SimRunner semantics."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.exchange.errors import CmdletError, PermanentError, ThrottledError
from controller.secrets import Credential
from controller.sim.exchange.simulator import ExchangeSimulator
from controller.sim.exchange.store import SimRunner, SimStore

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
ENDPOINT = {
    "ExchangeOutlookAnywhere": True,
    "Name": "StagedEndpoint",
    "Credentials": Credential("migrator", "s3cret-pw"),
    "ExchangeServer": "mail.contoso.com",
    "RpcProxyServer": "mail.contoso.com",
}


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "exchange.json"
    simulator = ExchangeSimulator(now=T0)
    simulator.add_recipient("alice@contoso.com")
    SimStore(path).create(simulator)
    return path


def test_round_trip_across_runners(state: Path) -> None:
    SimRunner(state).run("New-MigrationEndpoint", ENDPOINT)
    SimRunner(state).run(
        "New-MigrationBatch",
        {
            "Name": "B1",
            "SourceEndpoint": "StagedEndpoint",
            "CSVData": b"EmailAddress\nalice@contoso.com\n",
            "AutoStart": True,
            "StartAfter": T0 - timedelta(hours=1),
        },
    )
    with SimStore(state).transaction() as simulator:
        simulator.advance(timedelta(hours=1))
    [batch] = SimRunner(state).run("Get-MigrationBatch", {"ResultSize": "Unlimited"})
    assert batch["Status"] == "Synced" and batch["StartAfterUTC"] == T0 - timedelta(hours=1)
    assert SimStore(state).now() == T0 + timedelta(hours=1)
    assert "s3cret-pw" not in state.read_text()
    reloaded = ExchangeSimulator.from_json(state.read_bytes())
    assert reloaded.to_json() == ExchangeSimulator.from_json(reloaded.to_json()).to_json()
    assert reloaded.calls("Get-MigrationBatch") == 1 and reloaded.calls() == 3


def test_refused_call_is_counted_and_changes_nothing(state: Path) -> None:
    runner = SimRunner(state)
    runner.run("New-MigrationEndpoint", ENDPOINT)
    before = ExchangeSimulator.from_json(state.read_bytes()).state.endpoints
    with pytest.raises(CmdletError):
        runner.run("Set-MigrationEndpoint", {"Identity": "StagedEndpoint", "MaxConcurrentMigrations": 0})
    after = ExchangeSimulator.from_json(state.read_bytes())
    assert after.state.endpoints == before
    assert after.calls("Set-MigrationEndpoint") == 1


def test_throttle_and_latency_persist(state: Path) -> None:
    with SimStore(state).transaction() as simulator:
        simulator.throttle("Get-MigrationBatch", 1)
        simulator.set_latency(0.25)
    slept: list[float] = []
    runner = SimRunner(state, sleep=slept.append)
    with pytest.raises(ThrottledError):
        runner.run("Get-MigrationBatch", {})
    assert runner.run("Get-MigrationBatch", {}) == []
    assert slept == [0.25, 0.25]


def test_unexpected_exception_discards_changes(state: Path) -> None:
    with pytest.raises(RuntimeError), SimStore(state).transaction() as simulator:
        simulator.advance(timedelta(days=1))
        raise RuntimeError("boom")
    assert SimStore(state).now() == T0


def test_missing_state_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="stagectl sim init"):
        SimRunner(tmp_path / "absent.json").run("Get-MigrationBatch", {})


def test_concurrent_transactions_lose_no_update(state: Path) -> None:
    def worker(prefix: str) -> None:
        runner = SimRunner(state)  # its own file handles: the lock is what serialises the threads
        for i in range(25):
            with SimStore(state).transaction() as simulator:
                simulator.add_recipient(f"{prefix}{i}@contoso.com")
            runner.run("Get-MigrationBatch", {})

    threads = [threading.Thread(target=worker, args=(prefix,)) for prefix in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    simulator = ExchangeSimulator.from_json(state.read_bytes())
    assert simulator.calls("Get-MigrationBatch") == 50
    assert len(simulator.state.recipients) == 51
