"""Progress on long work (issue 15 item 4): a live panel on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from controller.commands import progress
from controller.model.actions import ExchangeAction
from controller.model.snapshot import ExchangeObserved, ObservedBatch, Snapshot
from controller.runtime.applier import Outcome
from tests.support.controller import PILOT, WAVE, make_workspace

NOW = datetime(2026, 11, 24, 9, tzinfo=UTC)
BOUND = 120.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_the_panel_shows_the_step_the_action_in_flight_and_each_batch() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=140, record=True)
    shown = progress.LiveProgress(console, echo=True)
    batches = [
        ObservedBatch(Identity="Batch1-IT", Status="Syncing", TotalCount=20, SyncedCount=12, FailedCount=1),
        ObservedBatch(Identity="Batch0-<b>[red]x[/red]", Status="Completed", TotalCount=4, FinalizedCount=4),
    ]
    shown.observed(Snapshot(observedAt=NOW, exchange=ExchangeObserved(batches=batches)))
    shown.planned(2)
    start = ExchangeAction("Start-MigrationBatch", (("Identity", "Batch1-IT"),), "batch/Batch1-IT", "")
    shown.acting(start)
    panel = _text(console, shown)
    assert "applying 1/2" in panel
    assert "sending batch/Batch1-IT" in panel
    assert re.search(r"Batch1-IT\s+Syncing\s+\S+\s+12/20\s+1", panel), panel
    # Finalized members count as arrived; a name is shown as written, never read as markup.
    assert re.search(r"Batch0-<b>\[red\]x\[/red\]\s+Completed\s+\S+\s+4/4", panel), panel

    shown.acted(Outcome(start, True, "ok", 0.1))
    shown.show(["pass at abc (Start): 1 applied"])
    shown.close()
    printed = console.export_text()
    assert "ok   batch/Batch1-IT" in printed and "pass at abc (Start): 1 applied" in printed


def _text(console: Console, shown: progress.LiveProgress) -> str:
    with console.capture() as captured:
        console.print(shown._render())
    return ANSI.sub("", captured.get())


def test_no_panel_off_a_terminal_or_when_refused() -> None:
    assert not progress.wanted(False, io.StringIO())
    with open(os.devnull, "w") as devnull:
        assert not progress.wanted(False, devnull)
    assert not progress.wanted(True, sys.stdout)


def _on_a_terminal(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run a command with a pseudo-terminal as its stdout; return its exit code and what it printed."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        args, stdout=follower, stderr=follower, stdin=subprocess.DEVNULL, env=env, cwd=cwd
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the follower closed: the process ended
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(leader)
    return process.wait(timeout=BOUND), ANSI.sub("", b"".join(chunks).decode(errors="replace"))


def test_apply_on_a_terminal_shows_the_panel_and_plain_lines_with_no_progress(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path / "ws", pilot="started", wave="started")
    command = [
        sys.executable, "-m", "controller", "apply", "--yes", "--repo", str(workspace.repo.path),
        "--config", str(workspace.config_path),
    ]  # fmt: skip
    env = {**workspace.process_env(), "COLUMNS": "160", "TERM": "xterm"}
    code, out = _on_a_terminal(command, env, workspace.root)
    assert code == 0, out
    assert "applying" in out and "actions" in out  # the live panel was drawn
    assert f"ok   batch/{PILOT}" in out and f"ok   batch/{WAVE}" in out

    workspace.commit_desired(pilot="stopped", wave="started", message="Stop the pilot")
    code, out = _on_a_terminal([*command, "--no-progress"], env, workspace.root)
    assert code == 0, out
    assert "applying" not in out  # no panel: plain lines only
    assert re.search(rf"^ok\s+batch/{PILOT}\s+Stop-MigrationBatch", out, re.M), out


def test_run_on_a_terminal_draws_the_panel_and_keeps_the_pass_lines(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path / "ws", pilot="started")
    command = [sys.executable, "-m", "controller", "run", "--config", str(workspace.config_path), "--once"]
    env = {**workspace.process_env(), "COLUMNS": "160", "TERM": "xterm"}
    code, out = _on_a_terminal(command, env, workspace.root)
    assert code == 0, out
    assert "waiting for the next pass" in out and "actions" in out  # the panel was drawn (its last frame)
    assert "pass at " in out and f"ok   batch/{PILOT}" in out  # the finished pass stays on screen

    plain = workspace.stagectl("run", "--config", str(workspace.config_path), "--once")  # a pipe: no panel
    assert plain.returncode == 0, plain.stderr
    assert "pass at " in plain.stdout and "waiting for the next pass" not in plain.stdout
