"""The administrator of the demo: the pull requests they merge, one phase of the runbook at a time,
and what they see after each controller pass."""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from controller.model.actions import Failure, Plan
from controller.model.snapshot import Memory
from controller.planner import render
from controller.runtime.reconciler import PassResult
from controller.sim.exchange.simulator import ExchangeSimulator
from controller.sim.exchange.state import SYNCED_LIKE
from controller.sim.exchange.store import SimStore

ADMIN = ("Ada Admin", "ada.admin@contoso.com")
CONSULTANT = ("Max Consultant", "max@migration-partners.example")
BATCHES = ("Batch0-IT", "Batch1-EarlyAdopters", "Batch2-Sales", "Batch3-Finance")
LATE_SYNC = 2  # Finance members that directory sync has not created yet when Finance starts
# A Sales member whose on-premises mailbox the migration administrator cannot open (no Full Access):
# exchange-facts §9.1 row 1.4, a failure that needs a fix first. The demo fixes it and retries.
FAILING_ROW = "1.4"
RETRY_TOKEN = "full-access-granted"

Ready = Callable[[ExchangeSimulator, Memory, Plan | None], bool]  # the last pass's plan, None before one


@dataclass(frozen=True)
class Phase:
    message: str
    author: tuple[str, str]
    states: dict[str, str]
    ready: Ready
    retry: dict[str, str] = field(default_factory=dict)  # batch -> spec.retry: "fixed it, retry now"


def _synced(*names: str) -> Ready:
    return lambda sim, memory, plan: all(sim.batch_status(n) in ("Synced", "SyncedWithErrors") for n in names)


def _after_cutover(delay: timedelta) -> Ready:
    return lambda sim, memory, plan: memory.cutoverAt is not None and sim.now >= memory.cutoverAt + delay


def _held_for_a_fix(name: str) -> Ready:
    """The controller holds the batch under fix-first: the administrator has seen the failure and its fix."""
    return lambda sim, memory, plan: (
        plan is not None and any(b.object == f"batch/{name}" and b.gate == "fix-first" for b in plan.blocked)
    )


