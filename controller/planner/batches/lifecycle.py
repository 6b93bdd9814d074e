"""A batch from planned to removed: the cmdlet that moves it forward, or why it waits or is blocked. Pure."""

from __future__ import annotations

from datetime import datetime

from controller.desired.models import Batch, BatchState, DesiredState, format_duration
from controller.model.actions import CsvRows, ExchangeAction, ParameterValue
from controller.model.snapshot import ExchangeObserved, ObservedBatch, at
from controller.model.statuses import COMPLETED, IN_FLIGHT, MOVING, RETRYABLE, SYNCED, BatchStatus
from controller.planner.batches import members, preflight, retry, settings
from controller.planner.batches.context import Context, UsersByBatch, batch_object, progress
from controller.planner.draft import Draft

# How far along a batch is, to recognise backward transitions (contract §2: states move forward only).
_DESIRED_RANK = {
    BatchState.PLANNED: 0,
    BatchState.CREATED: 1,
    BatchState.STARTED: 2,
    BatchState.STOPPED: 2,
    BatchState.COMPLETED: 3,
    BatchState.REMOVED: 4,
}
_OBSERVED_RANK = {
    BatchStatus.CREATED: 1,
    BatchStatus.WAITING: 2,
    BatchStatus.STARTING: 2,
    BatchStatus.SYNCING: 2,
    BatchStatus.INCREMENTAL_SYNCING: 2,
    BatchStatus.SYNCED: 2,
    BatchStatus.SYNCED_WITH_ERRORS: 2,
    BatchStatus.FAILED: 2,
    BatchStatus.STOPPING: 2,
    BatchStatus.STOPPED: 2,
    BatchStatus.CORRUPTED: 2,
    BatchStatus.COMPLETING: 3,
    BatchStatus.COMPLETED: 3,
    BatchStatus.COMPLETED_WITH_ERRORS: 3,
    BatchStatus.REMOVING: 4,
}


def plan_batches(
    draft: Draft,
    desired: DesiredState,
    exchange: ExchangeObserved,
    *,
    users: UsersByBatch | None,
    endpoint_problem: str | None,
    now: datetime,
    endpoint_check_error: str | None = None,
    force: bool = False,
) -> None:
    if exchange.batches is None:
        for batch in desired.batches:
            draft.block(
                batch_object(batch),
                "unknown",
                "Exchange batches could not be read; nothing is planned for them",
            )
        return
    observed = {batch.Identity.lower(): batch for batch in exchange.batches}
    context = Context.read(
        desired,
        exchange,
        users=users,
        endpoint_problem=endpoint_problem,
        now=now,
        endpoint_check_error=endpoint_check_error,
        force=force,
    )
    for batch in desired.batches:
        found = observed.get(batch.key)
        if found is None:
            _plan_absent(draft, batch, context)
        else:
            _plan_present(draft, batch, found, context)
            retry.report(draft, batch, found, context)
    _note_undeclared(draft, desired, exchange)


def _note_undeclared(draft: Draft, desired: DesiredState, exchange: ExchangeObserved) -> None:
    """A batch Exchange has that the repository no longer names (its file deleted) is left alone, never
    removed (contract §2: removal is an explicit `state: removed`); the plan says so, and that it holds the
    cutover while it is not completed (the batches-completed gate counts it)."""
    declared = {batch.key for batch in desired.batches}
    for found in exchange.batches or ():
        if found.Identity.lower() in declared:
            continue
        status = BatchStatus.parse(found.Status)
        holds = (
            ""
            if status in COMPLETED
            else "; until it is completed it holds the cutover (its members have not arrived)"
        )
        draft.note(
            f"batch/{found.Identity}",
            f"{found.Status} in Exchange but not in the repository: nothing is done to it and it is never "
            f"removed (write it with state: removed to remove it){holds}",
        )


# --- a batch Exchange does not have -----------------------------------------------------------


def _plan_absent(draft: Draft, batch: Batch, context: Context) -> None:
    state = batch.state
    if state is BatchState.REMOVED:
        return
    if state is BatchState.PLANNED:
        preflight.report_planned(draft, batch, context)
        return
    if context.mailboxes and all(m.key in context.mailboxes for m in batch.members):
        draft.block(
            batch_object(batch),
            "transitions",
            "every member already has a mailbox in Exchange Online, so a new "
            "batch would migrate nobody (was it completed and then removed by "
            "Exchange's retention?); set state: removed",
        )
        return
    if context.endpoint_problem:
        draft.block(batch_object(batch), "endpoint", f"cannot create the batch: {context.endpoint_problem}")
        return
    start = state in (BatchState.STARTED, BatchState.COMPLETED)
    # The preflight holds creation too: a batch made with members who are not ready holds failing users
    # (a duplicate fails at once, exchange-facts §9.1 row 1.6), and a later start would find them there.
    if not preflight.gate(draft, batch, [m.key for m in batch.members], context, fresh=True, start=start):
        return
    parameters: list[tuple[str, ParameterValue]] = [
        ("Name", batch.name),
        ("SourceEndpoint", context.desired.migration.endpoint.name),
        ("CSVData", CsvRows(tuple(m.address for m in batch.members))),
    ]
    if start:
        parameters.append(("AutoStart", True))
    parameters += settings.creation_settings(batch, context.desired)
    note = {
        BatchState.STOPPED: " (created, not started)",
        BatchState.COMPLETED: " (start first, complete when Synced)",
    }
    draft.act(
        ExchangeAction(
            "New-MigrationBatch",
            tuple(parameters),
            batch_object(batch),
            f"planned -> {state.value}{note.get(state, '')}",
        )
    )


