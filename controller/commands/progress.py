"""What `stagectl run` and `stagectl apply` show while they work.

On a terminal: a live panel drawn with rich — the pass and its revision, the step (observing, applying
3/7), the action in flight, and each batch's progress (synced and failed of its members). Elsewhere (a
pipe, a log file, a systemd journal) or with `--no-progress`: plain lines, one per action sent and a
summary per pass, as before. The finished pass is printed above the panel either way, so the history
scrolls while the panel shows the present.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from controller.model.actions import Action
from controller.model.snapshot import ObservedBatch, Snapshot
from controller.planner import render
from controller.runtime.applier import Outcome
from controller.runtime.serving import Served
from controller.runtime.watch import Unwatched

MAX_BATCHES = 12  # rows the panel shows; the rest are counted


def wanted(flag_off: bool, stream: TextIO | None = None) -> bool:
    """A live panel only on a terminal, and not when `--no-progress` was given."""
    return not flag_off and (stream or sys.stdout).isatty()


class PlainProgress(Unwatched):
    """One line per action sent, for logs: nothing redrawn, nothing lost."""

    def __init__(self, write: Callable[[str], None] = print) -> None:
        self._write = write

    def acting(self, action: Action) -> None:
        self._write(f"  send {action.object}  {render.describe(action)[:150]}")

    def show(self, lines: list[str]) -> None:
        for line in lines:
            self._write(line)

    def close(self) -> None:
        pass


class LiveProgress:
    """The live panel; `show` prints finished lines above it."""

    def __init__(self, console: Console | None = None, *, echo: bool = False) -> None:
        """`echo`: print each action's result as it comes (apply); `run` prints them with its pass."""
        self.console = console or Console()
        self.echo = echo
        self.step = "starting"
        self.revision = ""
        self.action = ""
        self.total = 0
        self.done = 0
        self.failed = 0
        self.batches: list[ObservedBatch] | None = []
        self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=True)
        self._live.start()

    # --- PassWatcher -------------------------------------------------------------------------------------

    def pass_started(self, served: Served) -> None:
        commit = served.commit
        self.revision = f"{commit.sha[:12]} {commit.subject[:60]}"
        self.step, self.action, self.total, self.done, self.failed = "observing Exchange and DNS", "", 0, 0, 0
        self._refresh()

    def observed(self, snapshot: Snapshot) -> None:
        self.batches = snapshot.exchange.batches
        self.step = "planning"
        self._refresh()

    def planned(self, actions: int) -> None:
        self.total = actions
        self.step = f"applying 0/{actions}" if actions else "nothing to send"
        self._refresh()

    def acting(self, action: Action) -> None:
        self.action = f"{action.object}  {render.describe(action)[:100]}"
        self.step = f"applying {self.done + 1}/{self.total}"
        self._refresh()

    def acted(self, outcome: Outcome) -> None:
        self.done += 1
        self.failed += 0 if outcome.ok else 1
        if self.echo:
            mark = "ok  " if outcome.ok else "FAIL"
            self.console.print(
                Text(f"  {mark} {outcome.action.object}  {render.describe(outcome.action)[:150]}")
            )
        self.action = ""
        self._refresh()

    # --- the command's own output ------------------------------------------------------------------------

    def show(self, lines: list[str]) -> None:
        for line in lines:
            self.console.print(Text(line))  # Text: user data is never read as rich markup
        self.step = "waiting for the next pass"
        self._refresh()

    def close(self) -> None:
        self._live.stop()

    def _refresh(self) -> None:
        self._live.update(self._render(), refresh=True)  # a quick pass still shows each step

    def _render(self) -> Group:
        head = Text.assemble(
            ("stagectl ", "bold"), (self.revision or "", "cyan"), "  ", (self.step, "yellow")
        )
        parts: list[Text | Table] = [head]
        if self.action:
            parts.append(Text(f"  sending {self.action}"))
        if self.total:
            bar = _bar(self.total, self.done, 30)
            row = Table.grid(padding=(0, 1))
            row.add_row(
                Text("  actions"),
                bar,
                Text(f"{self.done}/{self.total}" + (f", {self.failed} failed" if self.failed else "")),
            )
            parts.append(row)
        parts.append(_batches(self.batches))
        return Group(*parts)


def _batches(batches: list[ObservedBatch] | None) -> Table | Text:
    if batches is None:
        return Text("  batches: could not be read", style="red")
    if not batches:
        return Text("  no migration batches yet")
    table = Table(box=None, padding=(0, 1), show_header=True, header_style="bold")
    for column in ("batch", "status", "progress", "synced", "failed"):
        table.add_column(column)
    for batch in batches[:MAX_BATCHES]:
        total = max(batch.TotalCount, 1)
        arrived = batch.SyncedCount + batch.FinalizedCount
        table.add_row(
            Text(batch.Identity[:40]),
            Text(batch.Status),
            _bar(total, min(arrived, total), 24),
            Text(f"{arrived}/{batch.TotalCount}"),
            Text(str(batch.FailedCount), style="red" if batch.FailedCount else ""),
        )
    if len(batches) > MAX_BATCHES:
        table.add_row(Text(f"(+{len(batches) - MAX_BATCHES} more)"), Text(""), Text(""), Text(""), Text(""))
    return table


def _bar(total: int, done: int, width: int) -> ProgressBar:
    """Green as it fills and when full: a 16-colour terminal draws rich's default finished bar in the grey
    of an empty one."""
    return ProgressBar(
        total=total, completed=done, width=width, complete_style="green", finished_style="green"
    )
