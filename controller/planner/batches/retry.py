"""Failed users: retried by Start-MigrationBatch up to `retryFailed` times a revision, then reported. Pure."""

from __future__ import annotations

from controller.desired.models import Batch, BatchState
from controller.model.actions import ExchangeAction
from controller.model.snapshot import ObservedBatch, ObservedUser, RetryCount
from controller.model.statuses import (
    COMPLETED,
    FAILED_USER_STATUSES,
    RECIPIENT_NOT_FOUND,
    SYNCED,
    BatchStatus,
)
from controller.planner.batches.context import Context, batch_object
from controller.planner.draft import Draft, listing


def failed_users(batch: Batch, context: Context) -> list[ObservedUser]:
    """Failed users who are still members in the repository: one removed there is never retried."""
    if context.users is None:
        return []
    members = {m.key for m in batch.members}
    return [
        u
        for key, u in context.users.get(batch.key, {}).items()
        if key in members and u.Status.lower() in FAILED_USER_STATUSES
    ]


def _users_read(batch: Batch, context: Context) -> bool:
    """Whether the batch's users were read; when not (a finished batch), only FailedCount is known."""
    return context.read_users_of(batch)


def plan_retry(
    draft: Draft, batch: Batch, found: ObservedBatch, status: BatchStatus, context: Context
) -> bool:
    """Start-MigrationBatch retries failed users, up to `retryFailed` times a revision; True if handled."""
    if not _users_read(batch, context):
        if found.FailedCount:  # which failed users are still members is unknown: no retry on a guess
            draft.note(
                batch_object(batch),
                f"{found.FailedCount} failed users; retry waits until the migration users can be read",
            )
            return True
        return False
    failed = failed_users(batch, context)
    if not failed:
        return False  # FailedCount may count members removed in the repository
    obj = batch_object(batch)
    errors = listing([f"{u.Identity} ({u.ErrorSummary or u.Status})" for u in failed], limit=3)
    not_mail_users = [u.Identity for u in failed if RECIPIENT_NOT_FOUND in u.ErrorSummary]
    if not_mail_users and context.mail_users is not None:
        unchecked = set(context.unchecked(a.lower() for a in not_mail_users))
        not_mail_users = [
            a for a in not_mail_users if a.lower() not in context.mail_users and a.lower() not in unchecked
        ]
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
            f"retry {len(failed) or found.FailedCount} failed users ({count + 1}/{limit}): {errors}",
        )
    )
    draft.remember(
        retries={**draft.memory.retries, batch.key: RetryCount(revision=revision, count=count + 1)}
    )
    return True
