"""Failed users, matched to the error catalogue (exchange-facts §9) and retried as it documents. Pure.

Start-MigrationBatch retries every failed user of a batch ("can be run at any time to retry failed
users", §9.0). Per failed member, by the catalogue's retry rule:

- a retry helps (auto, retry) or the error is not in the catalogue: retried up to `retryFailed` times
  a revision, then reported (gate retry-limit);
- fix first: never retried blindly. Held (gate fix-first) naming the member, the error and the fix,
  until the fix is observable (a missing mail user exists: gate mail-users) or the repository asks for
  the retry with a new value of the batch's `spec.retry` (one Start-MigrationBatch per value);
- a retry does not help: never retried, reported with the fix (gate no-retry).

Every failed member is also on the plan's `failures`, with its catalogue row, fix and what the plan does.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from controller.desired.models import Batch, BatchState
from controller.model import catalogue
from controller.model.actions import ExchangeAction, Failure
from controller.model.catalogue import Entry, Retry
from controller.model.snapshot import ObservedBatch, ObservedUser, RetryCount
from controller.model.statuses import (
    COMPLETED,
    FAILED_USER_STATUSES,
    RETRYABLE,
    SYNCED,
    BatchStatus,
)
from controller.planner.batches.context import Context, batch_object
from controller.planner.draft import Draft, listing

ERROR_SHOWN = 300  # characters of an ErrorSummary kept on the plan
_MAIL_USER_ROWS = frozenset({"1.1", "1.2"})  # fixed when the mail user exists in Exchange Online


class Kind(Enum):
    RETRY = "retry"  # Start-MigrationBatch may help now
    FIX_FIRST = "fix-first"  # only after a fix
    NEVER = "never"  # a retry does not help


@dataclass(frozen=True, slots=True)
class Failed:
    user: ObservedUser
    entry: Entry | None
    kind: Kind
    missing_mail_user: bool = False  # rows 1.1/1.2 with the mail user known to be absent


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


def classify(batch: Batch, context: Context) -> list[Failed]:
    """Each failed member with its catalogue row and what a retry can do for it now."""
    users = failed_users(batch, context)
    suspects = [u.Identity.lower() for u in users]
    unchecked = set(context.unchecked(suspects))
    out = []
    for user in users:
        entry = catalogue.match(user.ErrorSummary)
        if entry is None or entry.retry.helps:
            out.append(Failed(user, entry, Kind.RETRY))
        elif entry.id in _MAIL_USER_ROWS:
            # The fix is observable: a retry helps once the mail user exists (or cannot be told absent).
            key = user.Identity.lower()
            absent = context.mail_users is None or (key not in context.mail_users and key not in unchecked)
            out.append(
                Failed(user, entry, Kind.FIX_FIRST if absent else Kind.RETRY, missing_mail_user=absent)
            )
        elif entry.retry is Retry.FIX_THEN_RETRY:
            out.append(Failed(user, entry, Kind.FIX_FIRST))
        else:
            out.append(Failed(user, entry, Kind.NEVER))
    return out


def _users_read(batch: Batch, context: Context) -> bool:
    """Whether the batch's users were read; when not (a finished batch), only FailedCount is known."""
    return context.read_users_of(batch)


def _named(failed: list[Failed]) -> str:
    return listing([f"{f.user.Identity} [{f.entry.id if f.entry else '?'}]" for f in failed], limit=3)


def _errors(failed: list[Failed]) -> str:
    return listing(
        [
            f"{f.user.Identity} ({f.user.ErrorSummary or f.user.Status}) "
            f"[{f.entry.id if f.entry else catalogue.UNKNOWN}]"
            for f in failed
        ],
        limit=3,
    )


def _fixes(failed: list[Failed]) -> str:
    entries = list({f.entry.id: f.entry for f in failed if f.entry is not None}.values())
    return " ".join(f"Fix {e.id}: {e.fix}" for e in entries[:2])