# --- a batch Exchange has ---------------------------------------------------------------------


def _plan_present(draft: Draft, batch: Batch, found: ObservedBatch, context: Context) -> None:
    status = BatchStatus.parse(found.Status)
    obj = batch_object(batch)
    if status is None:
        draft.block(
            obj, "unknown", f"Exchange reports status {found.Status!r}, which this controller does not know"
        )
        return
    if status is BatchStatus.CORRUPTED:
        draft.block(
            obj, "corrupted", "the batch is Corrupted; an administrator must investigate it in Exchange"
        )
        return
    state = batch.state
    if state is BatchState.REMOVED:
        _plan_removal(draft, batch, status, context)
        return
    if _OBSERVED_RANK[status] > _DESIRED_RANK[state] and not (
        status in COMPLETED and state is BatchState.STARTED and retry.failed_users(batch, context)
    ):
        draft.block(
            obj,
            "transitions",
            f"Exchange shows {status.value} but the repository says {state.value}; "
            "batches only move forward, nothing is changed",
        )
        return
    if state is BatchState.PLANNED:
        return  # unreachable: any existing batch ranks above planned
    settings.plan_settings(draft, batch, found, context)
    membership_ok = members.plan_membership(draft, batch, found, status, context)
    if status in IN_FLIGHT:
        if status is BatchStatus.WAITING and found.StartAfterUTC is not None:
            draft.wait(obj, f"Waiting: Exchange starts the batch at {at(found.StartAfterUTC)} (StartAfter)")
        else:
            draft.wait(obj, f"{status.value}; the next step follows when Exchange settles")
        return
    if state is BatchState.CREATED:
        return
    if state is BatchState.STOPPED:
        _plan_stopped(draft, batch, status)
    elif membership_ok:
        _plan_running(draft, batch, found, status, context)


def _plan_stopped(draft: Draft, batch: Batch, status: BatchStatus) -> None:
    if status in MOVING:
        draft.act(
            ExchangeAction(
                "Stop-MigrationBatch",
                (("Identity", batch.name),),
                batch_object(batch),
                f"{status.value} -> stopped",
            )
        )


def _plan_running(
    draft: Draft, batch: Batch, found: ObservedBatch, status: BatchStatus, context: Context
) -> None:
    """Desired started or completed: start, retry failures, wait for the sync, complete."""
    obj = batch_object(batch)
    if status in (BatchStatus.CREATED, BatchStatus.STOPPED):
        keys = [m.key for m in batch.members]
        fresh = status is BatchStatus.CREATED  # a stopped batch resumes: its synced members have mailboxes
        if preflight.gate(draft, batch, keys, context, fresh=fresh, start=True):
            draft.act(
                ExchangeAction(
                    "Start-MigrationBatch",
                    (("Identity", batch.name),),
                    obj,
                    f"{status.value} -> {batch.state.value}",
                )
            )
        return
    if status in MOVING:
        then = "complete when Synced" if batch.state is BatchState.COMPLETED else "started"
        draft.wait(obj, f"{status.value} ({progress(found)}); {then}")
        return
    if status in RETRYABLE and retry.plan_retry(draft, batch, found, status, context):
        return
    if status is BatchStatus.FAILED:
        draft.block(
            obj,
            "failed",
            "Exchange reports the batch Failed with no failed users to retry; "
            "look at the batch report in Exchange",
        )
        return
    if batch.state is BatchState.COMPLETED and status in SYNCED:
        if batch.key in {name.lower() for name in draft.memory.completionUnsupported}:
            draft.note(
                obj,
                f"{status.value}: Exchange does not support completing this staged batch, so Synced "
                "counts as complete (exchange-facts §8)",
            )
            return
        failed = f"; {found.FailedCount} failed users stay failed" if found.FailedCount else ""
        draft.act(
            ExchangeAction(
                "Complete-MigrationBatch",
                (("Identity", batch.name),),
                obj,
                f"{status.value} -> completed{failed}",
            )
        )


def _plan_removal(draft: Draft, batch: Batch, status: BatchStatus, context: Context) -> None:
    """The remove-after-cutover gate (contract §4); a batch that never started loses nothing on removal."""
    obj = batch_object(batch)
    if status is BatchStatus.REMOVING:
        draft.wait(obj, "Removing")
        return
    # The gate before Exchange's own wait: a batch that started, still syncing or not, is held by the
    # cutover, and the plan says so rather than "until it settles".
    if status is not BatchStatus.CREATED:
        cutover_at = draft.memory.cutoverAt
        delay = context.desired.policy.remove_after_cutover
        if cutover_at is None:
            draft.block(
                obj,
                "remove-after-cutover",
                "the MX record has not been cut over to Exchange Online yet; "
                "removing the batch would stop mail reaching migrated users",
            )
            return
        if context.now < cutover_at + delay:
            draft.block(
                obj,
                "remove-after-cutover",
                f"removal waits until {at(cutover_at + delay)} ({format_duration(delay)} after the cutover)",
            )
            return
    if status in MOVING or status is BatchStatus.COMPLETING:
        draft.wait(obj, f"{status.value}; Exchange refuses removal until it settles")
        return
    draft.act(
        ExchangeAction(
            "Remove-MigrationBatch", (("Identity", batch.name),), obj, f"{status.value} -> removed"
        )
    )
