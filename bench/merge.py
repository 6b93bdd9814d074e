"""Benchmark: merge -> first cmdlet. How long after a commit lands on the watched branch of a local
repository the running controller sends the cmdlet it asks for.

Run: `.venv/bin/python -m bench.merge [RUNS]`. Each run starts `stagectl run` (interval 1 h, so only
the repository watch can wake it) on a fresh workspace (the rehearsal simulators), waits for its first
pass, commits the pilot batch `planned -> started`, and times from the commit's return to the first
`New-MigrationBatch` the simulator counts. Target (issue 13): under 2 s.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from controller.sim.exchange.store import SimStore
from tests.support.controller import make_workspace

POLL = 0.01
TIMEOUT = 60.0


def _wait(condition: object, what: str) -> float:
    assert callable(condition)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(POLL)
    raise SystemExit(f"bench.merge: timed out waiting for {what}")


def one_run(root: Path) -> float:
    workspace = make_workspace(root)
    process = workspace.start("run", "--config", str(workspace.config_path))
    try:
        _wait(lambda: (workspace.state_dir / "status.json").exists(), "the first pass")
        time.sleep(0.5)  # the first pass has written its status; let the watch settle
        store = SimStore(workspace.exo_path)
        before = store.load().calls("New-MigrationBatch")
        workspace.commit_desired(pilot="started", message="Start the pilot")
        merged = time.monotonic()
        sent = _wait(lambda: store.load().calls("New-MigrationBatch") > before, "New-MigrationBatch")
        return sent - merged
    finally:
        process.terminate()
        process.wait(timeout=30)


def main(runs: int = 3) -> None:
    latencies = []
    for index in range(runs):
        with tempfile.TemporaryDirectory(prefix="stagectl-bench-merge-") as temp:
            latencies.append(one_run(Path(temp) / f"ws{index}"))
    print(
        f"merge -> first cmdlet (local repository, watchfiles): median {statistics.median(latencies):.2f} s "
        f"(min {min(latencies):.2f}, max {max(latencies):.2f}, {runs} runs; target < 2 s)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
