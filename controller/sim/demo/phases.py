"""The administrator of the demo: the pull requests they merge, one phase of the runbook at a time,
and what they see after each controller pass."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from controller.model.snapshot import Memory
from controller.planner import render
from controller.runtime.reconciler import PassResult
from controller.sim.exchange.simulator import ExchangeSimulator
from controller.sim.exchange.store import SimStore

ADMIN = ("Ada Admin", "ada.admin@contoso.com")
CONSULTANT = ("Max Consultant", "max@migration-partners.example")
BATCHES = ("Batch0-IT", "Batch1-EarlyAdopters", "Batch2-Sales", "Batch3-Finance")
LATE_SYNC = 2  # Finance members that directory sync has not created yet when Finance starts


@dataclass(frozen=True)
class Phase:
    message: str
    author: tuple[str, str]
    states: dict[str, str]
    ready: Callable[[ExchangeSimulator, Memory], bool]


def _synced(*names: str) -> Callable[[ExchangeSimulator, Memory], bool]:
    return lambda sim, memory: all(sim.batch_status(n) in ("Synced", "SyncedWithErrors") for n in names)


def _after_cutover(delay: timedelta) -> Callable[[ExchangeSimulator, Memory], bool]:
    return lambda sim, memory: memory.cutoverAt is not None and sim.now >= memory.cutoverAt + delay


PHASES = (
    Phase("Pilot: start Batch0-IT", ADMIN, {"Batch0-IT": "started"}, lambda sim, memory: True),
    Phase(
        "Complete the pilot; start the early adopters",
        CONSULTANT,
        {"Batch0-IT": "completed", "Batch1-EarlyAdopters": "started"},
        _synced("Batch0-IT"),
    ),
    Phase(
        "Complete the early adopters; start Sales and Finance",
        ADMIN,
        {"Batch1-EarlyAdopters": "completed", "Batch2-Sales": "started", "Batch3-Finance": "started"},
        _synced("Batch1-EarlyAdopters"),
    ),
    Phase(
        "Complete Sales and Finance",
        CONSULTANT,
        {"Batch2-Sales": "completed", "Batch3-Finance": "completed"},
        _synced("Batch2-Sales", "Batch3-Finance"),
    ),
    Phase(
        "Remove the migration batches 72h after the MX cutover",
        ADMIN,
        dict.fromkeys(BATCHES, "removed"),
        _after_cutover(timedelta(hours=72)),
    ),
)


def create_repository(path: Path, example: Path) -> Path:
    """A repository holding the example with every batch planned: nothing happens before a merge."""
    shutil.copytree(example, path / "desired")
    _git(path.parent, "init", "--quiet", "--initial-branch=main", str(path))
    _set_states(path, dict.fromkeys(BATCHES, "planned"))
    _commit(path, "Plan the migration of contoso.com: endpoint, four batches, DNS cutover", ADMIN)
    return path


class Script:
    def __init__(self, repo: Path, sim_state: Path) -> None:
        self.repo, self.store = repo, SimStore(sim_state)
        self.next_phase = 0
        self.late: list[str] = []

    @property
    def finished(self) -> bool:
        return self.next_phase == len(PHASES)

    def next_commit(self, memory: Memory) -> str | None:
        """Merge the next phase when its moment has come; directory sync catches up on its own."""
        with self.store.transaction() as sim:
            self._directory_sync(sim)
            if self.finished or not PHASES[self.next_phase].ready(sim, memory):
                return None
            phase = PHASES[self.next_phase]
            if "Batch3-Finance" in phase.states and phase.states["Batch3-Finance"] == "started":
                self.late = self._hold_back(sim)
        self.next_phase += 1
        _set_states(self.repo, phase.states)
        _commit(self.repo, phase.message, phase.author)
        return f"{phase.message} ({phase.author[0]})"

    def _hold_back(self, sim: ExchangeSimulator) -> list[str]:
        """Two Finance users whose mail users directory sync has not created yet: the mail-users gate."""
        csv = (
            (self.repo / "desired" / "batches" / "batch3-finance.csv")
            .read_text()
            .splitlines()[1 : 1 + LATE_SYNC]
        )
        late = [line.split(",")[0].strip() for line in csv]
        for address in late:
            sim.state.recipients.pop(address.lower(), None)
        return late

    def _directory_sync(self, sim: ExchangeSimulator) -> None:
        if self.late and self.next_phase == 3 and sim.batch_status("Batch2-Sales") in ("Syncing", "Synced"):
            for address in self.late:
                sim.add_recipient(address)
            print(f"== directory sync created the mail users of {', '.join(self.late)}")
            self.late = []


def _set_states(repo: Path, states: dict[str, str]) -> None:
    for path in (repo / "desired" / "batches").glob("*.yaml"):
        text = path.read_text()
        name = re.search(r"name:\s*([A-Za-z0-9-]+)", text)
        if name and name.group(1) in states:
            text = re.sub(r"(?m)^(\s*state:\s*)\w+", rf"\g<1>{states[name.group(1)]}", text)
            path.write_text(text)


def _commit(repo: Path, message: str, author: tuple[str, str]) -> None:
    _git(repo, "add", "-A")
    _git(
        repo,
        "-c",
        f"user.name={author[0]}",
        "-c",
        f"user.email={author[1]}",
        "commit",
        "--quiet",
        "-m",
        message,
    )


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True)


class Printer:
    """One line per pass that did something; waits and gates only when they change; quiet passes counted."""

    def __init__(self, sim_state: Path) -> None:
        self.store = SimStore(sim_state)
        self.lines: set[str] = set()
        self.quiet = 0

    def show(self, number: int, result: PassResult, *, merged: str | None) -> None:
        lines = {f"      wait {w.object}: {w.reason}" for w in result.plan.waiting}
        lines |= {f"      hold {b.object} [{b.gate}]: {b.reason}" for b in result.plan.blocked}
        news = sorted(lines - self.lines)
        self.lines = lines
        if not (merged or result.report.outcomes or news):
            self.quiet += 1
            return
        if self.quiet:
            print(f"      ... {self.quiet} quiet passes: Exchange syncing, TTLs ageing")
            self.quiet = 0
        if merged:
            print(f"== merged: {merged}")
        now = self.store.now().strftime("%Y-%m-%d %H:%M")
        print(f"pass {number:>3}  {now}  {result.served.commit.sha[:10]}  {render.summary(result.plan)}")
        for outcome in result.report.outcomes:
            mark = "ok  " if outcome.ok else "FAIL"
            print(f"      {mark} {render.describe(outcome.action)[:150]}")
        for line in news:
            print(line[:170])


def converged(result: PassResult) -> bool:
    plan = result.plan
    return not (plan.actions or plan.waiting or plan.blocked or result.report.failed)
