"""State faults under `stagectl run` (issue 14, item 5): the state database locked by another process,
the audit log cut short or edited. Each is one clear error, nothing sent, nothing silently lost."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from controller.runtime import audit
from controller.runtime.store import DATABASE_FILE
from tests.support.controller import Workspace, make_workspace

BOUND = 120.0


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    workspace = make_workspace(tmp_path / "ws")
    first = _run_once(workspace)  # the endpoint and the MX TTL: a state directory with history
    assert first.returncode == 0, first.stderr
    workspace.commit_desired(pilot="started", message="Start the pilot")
    return workspace


def _run_once(workspace: Workspace) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", "run", "--config", str(workspace.config_path), "--once"],
        env=workspace.process_env(),
        capture_output=True,
        text=True,
        timeout=BOUND,
        cwd=workspace.root,
    )


def _one_sentence(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.slow
def test_a_state_database_locked_by_another_process_is_a_clear_error_and_nothing_is_sent(
    workspace: Workspace,
) -> None:
    writes = workspace.writes()
    holder = sqlite3.connect(workspace.state_dir / DATABASE_FILE, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # a backup tool or an sqlite3 shell holding the write lock
    try:
        locked = _run_once(workspace)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert locked.returncode == 3, locked.stdout + locked.stderr
    assert "database is locked" in _one_sentence(locked.stderr)
    assert str(workspace.state_dir / DATABASE_FILE) in locked.stderr
    assert workspace.writes() == writes

    again = _run_once(workspace)  # the lock released: the pass runs as if nothing happened
    assert again.returncode == 0, again.stderr
    assert workspace.writes() - writes == {"New-MigrationBatch": 1}


def _edit_newest(text: str) -> str:
    *older, newest = text.splitlines(keepends=True)
    return "".join(older) + newest.replace('"result":"ok"', '"result":"OK"')


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda text: text[: len(text) - 40], "incomplete"),  # the last record torn
        (_edit_newest, "does not match the recorded head"),  # the newest record edited
        (lambda text: "".join(text.splitlines(keepends=True)[:-2]), "missing"),  # the newest records removed
    ],
    ids=["torn", "edited", "truncated"],
)
def test_a_damaged_audit_log_stops_the_controller_and_verify_names_the_first_bad_record(
    workspace: Workspace, damage: object, named: str
) -> None:
    path = audit.path_in(workspace.state_dir)
    path.write_text(damage(path.read_text(encoding="utf-8")), encoding="utf-8")  # type: ignore[operator]
    writes = workspace.writes()

    refused = _run_once(workspace)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    message = _one_sentence(refused.stderr)
    assert str(path) in message and "audit verify" in message
    assert workspace.writes() == writes  # no action without a trail to record it in

    verified = workspace.stagectl("audit", "verify", "--state", str(workspace.state_dir))
    assert verified.returncode == 1
    assert named in verified.stderr, verified.stderr


def test_an_older_record_edited_is_named_by_verify_though_the_controller_goes_on(
    workspace: Workspace,
) -> None:
    """The controller checks the newest record against the recorded head when it opens the log (a long log
    is not re-read at every start); `audit verify` walks the whole chain and names the edited record."""
    path = audit.path_in(workspace.state_dir)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace('"result":"ok"', '"result":"OK"', 1), encoding="utf-8")
    assert _run_once(workspace).returncode == 0
    verified = workspace.stagectl("audit", "verify", "--state", str(workspace.state_dir))
    assert verified.returncode == 1
    assert "record 2 was changed after it was written" in verified.stderr, verified.stderr
