"""The live migration page and its JSON (controller/web), and the counts under it: fast, in-process, with
Starlette's TestClient on a state directory written by real passes over the simulators."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.support.controller import PILOT, Workspace, desired_files, make_workspace


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