def plan_retry(
    draft: Draft, batch: Batch, found: ObservedBatch, status: BatchStatus, context: Context
) -> bool:
    """Retry failed users as the catalogue says (module docstring); True if the batch is handled."""
    if not _users_read(batch, context):
        if found.FailedCount:  # which failed users are still members is unknown: no retry on a guess
            draft.note(
                batch_object(batch),
                f"{found.FailedCount} failed users; retry waits until the migration users can be read",
            )
            return True
        return False
    failed = classify(batch, context)
    if not failed:
        return False  # FailedCount may count members removed in the repository
    obj = batch_object(batch)
    not_mail_users = [f.user.Identity for f in failed if f.missing_mail_user]
    if not_mail_users:
        draft.block(
            obj,
            "mail-users",
            f"{len(not_mail_users)} failed members are not mail users in Exchange "
            f"Online, so a retry cannot help: {listing(not_mail_users)}",
        )
        return True
    retried = [f for f in failed if f.kind is Kind.RETRY]
    fix_first = [f for f in failed if f.kind is Kind.FIX_FIRST]
    revision = context.desired.revision
    previous = draft.memory.retries.get(batch.key)
    held_at = previous.fixFirst if previous is not None else None
    token = batch.retry or ""
    if fix_first and held_at is not None and held_at != token:
        _start(
            draft,
            batch,
            f"retry {len(failed)} failed users: spec.retry is now {token or '(unset)'!r}, "
            f"so the fix is made: {_errors(fix_first)}",
            RetryCount(
                revision=previous.revision if previous else revision,
                count=previous.count if previous else 0,
                fixFirst=token,
            ),
        )
        return True
    count = previous.count if previous is not None and previous.revision == revision else 0
    limit = context.desired.policy.retry_failed
    if retried and count < limit:
        _start(
            draft,
            batch,
            f"retry {len(retried)} failed users ({count + 1}/{limit}): {_errors(retried)}",
            RetryCount(revision=revision, count=count + 1, fixFirst=held_at),
        )
        return True
    completing = (
        batch.state is BatchState.COMPLETED
        and status in SYNCED
        and batch.key not in {name.lower() for name in draft.memory.completionUnsupported}
    )
    if fix_first:
        if completing:
            return False  # complete with the failures reported: the retry after the fix works from there
        draft.block(
            obj,
            "fix-first",
            f"{status.value}: {len(fix_first)} failed members need a fix before a retry can help: "
            f"{_named(fix_first)}. {_fixes(fix_first)} After the fix, change spec.retry in the "
            "repository to retry them (or remove them from the batch)",
        )
        return True
    if retried:
        if batch.state is BatchState.COMPLETED and status in SYNCED:
            return False  # retries spent: complete with the failures reported
        if batch.state is BatchState.COMPLETED and status in COMPLETED:
            draft.note(
                obj,
                f"{status.value}: where the repository wants it; {found.FailedCount or len(failed)} "
                f"users stay failed after {count} retries at this revision: {_errors(retried)}",
            )
            return True
        draft.block(
            obj,
            "retry-limit",
            f"{status.value} with {found.FailedCount or len(failed)} failed users after "
            f"{count} retries at this revision: {_errors(retried)}",
        )
        return True
    never = [f for f in failed if f.kind is Kind.NEVER]
    if batch.state is BatchState.COMPLETED and status in SYNCED:
        return False
    if batch.state is BatchState.COMPLETED and status in COMPLETED:
        draft.note(obj, f"{status.value}: {len(never)} failed members a retry cannot help: {_named(never)}")
        return True
    draft.block(
        obj,
        "no-retry",
        f"{status.value}: {len(never)} failed members a retry cannot help: {_named(never)}. "
        f"{_fixes(never)} Remove them from the batch when that is done",
    )
    return True


def _start(draft: Draft, batch: Batch, reason: str, retries: RetryCount) -> None:
    draft.act(
        ExchangeAction("Start-MigrationBatch", (("Identity", batch.name),), batch_object(batch), reason)
    )
    draft.remember(retries={**draft.memory.retries, batch.key: retries})


def report(draft: Draft, batch: Batch, found: ObservedBatch, context: Context) -> None:
    """The batch's failed members on the plan, with the catalogue's fix and what this plan does; and the
    memory of fix-first failures: noted at the batch's `spec.retry` when first seen, forgotten when none
    is left (a later one is held again)."""
    if not _users_read(batch, context):
        return
    failed = classify(batch, context)
    previous = draft.memory.retries.get(batch.key)
    held = any(f.kind is Kind.FIX_FIRST and not f.missing_mail_user for f in failed)  # its fix observed
    if held and (previous is None or previous.fixFirst is None):
        noted = RetryCount(
            revision=previous.revision if previous else context.desired.revision,
            count=previous.count if previous else 0,
            fixFirst=batch.retry or "",
        )
        draft.remember(retries={**draft.memory.retries, batch.key: noted})
    elif not held and previous is not None and previous.fixFirst is not None:
        draft.remember(
            retries={**draft.memory.retries, batch.key: previous.model_copy(update={"fixFirst": None})}
        )
    if not failed:
        return
    obj = batch_object(batch)
    started = any(
        isinstance(a, ExchangeAction) and a.object == obj and a.cmdlet == "Start-MigrationBatch"
        for a in draft.actions
    )
    status = BatchStatus.parse(found.Status)
    spent = draft.memory.retries.get(batch.key)
    limit = context.desired.policy.retry_failed
    for f in failed:
        draft.failures.append(
            Failure(
                batch=batch.name,
                address=f.user.Identity,
                status=f.user.Status,
                error=shown_error(f.user.ErrorSummary),
                catalogue=f.entry.id if f.entry else None,
                fix=f.entry.fix if f.entry else f"{catalogue.UNKNOWN}; read the error in Exchange",
                retry=f.entry.retry.label if f.entry else f"unknown: retried up to {limit} times",
                handling=_handling(
                    f,
                    started=started,
                    status=status,
                    spent=spent,
                    revision=context.desired.revision,
                    limit=limit,
                ),
            )
        )


def _handling(
    failed: Failed,
    *,
    started: bool,
    status: BatchStatus | None,
    spent: RetryCount | None,
    revision: str,
    limit: int,
) -> str:
    if started:
        return "Start-MigrationBatch retries it in this plan"
    if failed.missing_mail_user:
        return "held until the mail user exists in Exchange Online (directory sync)"
    if failed.kind is Kind.FIX_FIRST:
        return "held until fixed; then change spec.retry in the repository to retry it"
    if failed.kind is Kind.NEVER:
        return "never retried: a retry does not help"
    if status not in RETRYABLE:
        return f"retried when the batch settles (Exchange shows {status.value if status else 'unknown'})"
    count = spent.count if spent is not None and spent.revision == revision else 0
    if count >= limit:
        return f"retries spent ({count}/{limit} at this revision)"
    return "not retried in this plan (see blocked)"


def shown_error(summary: str) -> str:
    """The ErrorSummary on one line, at most ERROR_SHOWN characters."""
    text = " ".join(summary.split()) or "(no ErrorSummary)"
    return text if len(text) <= ERROR_SHOWN else text[: ERROR_SHOWN - 1] + "…"
