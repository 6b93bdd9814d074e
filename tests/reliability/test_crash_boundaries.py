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


Effects = tuple[Counter[str], list[str], dict[str, object]]


def _effects(root: Path) -> Effects:
    """Exchange's write calls per cmdlet, the DNS UPDATEs applied (per object, in order) and the memory
    the controller kept (the TTLs before lowering, the cutover time, the completions refused …)."""
    calls = SimStore(root / "exchange.sqlite").load().state.calls
    writes = Counter({name: n for name, n in calls.items() if not name.startswith(("Get-", "Test-"))})
    store = Store.open(root / "state")
    try:
        memory = store.load_memory()
    finally:
        store.close()
    # Times are compared as set or not: a pass killed and run again does not move the simulated clock,
    # so the crashed migration reaches each step a few simulated hours sooner.
    kept = memory.model_dump(mode="json", exclude={"lowTtlSince", "swappedAt", "laggingSince", "cutoverAt"})
    kept |= {
        "cutoverAt": memory.cutoverAt is not None,
        "lowTtlSince": sorted(memory.lowTtlSince),
        "swappedAt": sorted(memory.swappedAt),
        "laggingSince": sorted(memory.laggingSince),
    }
    return writes, DnsSimBackend(root / "dns.json").updates("contoso.com"), kept


def _reference(root: Path, completion: str) -> Effects:
    crashdrive.make(root, completion=completion)
    done = _drive(root)
    assert done.returncode == 0, done.stdout + done.stderr
    return _effects(root)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Effects:
    return _reference(tmp_path_factory.mktemp("reference") / "ws", "supported")


@pytest.fixture(scope="module")
def reference_unsupported(tmp_path_factory: pytest.TempPathFactory) -> Effects:
    return _reference(tmp_path_factory.mktemp("reference-unsupported") / "ws", "unsupported")


@pytest.mark.slow
@pytest.mark.parametrize("moment", faults.MOMENTS)
def test_sigkill_at_one_moment_of_every_action_applies_every_effect_exactly_once(
    tmp_path: Path, reference: Effects, moment: str
) -> None:
    """One migration a moment: an action killed `during` is settled as applied and never reaches its
    `after`, so each moment of every action needs a run of its own."""
    _crash_every_action(tmp_path, reference, moment, completion="supported")


@pytest.mark.slow
def test_sigkill_once_each_result_is_recorded_where_exchange_refuses_completion(
    tmp_path: Path, reference_unsupported: Effects
) -> None:
    """Where Exchange refuses to complete a staged batch (exchange-facts §8) the refusal is memory: it is
    saved with the result, so a kill right after it does not cost a second Complete-MigrationBatch."""
    _crash_every_action(tmp_path, reference_unsupported, "recorded", completion="unsupported")


def _crash_every_action(tmp_path: Path, reference: Effects, moment: str, *, completion: str) -> None:
    root = tmp_path / "ws"
    crashdrive.make(root, completion=completion)
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
    writes, updates, _ = reference
    # Every action of the migration was killed once at this moment (a resent action is a new boundary
    # only when its key changed, e.g. a reason that names a count).
    assert {line.rsplit("@", 1)[1] for line in killed} == {moment}
    assert kills >= sum(writes.values()) + len(updates), (killed, writes, updates)

    # Every effect exactly once: the same calls and UPDATEs as the run without faults, and the same memory
    # (a TTL before lowering learnt in the pass that lowered it is kept though the pass died).
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
