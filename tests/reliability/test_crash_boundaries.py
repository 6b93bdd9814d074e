"""SIGKILL at every action boundary of the example migration (issue 14, item 2).

The example migration (`desired/`, merged phase by phase as `make demo` does) runs in a process
(`tests.reliability.crashdrive`) with the fault points armed for every action and moment, each killed
once: `intent` (in the journal, not yet in the audit chain), `before` (intent durable, nothing
sent), `during` (the simulator committed the call or the UPDATE,
the controller has not read the answer), `after` (answer read, result not recorded) and `recorded`. The
process is started again after each kill until the migration converges. Then every effect was applied
exactly once (the simulator's call log and the DNS simulator's update log equal those of a run without
faults), each interrupted intent was settled by observation in the audit chain, and `audit verify`
passes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from controller import faults
from controller.runtime import audit
from controller.runtime.store import Store
from controller.sim.dns import DnsSimBackend
from controller.sim.exchange.store import SimStore
from tests.reliability import crashdrive

BOUND = 300.0  # seconds for one process: a hung one fails the test, never an expectation about speed
CREDENTIALS = "CONTOSO\\migration.admin:crash-test-password"


def _drive(root: Path, **fault: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, crashdrive.CREDENTIALS_ENV: CREDENTIALS, "PYTHONUNBUFFERED": "1", **fault}
    return subprocess.run(
        [sys.executable, "-m", "tests.reliability.crashdrive", str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=BOUND,
        cwd=Path(__file__).resolve().parents[2],
    )


def _effects(root: Path) -> tuple[Counter[str], list[str]]:
    """Exchange's write calls per cmdlet and the DNS UPDATEs applied, per object, in order."""
    calls = SimStore(root / "exchange.sqlite").load().state.calls
    writes = Counter({name: n for name, n in calls.items() if not name.startswith("Get-")})
    return writes, DnsSimBackend(root / "dns.json").updates("contoso.com")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Counter[str], list[str]]:
    root = tmp_path_factory.mktemp("reference") / "ws"
    crashdrive.make(root)
    done = _drive(root)
    assert done.returncode == 0, done.stdout + done.stderr
    return _effects(root)


@pytest.mark.slow
@pytest.mark.parametrize("moment", faults.MOMENTS)
def test_sigkill_at_one_moment_of_every_action_applies_every_effect_exactly_once(
    tmp_path: Path, reference: tuple[Counter[str], list[str]], moment: str
) -> None:
    """One migration a moment: an action killed `during` is settled as applied and never reaches its
    `after`, so each moment of every action needs a run of its own."""
    root = tmp_path / "ws"
    crashdrive.make(root)
    boundaries = tmp_path / "boundaries"
    kills = 0
    while True:
        run = _drive(root, **{faults.ENV: f"*@{moment}", faults.ONCE_ENV: str(boundaries)})
        if run.returncode == -signal.SIGKILL:
            kills += 1
            assert kills <= 400, "more kills than the migration has boundaries"
            continue
        assert run.returncode == 0, f"after {kills} kills: {run.stdout}\n{run.stderr}"
        break

    killed = boundaries.read_text(encoding="utf-8").splitlines()
    print(f"{moment}: {kills} kills")  # docs/reliability.md quotes the figure (pytest -s shows it)
    assert kills == len(killed)
    writes, updates = reference
    # Every action of the migration was killed once at this moment (a resent action is a new boundary
    # only when its key changed, e.g. a reason that names a count).
    assert {line.rsplit("@", 1)[1] for line in killed} == {moment}
    assert kills >= sum(writes.values()) + len(updates), (killed, writes, updates)

    # Every effect exactly once: the same calls and UPDATEs as the run without faults.
    assert _effects(root) == reference

    # Each interrupted intent was settled by observation and recorded; none is left open.
    store = Store.open(root / "state")
    try:
        assert store.unfinished_actions() == []
    finally:
        store.close()
    records = audit.show(audit.path_in(root / "state"))
    by_phase = Counter(str(r.get("phase")) for r in records)
    # Every action's intent is in the chain, but for those killed while it was being written (journal only).
    unwritten = kills if moment == "intent" else 0
    assert by_phase["intent"] == by_phase["result"] + by_phase["settled"] - unwritten
    settled = [str(r["result"]) for r in records if r.get("phase") == "settled"]
    if moment == "recorded":  # the result was written before the kill: nothing to settle
        assert settled == []
    else:  # the next pass settled each by observation: not sent (before), or sent and found (during, after)
        verdict = "not applied" if moment in ("intent", "before") else "applied"
        assert len(settled) == kills
        assert all(s.startswith(f"settled: {verdict}: ") for s in settled), settled
    assert audit.verify(audit.path_in(root / "state")) is None
    assert CREDENTIALS.split(":")[1] not in json.dumps(records)