PHASES = (
    Phase("Pilot: start Batch0-IT", ADMIN, {"Batch0-IT": "started"}, lambda sim, memory, plan: True),
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
        f"Batch2-Sales: Full Access granted on premises to the failed member's mailbox; retry it "
        f"(retry: {RETRY_TOKEN})",
        ADMIN,
        {},
        _held_for_a_fix("Batch2-Sales"),
        retry={"Batch2-Sales": RETRY_TOKEN},
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
    """The administrator. With `failing`, a Sales member fails on permissions (row 1.4) when Sales starts;
    the administrator reads the fix in the plan, makes it on premises (the simulator's `clear_failure`)
    and asks for the retry in the repository (`spec.retry`)."""

    def __init__(
        self, repo: Path, sim_state: Path, *, failing: bool = False, say: Callable[[str], None] = print
    ) -> None:
        self.repo, self.store, self.say = repo, SimStore(sim_state), say
        self.next_phase = 0
        self.late: list[str] = []
        self.phases = PHASES if failing else tuple(p for p in PHASES if not p.retry)
        self.failing = failing
        self.broken: str | None = None  # the member whose mailbox the migration administrator cannot open

    @property
    def finished(self) -> bool:
        return self.next_phase == len(self.phases)

    def next_commit(self, memory: Memory, plan: Plan | None = None) -> str | None:
        """Merge the next phase when its moment has come; directory sync catches up on its own."""
        with self.store.transaction() as sim:
            self._directory_sync(sim)
            if self.finished or not self.phases[self.next_phase].ready(sim, memory, plan):
                return None
            phase = self.phases[self.next_phase]
            if "Batch3-Finance" in phase.states and phase.states["Batch3-Finance"] == "started":
                self.late = self._hold_back(sim)
                if self.failing:
                    self.broken = self._break(sim)
            if phase.retry and self.broken is not None:
                sim.clear_failure(self.broken)  # the fix, made on premises
                self.say(
                    f"== on premises: Full Access granted to the migration administrator on {self.broken}"
                )
        self.next_phase += 1
        _set_states(self.repo, phase.states)
        _set_retry(self.repo, phase.retry)
        _commit(self.repo, phase.message, phase.author)
        return f"{phase.message} ({phase.author[0]})"

    def _break(self, sim: ExchangeSimulator) -> str:
        """The first Sales member's mailbox: the migration administrator lacks Full Access to it."""
        csv = (self.repo / "desired" / "batches" / "batch2-sales.csv").read_text().splitlines()
        address = csv[1].split(",")[0].strip()
        sim.fail_documented(address, FAILING_ROW)
        self.say(f"== on premises: the migration administrator has no Full Access to {address}'s mailbox")
        return address

    def _hold_back(self, sim: ExchangeSimulator) -> list[str]:
        """Two Finance users whose mail users directory sync has not created yet: held by the preflight."""
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
        sales = sim.batch_status("Batch2-Sales")
        if self.late and self.next_phase >= 3 and sales in ("Syncing", "Synced", "SyncedWithErrors"):
            for address in self.late:
                sim.add_recipient(address)
            self.say(f"== directory sync created the mail users of {', '.join(self.late)}")
            self.late = []


def _set_states(repo: Path, states: dict[str, str]) -> None:
    for path in (repo / "desired" / "batches").glob("*.yaml"):
        text = path.read_text()
        name = re.search(r"name:\s*([A-Za-z0-9-]+)", text)
        if name and name.group(1) in states:
            text = re.sub(r"(?m)^(\s*state:\s*)\w+", rf"\g<1>{states[name.group(1)]}", text)
            path.write_text(text)


def _set_retry(repo: Path, retry: dict[str, str]) -> None:
    """`retry: <token>` in the batch's spec: a new value asks the controller to retry after the fix."""
    for path in (repo / "desired" / "batches").glob("*.yaml"):
        text = path.read_text()
        name = re.search(r"name:\s*([A-Za-z0-9-]+)", text)
        if name and name.group(1) in retry:
            text = re.sub(r"(?m)^\s*retry:.*\n", "", text)
            text = re.sub(r"(?m)^(\s*)(state:.*)$", rf"\g<1>\g<2>\n\g<1>retry: {retry[name.group(1)]}", text)
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
        self.retried: dict[str, str] = {}  # failed member -> batch, until seen synced after its retry

    def show(self, number: int, result: PassResult, *, merged: str | None) -> None:
        lines = {f"      wait {w.object}: {w.reason}" for w in result.plan.waiting}
        lines |= {f"      hold {b.object} [{b.gate}]: {b.reason}" for b in result.plan.blocked}
        lines |= {_failure_lines(f) for f in result.plan.failures}
        news = sorted(lines - self.lines) + self._synced_after_retry(result.plan)
        self.lines = lines
        if not (merged or result.report.outcomes or news):
            self.quiet += 1
            return
        self.say_quiet()
        if merged:
            print(f"== merged: {merged}")
        now = self.store.now().strftime("%Y-%m-%d %H:%M")
        print(f"pass {number:>3}  {now}  {result.served.commit.sha[:10]}  {render.summary(result.plan)}")
        for outcome in result.report.outcomes:
            mark = "ok  " if outcome.ok else "FAIL"
            print(f"      {mark} {render.describe(outcome.action)[:150]}")
        for line in news:
            print("\n".join(part[:170] for part in line.split("\n")))

    def say(self, line: str) -> None:
        """A line of the script (an event on premises), after the quiet passes before it."""
        self.say_quiet()
        print(line)

    def say_quiet(self) -> None:
        if self.quiet:
            print(f"      ... {self.quiet} quiet passes: Exchange syncing, TTLs ageing")
            self.quiet = 0

    def _synced_after_retry(self, plan: Plan) -> list[str]:
        """A member that failed and no longer does: said once it has synced."""
        failing = {f.address: f.batch for f in plan.failures}
        self.retried.update(failing)
        waiting = {a: b for a, b in self.retried.items() if a not in failing}
        if not waiting:
            return []
        batches = self.store.load().state.batches
        synced = []
        for address, batch in waiting.items():
            user = batches[batch.lower()].users.get(address.lower()) if batch.lower() in batches else None
            if user is not None and user.status in SYNCED_LIKE:
                synced.append(f"      synced {address} in {batch}: the retry after the fix worked")
                del self.retried[address]
        return synced


def _failure_lines(failure: Failure) -> str:
    """A failed member, its error, the documented fix and the retry rule, wrapped to stay readable."""
    row = failure.catalogue or "not in the catalogue"
    wrap = textwrap.TextWrapper(width=120, subsequent_indent=" " * 16)
    return "\n".join(
        [
            f"      fail batch/{failure.batch} {failure.address} [{row}]: {failure.error[:110]}",
            *wrap.wrap(f"           fix: {failure.fix}"),
            *wrap.wrap(f"           retry: {failure.retry}; {failure.handling}"),
        ]
    )


def converged(result: PassResult) -> bool:
    plan = result.plan
    return not (plan.actions or plan.waiting or plan.blocked or result.report.failed)
