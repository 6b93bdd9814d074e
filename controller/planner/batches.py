"""Batches: desired state x observed Status -> the cmdlet that moves each batch forward, or why not. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from controller.desired.models import Batch, BatchState, DesiredState, format_duration
from controller.model.actions import CsvRows, ExchangeAction, ParameterValue
from controller.model.snapshot import ExchangeObserved, ObservedBatch, ObservedUser, RetryCount, at
from controller.model.statuses import (
    COMPLETED,
    FAILED_USER_STATUSES,
    MOVING,
    RECIPIENT_NOT_FOUND,
    RETRYABLE,
    SYNCED,
    BatchStatus,
)
from controller.planner.draft import Draft, listing

# How far along a batch is, to recognise backward transitions (DESIGN §2: states move forward only).
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
_IN_FLIGHT = frozenset(
    {BatchStatus.STARTING, BatchStatus.STOPPING, BatchStatus.COMPLETING, BatchStatus.WAITING}
)


@dataclass(frozen=True, slots=True)
class Context:
    """What every batch decision reads besides the batch itself."""

    desired: DesiredState
    endpoint_problem: str | None  # why New-MigrationBatch cannot run now, None when the endpoint is there
    mail_users: frozenset[str] | None  # None: could not be read
    mailboxes: frozenset[str]  # members already migrated (empty when unknown: the guard then stays silent)
    users: dict[str, dict[str, ObservedUser]] | None  # batch key -> member key -> user; None: unknown
    now: datetime


def plan_batches(
    draft: Draft,
    desired: DesiredState,
    exchange: ExchangeObserved,
    *,
    endpoint_problem: str | None,
    now: datetime,
) -> None:
    if exchange.batches is None:
        for batch in desired.batches:
            draft.block(
                _obj(batch), "unknown", "Exchange batches could not be read; nothing is planned for them"
            )
        return
    observed = {batch.Identity.lower(): batch for batch in exchange.batches}
    context = Context(
        desired=desired,
        endpoint_problem=endpoint_problem,
        mail_users=None if exchange.mailUsers is None else frozenset(a.lower() for a in exchange.mailUsers),
        mailboxes=frozenset(a.lower() for a in exchange.mailboxes or ()),
        users=_users_by_batch(exchange.users),
        now=now,
    )
    for batch in desired.batches:
        found = observed.get(batch.key)
        if found is None:
            _plan_absent(draft, batch, context)
        else:
            _plan_present(draft, batch, found, context)


def _users_by_batch(users: list[ObservedUser] | None) -> dict[str, dict[str, ObservedUser]] | None:
    if users is None:
        return None
    index: dict[str, dict[str, ObservedUser]] = {}
    for user in users:
        index.setdefault(user.BatchId.lower(), {})[user.Identity.lower()] = user
    return index


def _obj(batch: Batch) -> str:
    return f"batch/{batch.name}"


# --- a batch Exchange does not have -----------------------------------------------------------


def _plan_absent(draft: Draft, batch: Batch, context: Context) -> None:
    state = batch.state
    if state is BatchState.REMOVED:
        return
    if state is BatchState.PLANNED:
        _report_readiness(draft, batch, context)
        return
    if context.mailboxes and all(m.key in context.mailboxes for m in batch.members):
        draft.block(
            _obj(batch),
            "transitions",
            "every member already has a mailbox in Exchange Online, so a new "
            "batch would migrate nobody (was it completed and then removed by "
            "Exchange's retention?); set state: removed",
        )
        return
    if context.endpoint_problem:
        draft.block(_obj(batch), "endpoint", f"cannot create the batch: {context.endpoint_problem}")
        return
    start = state in (BatchState.STARTED, BatchState.COMPLETED)
    if start and not _members_ready(draft, batch, [m.key for m in batch.members], context):
        return
    parameters: list[tuple[str, ParameterValue]] = [
        ("Name", batch.name),
        ("SourceEndpoint", context.desired.migration.endpoint.name),
        ("CSVData", CsvRows(tuple(m.address for m in batch.members))),
    ]
    if start:
        parameters.append(("AutoStart", True))
    parameters += _settings(batch, context.desired)
    note = {
        BatchState.STOPPED: " (created, not started)",
        BatchState.COMPLETED: " (start first, complete when Synced)",
    }
    draft.act(
        ExchangeAction(
            "New-MigrationBatch",
            tuple(parameters),
            _obj(batch),
            f"planned -> {state.value}{note.get(state, '')}",
        )
    )


def _settings(batch: Batch, desired: DesiredState) -> list[tuple[str, ParameterValue]]:
    settings: list[tuple[str, ParameterValue]] = []
    if desired.migration.notification_emails:
        settings.append(("NotificationEmails", tuple(desired.migration.notification_emails)))
    if batch.start_after is not None:
        settings.append(("StartAfter", batch.start_after))
    if batch.complete_after is not None:
        settings.append(("CompleteAfter", batch.complete_after))
    return settings


def _report_readiness(draft: Draft, batch: Batch, context: Context) -> None:
    if context.mail_users is None:
        draft.note(_obj(batch), "planned; readiness unknown: Exchange recipients could not be read")
        return
    missing = [m.address for m in batch.members if m.key not in context.mail_users]
    if missing:
        draft.note(
            _obj(batch),
            f"planned; not ready: {len(missing)} of {len(batch.members)} members are not "
            f"mail users in Exchange Online yet: {listing(missing)}",
        )
    else:
        draft.note(_obj(batch), f"planned; ready: all {len(batch.members)} members are mail users")


def _members_ready(draft: Draft, batch: Batch, keys: list[str], context: Context) -> bool:
    """The mail-users gate (DESIGN §4): every member to start must exist in Exchange Online."""
    if context.mail_users is None:
        draft.block(
            _obj(batch), "mail-users", "Exchange recipients could not be read, so readiness is unknown"
        )
        return False
    by_key = {m.key: m.address for m in batch.members}
    missing = [by_key[key] for key in keys if key not in context.mail_users]
    if missing:
        draft.block(
            _obj(batch),
            "mail-users",
            f"{len(missing)} members are not mail users in Exchange Online "
            f"(directory sync?): {listing(missing)}",
        )
        return False
    return True


# --- a batch Exchange has ---------------------------------------------------------------------


def _plan_present(draft: Draft, batch: Batch, found: ObservedBatch, context: Context) -> None:
    status = BatchStatus.parse(found.Status)
    obj = _obj(batch)
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
        _plan_removal(draft, batch, found, status, context)
        return
    if _OBSERVED_RANK[status] > _DESIRED_RANK[state] and not (
        status in COMPLETED and state is BatchState.STARTED and _failed_users(batch, found, context)
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
    _plan_settings(draft, batch, found, context)
    membership_ok = _plan_membership(draft, batch, found, status, context)
    if status in _IN_FLIGHT:
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


def _progress(found: ObservedBatch) -> str:
    failed = f", {found.FailedCount} failed" if found.FailedCount else ""
    return f"{found.SyncedCount}/{found.TotalCount} synced{failed}"


def _plan_stopped(draft: Draft, batch: Batch, status: BatchStatus) -> None:
    if status in MOVING:
        draft.act(
            ExchangeAction(
                "Stop-MigrationBatch", (("Identity", batch.name),), _obj(batch), f"{status.value} -> stopped"
            )
        )


def _plan_running(
    draft: Draft, batch: Batch, found: ObservedBatch, status: BatchStatus, context: Context
) -> None:
    """Desired started or completed: start, retry failures, wait for the sync, complete."""
    obj = _obj(batch)
    if status in (BatchStatus.CREATED, BatchStatus.STOPPED):
        if _members_ready(draft, batch, [m.key for m in batch.members], context):
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
        draft.wait(obj, f"{status.value} ({_progress(found)}); {then}")
        return
    if status in RETRYABLE and _plan_retry(draft, batch, found, status, context):
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
                "counts as complete (EXCHANGE-FACTS §8)",
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


def _failed_users(batch: Batch, found: ObservedBatch, context: Context) -> list[ObservedUser]:
    if context.users is None:
        return []
    return [u for u in context.users.get(batch.key, {}).values() if u.Status.lower() in FAILED_USER_STATUSES]


def _plan_retry(
    draft: Draft, batch: Batch, found: ObservedBatch, status: BatchStatus, context: Context
) -> bool:
    """Start-MigrationBatch retries failed users, up to `retryFailed` times a revision; True if handled."""
    failed = _failed_users(batch, found, context)
    if not failed and not found.FailedCount:
        return False
    obj = _obj(batch)
    errors = listing([f"{u.Identity} ({u.ErrorSummary or u.Status})" for u in failed], limit=3)
    not_mail_users = [u.Identity for u in failed if RECIPIENT_NOT_FOUND in u.ErrorSummary]
    if not_mail_users and context.mail_users is not None:
        not_mail_users = [a for a in not_mail_users if a.lower() not in context.mail_users]
    if not_mail_users:
        draft.block(
            obj,
            "mail-users",
            f"{len(not_mail_users)} failed members are not mail users in Exchange "
            f"Online, so a retry cannot help: {listing(not_mail_users)}",
        )
        return True
    revision = context.desired.revision
    previous = draft.memory.retries.get(batch.key)
    count = previous.count if previous is not None and previous.revision == revision else 0
    limit = context.desired.policy.retry_failed
    if count >= limit:
        if batch.state is BatchState.COMPLETED and status in SYNCED:
            return False  # retries spent: complete with the failures reported
        if batch.state is BatchState.COMPLETED and status in COMPLETED:
            draft.note(
                obj,
                f"{status.value}: where the repository wants it; {found.FailedCount or len(failed)} "
                f"users stay failed after {count} retries at this revision: {errors}",
            )
            return True
        draft.block(
            obj,
            "retry-limit",
            f"{status.value} with {found.FailedCount or len(failed)} failed users after "
            f"{count} retries at this revision: {errors}",
        )
        return True
    draft.act(
        ExchangeAction(
            "Start-MigrationBatch",
            (("Identity", batch.name),),
            obj,
            f"retry {found.FailedCount or len(failed)} failed users ({count + 1}/{limit}): {errors}",
        )
    )
    draft.remember(
        retries={**draft.memory.retries, batch.key: RetryCount(revision=revision, count=count + 1)}
    )
    return True


def _plan_settings(draft: Draft, batch: Batch, found: ObservedBatch, context: Context) -> None:
    """One Set-MigrationBatch with only the settings that differ from what Exchange shows."""
    changes: list[tuple[str, ParameterValue]] = []
    emails = context.desired.migration.notification_emails
    if found.NotificationEmails is not None and {e.lower() for e in emails} != {
        e.lower() for e in found.NotificationEmails
    }:
        changes.append(("NotificationEmails", tuple(emails)))
    if batch.start_after is not None and found.StartAfterUTC != batch.start_after:
        changes.append(("StartAfter", batch.start_after))
    if batch.complete_after is not None and found.CompleteAfterUTC != batch.complete_after:
        changes.append(("CompleteAfter", batch.complete_after))
    if changes:
        names = ", ".join(name for name, _ in changes)
        draft.act(
            ExchangeAction(
                "Set-MigrationBatch",
                (("Identity", batch.name), *changes),
                _obj(batch),
                f"settings differ: {names}",
            )
        )


def _plan_membership(
    draft: Draft, batch: Batch, found: ObservedBatch, status: BatchStatus, context: Context
) -> bool:
    """Members added -> one -AddUsers with only the new rows; removed -> Remove-MigrationUser each.

    Returns False when membership still has to change before the batch may move on.
    """
    obj = _obj(batch)
    if context.users is None:
        draft.note(obj, "migration users could not be read; membership changes wait for the next pass")
        return True
    if batch.key not in context.users and status in COMPLETED:
        # DESIGN §3: users are read only for batches that are not finished, so none listed for a
        # Completed batch is unknown, not an empty batch whose every member was "added".
        return True
    current = context.users.get(batch.key, {})
    wanted = {m.key: m for m in batch.members}
    added = [m for key, m in wanted.items() if key not in current]
    gone = [u for key, u in current.items() if key not in wanted]
    if not added and not gone:
        return True
    if status in COMPLETED or status is BatchStatus.COMPLETING:
        draft.block(
            obj,
            "transitions",
            f"membership changed ({len(added)} added, {len(gone)} removed) but the "
            f"batch is {status.value}; start a new batch for them",
        )
        return True
    for user in gone:
        draft.act(
            ExchangeAction(
                "Remove-MigrationUser",
                (("Identity", user.Identity),),
                obj,
                f"{user.Identity} left the batch in the repository",
            )
        )
    if not added:
        return True
    if status in MOVING or status in _IN_FLIGHT:
        draft.wait(
            obj,
            f"{status.value} ({_progress(found)}); {len(added)} new members are added once it ends "
            "(Exchange refuses -AddUsers while a batch syncs)",
        )
        return False
    starting = batch.state in (BatchState.STARTED, BatchState.COMPLETED)
    if starting and not _members_ready(draft, batch, [m.key for m in added], context):
        return False
    draft.act(
        ExchangeAction(
            "Set-MigrationBatch",
            (
                ("Identity", batch.name),
                ("AddUsers", True),
                ("CSVData", CsvRows(tuple(m.address for m in added))),
            ),
            obj,
            f"{len(added)} members added in the repository: {listing([m.address for m in added])}",
        )
    )
    return False


def _plan_removal(
    draft: Draft, batch: Batch, found: ObservedBatch, status: BatchStatus, context: Context
) -> None:
    """The remove-after-cutover gate (DESIGN §4); a batch that never started loses nothing on removal."""
    obj = _obj(batch)
    if status is BatchStatus.REMOVING:
        draft.wait(obj, "Removing")
        return
    if status in MOVING or status is BatchStatus.COMPLETING:
        draft.wait(obj, f"{status.value}; Exchange refuses removal until it settles")
        return
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
    draft.act(
        ExchangeAction(
            "Remove-MigrationBatch", (("Identity", batch.name),), obj, f"{status.value} -> removed"
        )
    )
