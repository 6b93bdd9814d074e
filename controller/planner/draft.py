"""The plan being built: the lists each part appends to, and the memory it updates."""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.model.actions import (
    Action,
    Blocked,
    Drift,
    ExchangeAction,
    Failure,
    Note,
    ParameterValue,
    Readiness,
    Waiting,
)
from controller.model.snapshot import Memory


@dataclass(slots=True)
class Draft:
    memory: Memory
    actions: list[Action] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)
    blocked: list[Blocked] = field(default_factory=list)
    drift: list[Drift] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    readiness: list[Readiness] = field(default_factory=list)

    def act(self, action: Action) -> None:
        self.actions.append(action)

    def wait(self, obj: str, reason: str) -> None:
        self.waiting.append(Waiting(obj, reason))

    def block(self, obj: str, gate: str, reason: str) -> None:
        self.blocked.append(Blocked(obj, gate, reason))

    def note(self, obj: str, reason: str) -> None:
        self.notes.append(Note(obj, reason))

    def correct_settings(
        self, cmdlet: str, *, identity: str, obj: str, changes: list[tuple[str, ParameterValue]]
    ) -> None:
        """One Set-* call with only the settings that differ from what Exchange shows; none when none do."""
        if changes:
            names = ", ".join(name for name, _ in changes)
            self.act(
                ExchangeAction(cmdlet, (("Identity", identity), *changes), obj, f"settings differ: {names}")
            )

    def remember(self, **changes: object) -> None:
        self.memory = self.memory.model_copy(update=changes)


def listing(items: list[str], *, limit: int = 5) -> str:
    """`a, b, c (+12 more)`: long lists in reasons stay readable."""
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} (+{len(items) - limit} more)"
