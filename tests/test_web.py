"""The live migration page and its JSON (controller/web), and the counts under it: fast, in-process, with
Starlette's TestClient on a state directory written by real passes over the simulators."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from controller.runtime import forecast, store
from controller.runtime.store import ProgressSample
from tests.support import webdemo
from tests.support.controller import PILOT, START, Workspace, desired_files, make_workspace


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path / "ws")


def _pass_after(workspace: Workspace, hours: float) -> None:
    with workspace.tenant() as tenant:
        tenant.advance(timedelta(hours=hours))
    workspace.run_pass()


def _batch(workspace: Workspace, name: str) -> dict[str, object]:
    rows = workspace.status()["batches"]
    assert isinstance(rows, list)
    return next(row for row in rows if row["name"] == name)


def test_a_completed_batch_counts_its_finalized_users_as_synced(workspace: Workspace) -> None:
    """Exchange counts completed (finalized) users apart from synced ones: a Completed batch reads
    SyncedCount 0, FinalizedCount 2; status shows 2/2, not 0/2."""
    workspace.run_pass()
    workspace.commit(desired_files(pilot="started"), message="Start the pilot")
    workspace.run_pass()
    _pass_after(workspace, 6)
    assert _batch(workspace, PILOT)["status"] == "Synced"
    workspace.commit(desired_files(pilot="completed"), message="Complete the pilot")
    workspace.run_pass()
    for _ in range(4):
        _pass_after(workspace, 6)
    [observed] = workspace.exchange().call("Get-MigrationBatch", {"Identity": PILOT})
    assert (observed["Status"], observed["SyncedCount"], observed["FinalizedCount"]) == ("Completed", 0, 2)
    pilot = _batch(workspace, PILOT)
    assert (pilot["status"], pilot["synced"], pilot["finalized"], pilot["total"]) == ("Completed", 2, 2, 2)
    text = workspace.stagectl("status", "--config", str(workspace.config_path)).stdout
    assert f"{PILOT:<24}completed  Completed" in text and "2/2" in text


# --- the progress samples and the forecast -------------------------------------------------------------


def _sample(hour: int, synced: int, *, total: int = 10, status: str = "Syncing") -> ProgressSample:
    return ProgressSample("wave", START + timedelta(hours=hour), status, synced, 0, total)


def test_the_eta_follows_the_throughput_of_the_last_day() -> None:
    """Hours 0 and 10 fall out of the 24 h window: 4 users in the 10 h from hour 30 to 40."""
    samples = [_sample(0, 0), _sample(10, 1), _sample(30, 2), _sample(40, 6)]
    found = forecast.batch("Wave", status="Syncing", synced=6, failed=1, total=10, samples=samples)
    assert (found.state, found.remaining, found.failed) == ("syncing", 3, 1)
    assert found.per_hour == pytest.approx(0.4)
    assert found.eta == START + timedelta(hours=47.5)


def test_no_eta_from_one_sample_a_stall_or_a_changed_member_count() -> None:
    one = forecast.batch("W", status="Syncing", synced=1, failed=0, total=10, samples=[_sample(0, 1)])
    assert (one.state, one.eta) == ("syncing", None) and "one pass" in one.basis
    stalled = forecast.batch(
        "W",
        status="Syncing",
        synced=4,
        failed=0,
        total=10,
        samples=[_sample(0, 2), _sample(30, 4), _sample(40, 4), _sample(50, 4)],
    )
    assert (stalled.state, stalled.eta) == ("stalled", None)
    assert "no user synced since 2026-11-25T16:00:00Z" in stalled.basis  # nothing in the last 24 h
    regrown = [_sample(0, 0, total=8), _sample(1, 4, total=8), _sample(2, 4)]  # members added at hour 2
    again = forecast.batch("W", status="Syncing", synced=4, failed=0, total=10, samples=regrown)
    assert (again.state, again.eta) == ("syncing", None)


def test_the_earliest_cutover_is_the_latest_gate_and_a_gate_time_cannot_open_decides() -> None:
    later = forecast.Gate(START + timedelta(hours=48), "ttl-lead", "TTL low")
    sooner = forecast.Gate(START + timedelta(hours=7), "batches-completed", "Wave synced by then")
    assert forecast.cutover([sooner, later], done=None).gate == "ttl-lead"
    waiting = forecast.Gate(None, "batches-completed", "Wave is stalled")
    decided = forecast.cutover([sooner, later, waiting], needs=["a fix"], done=None)
    assert (decided.earliest, decided.gate, decided.needs) == (None, "batches-completed", ("a fix",))


def test_a_database_of_schema_1_gains_the_progress_table(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / store.DATABASE_FILE) as old:
        old.execute("CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        old.execute("INSERT INTO settings VALUES ('pass', '7')")
        old.execute("PRAGMA user_version = 1")
    opened = store.Store.open(tmp_path)
    try:
        assert opened.next_pass() == 8  # what it held is kept
        opened.record_progress([_sample(0, 1), _sample(1, 2)])
        assert [s.synced for s in opened.progress(["WAVE"])["wave"]] == [1, 2]
    finally:
        opened.close()


def test_the_status_carries_the_timeline_and_the_forecast(tmp_path: Path) -> None:
    workspace = webdemo.half_way(tmp_path / "ws")
    data = workspace.status()
    wave = _batch(workspace, webdemo.WAVE)
    assert (wave["status"], wave["synced"], wave["failed"], wave["total"]) == ("Syncing", 4, 1, 12)
    assert wave["since"] == "2026-11-24T14:00:00Z"
    predicted = {row["name"]: row for row in data["forecast"]["batches"]}  # type: ignore[index]
    assert predicted[webdemo.WAVE]["eta"] is not None and predicted[webdemo.WAVE]["remaining"] == 7
    assert predicted[PILOT]["state"] == "completed"
    [mx] = data["cutover"]["records"]  # type: ignore[index]
    assert (mx["lowTtlSince"], mx["swapPossibleAt"]) == ("2026-11-24T11:00:00Z", "2026-11-26T11:00:00Z")
    cutover = data["forecast"]["cutover"]  # type: ignore[index]
    assert (cutover["earliest"], cutover["gate"]) == ("2026-11-26T11:00:00Z", "ttl-lead")
    assert cutover["needs"] == [f"{webdemo.WAVE}: 1 failed users need their fix, then a retry"]
    assert data["cutover"]["spf"][0]["phase"].startswith("coexistence")  # type: ignore[index]
