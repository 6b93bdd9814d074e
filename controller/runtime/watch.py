"""What a pass tells whoever watches it: the commands show it as terminal progress (rich) or plain lines.

The runtime calls these at each step; it neither knows nor cares how they are shown. A watcher must not
raise: it is told, it does not decide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from controller.model.actions import Action
    from controller.model.snapshot import Snapshot
    from controller.runtime.applier import Outcome
    from controller.runtime.serving import Served


class PassWatcher(Protocol):
    def pass_started(self, served: Served) -> None:
        """The revision this pass serves is known; observation starts."""

    def observed(self, snapshot: Snapshot) -> None:
        """Exchange and DNS were read (batches' progress is in `snapshot.exchange.batches`)."""

    def planned(self, actions: int) -> None:
        """The plan holds this many actions to send."""

    def acting(self, action: Action) -> None:
        """This action's intent is recorded; it is being sent."""

    def acted(self, outcome: Outcome) -> None:
        """Its result is recorded."""


class Unwatched:
    """Nobody watches: every step is silent."""

    def pass_started(self, served: Served) -> None:
        pass

    def observed(self, snapshot: Snapshot) -> None:
        pass

    def planned(self, actions: int) -> None:
        pass

    def acting(self, action: Action) -> None:
        pass

    def acted(self, outcome: Outcome) -> None:
        pass
