"""`stagectl run` as a process: SIGKILL between two actions, SIGTERM during an action or between passes,
and two instances on one state directory."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controller.runtime.lock import LOCK_FILE
from controller.runtime.store import Store
from tests.support.controller import PILOT, WAVE, Workspace, make_workspace

LATENCY = 1.0  # real seconds the simulator sleeps after each cmdlet: the controller is slow between actions
BOUND = 120.0  # an upper bound for a stuck process, never an expectation about speed
POLL = 0.01

# Both batches started from the first commit: one pass issues three cmdlets and one DNS change.
MINIMUM = Counter({"New-MigrationEndpoint": 1, "New-MigrationBatch": 2})


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path / "ws", pilot="started", wave="started")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:  # only the processes this test started, and only if a failure left them
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=BOUND)


def wait_until(condition: Callable[[], bool], process: subprocess.Popen[str], what: str) -> None:
    """Poll until `condition` holds; fail at once if the process ended first."""
    deadline = time.monotonic() + BOUND
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"stagectl exited ({process.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {BOUND}s")
        time.sleep(POLL)


def slow(workspace: Workspace, seconds: float) -> None:
    with workspace.tenant() as tenant:
        tenant.set_latency(seconds)


def run(workspace: Workspace, processes: list[subprocess.Popen[str]], *extra: str) -> subprocess.Popen[str]:
    process = workspace.start("run", "--config", str(workspace.config_path), *extra)
    processes.append(process)
    return process


def unfinished(workspace: Workspace) -> list[str]:
    store = Store.open(workspace.state_dir)
    try:
        return [record.action_key for record in store.unfinished_actions()]
    finally:
        store.close()


def test_sigkill_between_two_actions_then_the_next_run_converges_without_repeating_one(
    workspace: Workspace, processes: list[subprocess.Popen[str]]
) -> None:
    slow(workspace, LATENCY)
    killed = run(workspace, processes, "--once")
    wait_until(lambda: len(workspace.audit_records()) >= 1, killed, "the first audit record")
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=BOUND)
    assert killed.returncode == -signal.SIGKILL

    issued = workspace.writes()
    audited_by_killed = workspace.audit_records()
    assert sum(issued.values()) < sum(MINIMUM.values()), "the pass was meant to be cut short"
    # The endpoint, then perhaps the coexistence SPF string (DNS is fast), before the slow batch was cut.
    cmdlets = [r["action"].get("cmdlet") for r in audited_by_killed]  # type: ignore[union-attr]
    assert [c for c in cmdlets if c is not None] == ["New-MigrationEndpoint"]

    slow(workspace, 0)
    again = workspace.stagectl("run", "--config", str(workspace.config_path), "--once", timeout=BOUND)
    assert again.returncode == 0, again.stderr

    assert workspace.writes() == MINIMUM  # every cmdlet issued exactly once across the two runs
    with workspace.tenant() as tenant:
        assert tenant.batch_status(PILOT) == "Syncing"
        assert tenant.batch_status(WAVE) == "Syncing"
    assert unfinished(workspace) == []
    # Per object, the audit trail holds each intent, then its result ("ok"), or, when the kill took the
    # action in flight, a settlement by the next run's observation: applied (sent, its effect found) or
    # not applied (killed before it was sent: then sent once by the plan, "ok").
    trail: dict[str, list[str]] = {}
    for record in workspace.audit_records(phase=None):
        outcome = str(record["result"]).removeprefix("settled: ").split(":")[0]
        trail.setdefault(str(record["action"]["object"]), []).append(f"{record['phase']} {outcome}")  # type: ignore[index]
    assert trail.pop("endpoint/StagedEndpoint") == ["intent sending", "result ok"]
    assert trail.pop("dns/contoso.com/@/MX") == ["intent sending", "result ok"]
    spf = trail.pop("dns/contoso.com/@/TXT", [])
    assert set(trail) == {f"batch/{PILOT}", f"batch/{WAVE}"}
    done = ["intent sending", "result ok"]
    interrupted = (
        ["intent sending", "settled applied"],
        ["intent sending", "settled not applied", *done],
        ["settled not applied", *done],  # killed between the journal's intent and the audit's
    )
    assert all(t == done or t in interrupted for t in trail.values()), trail
    assert spf in ([], done, *interrupted), spf
    assert sum(t in interrupted for t in (*trail.values(), spf)) <= 1, (trail, spf)
    # What the killed run changed is the controller's own doing, not drift.
    assert "drift " not in again.stdout
    assert workspace.status()["drift"] == []
    verified = workspace.stagectl("audit", "verify", "--state", str(workspace.state_dir))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # The MX TTL, last in the plan, was lowered once, by the next run.
    [mx] = [r for r in workspace.dns().rrsets("contoso.com") or [] if r.type == "MX"]
    assert mx.ttl == 300
    [txt] = [r for r in workspace.dns().rrsets("contoso.com") or [] if r.type == "TXT" and r.name == "@"]
    [spf] = [v for v in txt.values if v.startswith("v=spf1")]
    assert spf.count("include:spf.protection.outlook.com") == 1


def test_sigterm_during_an_action_lets_it_finish_and_exits_0(
    workspace: Workspace, processes: list[subprocess.Popen[str]]
) -> None:
    slow(workspace, LATENCY)
    process = run(workspace, processes)  # the loop, not --once
    wait_until(lambda: len(workspace.audit_records()) >= 1, process, "the first audit record")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=BOUND)
    assert process.returncode == 0, err

    # The action in flight finished and was recorded; nothing was abandoned half-way or started after.
    assert unfinished(workspace) == []
    issued = workspace.writes()
    records = workspace.audit_records()
    cmdlets = [r for r in records if "cmdlet" in r["action"]]  # type: ignore[operator]
    assert sum(issued.values()) == len(cmdlets)  # DNS changes (the coexistence SPF) are audited too
    assert all(r["result"] == "ok" for r in records)
    assert sum(issued.values()) < sum(MINIMUM.values()), "the stop was meant to leave work for later"
    assert "pass at" in out

    slow(workspace, 0)
    again = workspace.stagectl("run", "--config", str(workspace.config_path), "--once", timeout=BOUND)
    assert again.returncode == 0, again.stderr
    assert workspace.writes() == MINIMUM


def test_a_second_instance_on_the_same_state_directory_exits_1_and_sigterm_stops_the_first(
    workspace: Workspace, processes: list[subprocess.Popen[str]]
) -> None:
    first = run(workspace, processes)
    wait_until(lambda: (workspace.state_dir / "status.json").exists(), first, "the first pass")
    lock = (workspace.state_dir / LOCK_FILE).read_text(encoding="utf-8").strip()
    assert lock == str(first.pid)

    second = workspace.stagectl("run", "--config", str(workspace.config_path), "--once", timeout=BOUND)
    assert second.returncode == 1
    assert f"another stagectl is running on {workspace.state_dir} (pid {first.pid})" in second.stderr
    assert second.stdout == ""

    # Between passes (waiting on the interval and the repository's refs), SIGTERM ends the loop cleanly.
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=BOUND)
    assert first.returncode == 0, err
    assert workspace.writes() == MINIMUM

    third = workspace.stagectl("run", "--config", str(workspace.config_path), "--once", timeout=BOUND)
    assert third.returncode == 0, third.stderr
    assert workspace.writes() == MINIMUM


def test_a_commit_to_the_local_repository_wakes_the_loop_before_its_interval(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """The interval is an hour: only the watch on the repository's refs can make the pass that starts
    the pilot (watchfiles' default filter ignores `.git`, where refs live: it must not be used)."""
    workspace = make_workspace(tmp_path / "ws")
    process = run(workspace, processes)
    wait_until(lambda: (workspace.state_dir / "status.json").exists(), process, "first pass")
    assert workspace.writes()["New-MigrationBatch"] == 0
    workspace.commit_desired(pilot="started", message="Start the pilot")
    wait_until(lambda: workspace.writes()["New-MigrationBatch"] == 1, process, "New-MigrationBatch")
    process.terminate()
    assert process.wait(timeout=BOUND) == 0
