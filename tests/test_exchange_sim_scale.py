"""The simulator's work follows what is in motion, not the tenant: the engine, the counts, the owner index.

Asserted through what the code reports (batches and users an advance scanned, summaries computed, rows
written), never through time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.secrets import Credential
from controller.sim.exchange import engine
from controller.sim.exchange import state as s
from controller.sim.exchange.simulator import ExchangeSimulator
from controller.sim.exchange.store import SimRunner, SimStore

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
MEMBERS = 10


def address(batch: int, i: int) -> str:
    return f"user{batch}-{i}@contoso.com"


def csv(batch: int, count: int = MEMBERS) -> bytes:
    return ("EmailAddress\n" + "".join(f"{address(batch, i)}\n" for i in range(count))).encode()


def tenant(batches: int = 5) -> ExchangeSimulator:
    """B0 and B1 Completed, B2 Completing, B3 Syncing, B4 never started; 10 members each."""
    simulator = ExchangeSimulator(now=T0)
    for batch in range(batches + 1):
        for i in range(MEMBERS):
            simulator.add_recipient(address(batch, i))
    simulator.call(
        "New-MigrationEndpoint",
        {"ExchangeOutlookAnywhere": True, "Name": "EP", "Credentials": Credential("m", "pw"),
         "ExchangeServer": "mail.contoso.com", "RpcProxyServer": "mail.contoso.com",
         "MaxConcurrentMigrations": 100},
    )  # fmt: skip
    for batch in range(batches):
        simulator.call(
            "New-MigrationBatch", {"Name": f"B{batch}", "SourceEndpoint": "EP", "CSVData": csv(batch)}
        )
    for batch in range(3):
        simulator.call("Start-MigrationBatch", {"Identity": f"B{batch}"})
    simulator.advance(timedelta(hours=1))
    for batch in range(3):
        simulator.call("Complete-MigrationBatch", {"Identity": f"B{batch}"})
    simulator.advance(timedelta(hours=1))
    simulator.state.batches["b2"].phase = s.BatchPhase.COMPLETING  # as if its completion had just begun
    simulator.state.batches["b2"].transition_at = simulator.now + timedelta(minutes=10)
    simulator.call("Start-MigrationBatch", {"Identity": "B3"})
    return simulator


def statuses(simulator: ExchangeSimulator) -> dict[str, str | None]:
    return {name: simulator.batch_status(name) for name in ("B0", "B1", "B2", "B3", "B4")}


def test_an_advance_scans_only_the_users_of_batches_in_motion() -> None:
    simulator = tenant()
    assert statuses(simulator) == {"B0": "Completed", "B1": "Completed", "B2": "Completing",
                                   "B3": "Syncing", "B4": "Created"}  # fmt: skip
    advanced = engine.advance_to(simulator.state, simulator.now + timedelta(minutes=1))
    # B2 takes part for its pending event (the end of Completing) but has no user to scan.
    assert advanced.batches == ("b2", "b3") and advanced.users_scanned == MEMBERS  # B3's, all syncing
    advanced = engine.advance_to(simulator.state, simulator.now + timedelta(hours=1))
    assert statuses(simulator)["B2"] == "Completed" and statuses(simulator)["B3"] == "Synced"
    assert engine.advance_to(simulator.state, simulator.now + timedelta(days=1)) == engine.Advanced((), 0)


def test_a_batch_is_counted_again_only_when_its_users_change() -> None:
    simulator = tenant()
    simulator.call("Get-MigrationBatch", {})
    counted = {key: batch.users.recounts for key, batch in simulator.state.batches.items()}
    simulator.call("Get-MigrationBatch", {})
    simulator.advance(timedelta(minutes=30))  # B3's users finish their sync
    simulator.call("Get-MigrationBatch", {})
    again = {key: batch.users.recounts - counted[key] for key, batch in simulator.state.batches.items()}
    assert again["b0"] == again["b1"] == again["b4"] == 0
    assert again["b3"] >= 1
    [b3] = simulator.call("Get-MigrationBatch", {"Identity": "B3"})
    assert b3["SyncedCount"] == MEMBERS and b3["TotalCount"] == MEMBERS


def holders_by_scan(state: s.SimState) -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    for key, batch in state.batches.items():
        for member in batch.users:
            found[member] = (*found.get(member, ()), key)
    return found


def test_the_index_of_who_holds_an_address_follows_every_change() -> None:
    simulator = tenant()
    state = simulator.state
    simulator.call("New-MigrationBatch", {"Name": "Dup", "SourceEndpoint": "EP", "CSVData": csv(3, 3)})
    assert state.batches.holding(address(3, 0)) == ("b3", "dup")
    assert simulator.call("Get-MigrationUser", {"Identity": address(3, 0), "BatchId": "Dup"})[0][
        "ErrorSummary"
    ].startswith("Error: UserDuplicateInOtherBatchException")
    simulator.call("Set-MigrationBatch", {"Identity": "B4", "AddUsers": True, "CSVData": csv(5, 2)})
    simulator.call("Remove-MigrationUser", {"Identity": address(3, 0)})  # the real member goes first
    assert state.batches.holding(address(3, 0)) == ("dup",)
    assert s.user_owner(state, address(3, 0)) is None  # the duplicate left is no owner
    simulator.call("Start-MigrationBatch", {"Identity": "Dup"})  # now it is admitted: the real member
    assert s.user_owner(state, address(3, 0)) == "Dup"
    simulator.call("Remove-MigrationBatch", {"Identity": "B0"})
    simulator.advance(timedelta(hours=1))
    assert "b0" not in state.batches
    assert {k: tuple(sorted(v)) for k, v in state.batches.holders.items()} == {
        k: tuple(sorted(v)) for k, v in holders_by_scan(state).items()
    }


def test_a_deep_copy_is_a_tenant_of_its_own() -> None:
    simulator = tenant()
    saved = simulator.state.model_copy(deep=True)
    simulator.advance(timedelta(days=1))
    simulator.call("Remove-MigrationUser", {"Identity": address(4, 0)})
    assert saved.batches["b3"].users[address(3, 0)].status != s.UserStatus.SYNCED
    assert saved.batches.holding(address(4, 0)) == ("b4",)
    assert saved.batches["b4"].users.batches is saved.batches
    simulator.state = saved
    assert simulator.batch_status("B3") == "Syncing"
    simulator.advance(timedelta(days=1))
    assert simulator.batch_status("B3") == "Synced"
    assert ExchangeSimulator.from_json(simulator.to_json()).to_json() == simulator.to_json()


def test_a_call_on_one_batch_writes_that_batchs_rows_only(tmp_path: Path) -> None:
    path = tmp_path / "exchange.sqlite"
    SimStore(path).create(tenant())
    runner = SimRunner(path)
    assert len(runner.run("Get-MigrationUser", {"BatchId": "B1", "ResultSize": "Unlimited"})) == MEMBERS
    assert runner.store.rows_written == 1
    runner.run("Remove-MigrationBatch", {"Identity": "B0", "Confirm": False})
    assert runner.store.rows_written == MEMBERS + 1 + 1  # its users Removing, its row, the tenant
    store = SimStore(path)
    with store.transaction() as simulator:
        simulator.advance(timedelta(minutes=11))  # B0 goes, B2 settles Completed; B3's syncs go on
    assert simulator.batch_status("B2") == "Completed" and simulator.batch_status("B3") == "Syncing"
    assert (
        store.rows_written == (MEMBERS + 1 + 1) + 1 + 1
    )  # B0's rows and a note it went; B2's row; the clock
    runner.run("New-MigrationBatch", {"Name": "B5", "SourceEndpoint": "EP", "CSVData": csv(5)})
    assert runner.store.rows_written == MEMBERS + 1 + 1
