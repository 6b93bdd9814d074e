"""Intent before action: the journal and the audit chain around each action, and the settlement of an
intent left without a result (contract §5).

The intent is durable before the action is sent: a journal row (SQLite, synchronous=FULL), then an audit
record (fsynced). The result follows: the audit record first, then the journal row closed. An intent
left open (a crash, an answer lost) is settled by the next observation of its object (`planner.settle`),
never by sending the action again blindly. `stagectl run` and `stagectl apply` both act through this.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from controller import errors, faults
from controller.desired.models import DesiredState
from controller.model.actions import Action, Blocked, Note, Plan
from controller.model.snapshot import Snapshot
from controller.planner import coexistence, records, render
from controller.planner.batches.context import batch_object
from controller.planner.settle import Verdict, settle
from controller.runtime import audit
from controller.runtime.applier import Outcome
from controller.runtime.audit import AuditLog
from controller.runtime.store import ActionRecord, Store, action_key

UNKNOWN_RESULT = "unknown"  # an action sent whose answer was lost: its intent stays open until settled
SETTLER = "stagectl"  # the author of a settlement: the controller's own judgement from what it observed


@dataclass
class Journal:
    store: Store
    audit: AuditLog
    clock: Callable[[], datetime]
    state_dir: Path

    def recorder(
        self, *, revision: str, author: str, on_outcome: Callable[[Outcome], None] = lambda outcome: None
    ) -> tuple[Callable[[Action], bool], Callable[[Outcome], None]]:
        """The applier's `on_start` and `on_outcome` for one pass (or one `stagectl apply`)."""
        pass_id = self.store.next_pass()

        def before(action: Action) -> bool:
            """The intent, durable before anything is sent. Either write failing (a full disk, a locked
            database) stops the pass with the action unsent."""
            key = action_key(action)
            try:
                if not self.store.record_action_started(
                    revision=revision, pass_id=pass_id, key=key, action=action, now=self.clock()
                ):
                    return False  # this pass sent it already
                faults.point("intent")
                self.audit.append(
                    revision=revision,
                    author=author,
                    action=action,
                    result="sending",
                    duration_ms=0,
                    time=self.clock(),
                    phase="intent",
                    pass_id=pass_id,
                    key=key,
                )
            except (OSError, errors.ExternalFailure) as error:
                raise errors.ExternalFailure(
                    f"the intent of {render.describe(action)[:120]} could not be recorded in "
                    f"{self.state_dir} ({_why(error)}); it was not sent"
                ) from None
            return True

        def after(outcome: Outcome) -> None:
            """The result: in the audit chain first, then the journal row closed. A crash between the two
            leaves the intent open; `settle` then finds its result as the log's newest record."""
            key = action_key(outcome.action)
            result = "ok" if outcome.ok else f"error: {outcome.detail}"
            if outcome.ok and outcome.detail != "ok":
                result = f"ok: {outcome.detail}"
            if outcome.indeterminate:
                result = f"{UNKNOWN_RESULT}: {outcome.detail}"
            try:
                faults.point("result")
                self.audit.append(
                    revision=revision,
                    author=author,
                    action=outcome.action,
                    result=result,
                    duration_ms=int(outcome.duration * 1000),
                    time=self.clock(),
                    phase="result",
                    pass_id=pass_id,
                    key=key,
                )
                if not outcome.indeterminate:  # else the intent stays open: the next pass settles it
                    self.store.record_action_finished(
                        revision=revision,
                        pass_id=pass_id,
                        key=key,
                        result=result,
                        now=self.clock(),
                        memory=outcome.learned,
                    )
            except (OSError, errors.ExternalFailure) as error:
                raise errors.ExternalFailure(
                    f"{render.describe(outcome.action)[:120]} was sent ({result[:80]}) but its result could "
                    f"not be recorded ({_why(error)}); the next pass settles it by observation"
                ) from None
            on_outcome(outcome)

        return before, after

    def settle(self, planned: Plan, snapshot: Snapshot, desired: DesiredState) -> Plan:
        """An intent with no result: the process died with its action in flight, or its answer was lost.
        Whether its effect is observed decides (planner.settle), never sending it again blindly: the
        settlement is recorded and the plan, made from the same observation, sends the action again only
        if its effect is absent. Where the observation cannot tell, the intent stays open and nothing
        acts on its object; an intent whose object left the desired state is closed as abandoned (it is
        no longer observed, so it could never be settled)."""
        open_intents = self.store.unfinished_actions()
        if not open_intents:
            return planned
        # Read before anything is appended: the newest record is the one a crash may have left unclosed.
        recorded = {r.action_key: self.audit.recorded_result(r.pass_id, r.action_key) for r in open_intents}
        wanted = desired_objects(desired)
        undecided: dict[str, str] = {}
        notes: list[Note] = []
        for record in open_intents:
            result = recorded[record.action_key]
            if result is not None:  # its result reached the audit log: only the journal row was left open
                self._close(record, result)
                continue
            what = audit.summary(record.action)
            obj = str(record.action.get("object", ""))
            if obj.lower() not in wanted:
                result = (
                    f"settled: abandoned: {obj} is no longer in the desired state, so its effect is no "
                    "longer observed; what Exchange or DNS shows of it stands"
                )
            else:
                settlement = settle(record.action, snapshot, planned)
                if settlement.verdict is Verdict.UNKNOWN:
                    undecided[obj] = (
                        f"{what} of pass {record.pass_id} was interrupted and its effect cannot be observed "
                        f"yet ({settlement.reason}); nothing acts on {obj} until it can"
                    )
                    continue
                result = settlement.result()
            self._append_settled(record, result)
            self._close(record, result)
            notes.append(Note(obj, f"{what} was interrupted; {result}"))
        held = [a for a in planned.actions if a.object in undecided]
        return dataclasses.replace(
            planned,
            actions=tuple(a for a in planned.actions if a.object not in undecided),
            blocked=planned.blocked + tuple(Blocked(o, "unknown", why) for o, why in undecided.items()),
            notes=planned.notes + tuple(notes),
            memory=coexistence.uncounted(planned.memory, held, snapshot.memory),
        )

    def _append_settled(self, record: ActionRecord, result: str) -> None:
        self.audit.append(
            revision=record.revision,
            author=SETTLER,
            action=record.action,
            result=result,
            duration_ms=0,
            time=self.clock(),
            phase="settled",
            pass_id=record.pass_id,
            key=record.action_key,
        )

    def _close(self, record: ActionRecord, result: str) -> None:
        self.store.record_action_finished(
            revision=record.revision,
            pass_id=record.pass_id,
            key=record.action_key,
            result=result,
            now=self.clock(),
        )


def _why(error: OSError | errors.ExternalFailure) -> str:
    """A write error in a few words: the system's reason for an OSError (a full disk), else the sentence."""
    return (error.strerror if isinstance(error, OSError) else None) or str(error)


def desired_objects(desired: DesiredState) -> set[str]:
    """The plan's names (lower case) of what the desired state manages: its endpoint, batches, records."""
    return {
        f"endpoint/{desired.migration.endpoint.name}".lower(),
        *(batch_object(batch).lower() for batch in desired.batches),
        *(records.obj(record).lower() for record in desired.records),
    }
