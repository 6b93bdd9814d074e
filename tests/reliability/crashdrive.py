"""The example migration (`desired/`, merged phase by phase as `make demo` does) driven by a process that
a fault point may kill at any action boundary; started again, it resumes where the state says.

    python -m tests.reliability.crashdrive WORKSPACE

WORKSPACE is made by `make()`: the repository, the simulators' state files and the configuration. The
phase to merge next is told by the repository (one commit per merged phase); the simulated clock moves
six hours after each pass that finished. Exit 0 once every phase is merged and a pass has nothing left
to do; 1 when that does not happen within `MAX_PASSES`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from controller.model.snapshot import Memory, RRset
from controller.runtime import wiring
from controller.runtime.config import load_config
from controller.sim.backends import REHEARSAL
from controller.sim.demo import phases, services
from controller.sim.dns import DnsSimBackend
from controller.sim.exchange.simulator import ExchangeSimulator

EXAMPLE = Path(__file__).resolve().parents[2] / "desired"
STEP_HOURS = 6
MAX_PASSES = 80
CREDENTIALS_ENV = "ONPREM_MIGRATION_CREDENTIALS"
ONPREM = [
    RRset(name="@", type="MX", ttl=3600, values=["10 mail.contoso.com."]),
    RRset(name="@", type="TXT", ttl=3600, values=["v=spf1 mx -all", "MS=ms12345678"]),
    RRset(name="autodiscover", type="CNAME", ttl=3600, values=["mail.contoso.com."]),
]


def make(root: Path, *, completion: str = "supported") -> Path:
    """A workspace for the example migration on the simulators (`completion`: whether Exchange completes
    a staged batch, exchange-facts §8); returns its configuration file."""
    root.mkdir(parents=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "controller",
            "sim",
            "init",
            "--state",
            str(root / "exchange.sqlite"),
            "--mail-users-from",
            str(EXAMPLE),
            "--now",
            services.START,
            "--completion",
            completion,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    DnsSimBackend(root / "dns.json").seed_zone("contoso.com", ONPREM)
    phases.create_repository(root / "repo", EXAMPLE)
    config = {
        "apiVersion": "stagectl/v1",
        "kind": "ControllerConfig",
        "source": {"repo": str(root / "repo"), "branch": "main"},
        "stateDir": str(root / "state"),
        "exchange": {"backend": "sim", "state": str(root / "exchange.sqlite")},
        "dns": {"backend": "sim", "state": str(root / "dns.json")},
        "clock": "sim",
    }
    path = root / "stagectl.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


class _Script(phases.Script):
    """The demo's phases, resumed from the repository; directory sync is not held back (that would be
    state of this process, lost when it is killed)."""

    def __init__(self, repo: Path, sim_state: Path) -> None:
        super().__init__(repo, sim_state)
        commits = subprocess.run(
            ["git", "-C", str(repo), "rev-list", "--count", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        self.next_phase = int(commits.stdout) - 1

    def _hold_back(self, sim: ExchangeSimulator) -> list[str]:
        return []


def drive(root: Path) -> int:
    config = load_config(root / "stagectl.yaml")
    sim_state = root / "exchange.sqlite"
    reconciler = wiring.build(config, rehearsal=REHEARSAL)
    script = _Script(root / "repo", sim_state)
    try:
        for _ in range(MAX_PASSES):
            memory: Memory = reconciler.store.load_memory()
            script.next_commit(memory)
            result = reconciler.run_pass()
            if script.finished and phases.converged(result):
                return 0
            services.advance(sim_state, hours=STEP_HOURS)
        return 1
    finally:
        wiring.close(reconciler)


if __name__ == "__main__":
    raise SystemExit(drive(Path(sys.argv[1])))
