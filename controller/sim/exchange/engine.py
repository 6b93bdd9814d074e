"""The simulator's migration engine: the virtual clock, sync slots per endpoint and derived batch status.

Event-driven: `advance_to` jumps from one event (a sync ending, a StartAfter passing, a Stopping,
Completing or Removing batch settling) to the next, so advancing days costs as much as the events in it.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.sim.exchange import state as s

RECIPIENT_NOT_FOUND = (
    'Error: MigrationRecipientNotFoundException: A recipient wasn\'t found for "{addr}" on the target. '
    "Create a recipient of the appropriate type for this migration on the target and try again."
)
DUPLICATE_IN_OTHER_BATCH = (
    'Error: UserDuplicateInOtherBatchException: The user "{addr}" is already included in migration batch '
    '"{batch}." Please remove the user from any other batch and try again.'
)

# Per-user failures as Exchange shows them (exchange-facts §9.0 and §9.1, by row), for `sim fail --row`:
# (exception type, message) shown as `Error: <type>: <message>`, or with `whole` the quoted text as it
# stands (rows 1.9 and 1.10 quote one of another shape; the type is then the FailureType). `{addr}` is the
# user's address. Assumptions where the facts give no type or no text: 1.4 is wrapped in
# MigrationPermanentException (the base of the permanent errors, C); 1.8's and 1.16's messages are the
# rows' quoted cause, not a quoted error text; 1.3's type is the C class the row names.
DOCUMENTED_FAILURES: dict[str, tuple[str, str, bool]] = {
    "1.1": ("MigrationRecipientNotFoundException", RECIPIENT_NOT_FOUND.split(": ", 2)[2], False),
    "1.3": (
        "SourceRecipientDoesNotExistException",
        "A source e-mail address {addr} couldn't be found in the on-premises domain.",
        False,
    ),
    "1.4": (
        "MigrationPermanentException",
        "Microsoft Exchange couldn't sign in to the user's on-premises account.",
        False,
    ),
    "1.7": (
        "UserAlreadyBeingMigratedException",
        "The user '{addr}' already has a pending request. Please remove the existing request and resume the "
        "current batch or start a new batch for this user. --> Name must be unique per owning mailbox.",
        False,
    ),
    "1.8": (
        "TooManyBadItemsPermanentException",
        "The number of bad items is greater than the set limit.",
        False,
    ),
    "1.9": (
        "TooManyLargeItemsPermanentException",
        "Error: This mailbox exceeded the maximum number of large items that were specified for this "
        "request. --> MapiExceptionMaxSubmissionExceeded: Unable to save changes.",
        True,
    ),
    "1.10": (
        "QuotaExceededException",
        "Error: QuotaExceededException/MapiExceptionShutoffQuotaExceeded: Unable to get properties on "
        "object.",
        True,
    ),
    "1.13": (
        "SyncTimeoutException",
        "Email migration failed for this user because no email could be downloaded for 5 hours, 0 minutes.",
        False,
    ),
    "1.16": ("MigrationTransientException", "The source server did not respond.", False),
}


def documented_failure(row: str, address: str) -> tuple[str, str, str]:
    """The (type, message, ErrorSummary) of a catalogue row for `address`; KeyError for another row."""
    kind, text, whole = DOCUMENTED_FAILURES[row]
    text = text.replace("{addr}", address)
    return kind, text, text if whole else f"Error: {kind}: {text}"


def batch_status(batch: s.Batch) -> s.BatchStatus:
    """The Status Get-MigrationBatch shows, from the batch's phase and its users."""
    phase = batch.phase
    fixed = {
        s.BatchPhase.CREATED: s.BatchStatus.CREATED,
        s.BatchPhase.WAITING: s.BatchStatus.WAITING,
        s.BatchPhase.STOPPING: s.BatchStatus.STOPPING,
        s.BatchPhase.STOPPED: s.BatchStatus.STOPPED,
        s.BatchPhase.REMOVING: s.BatchStatus.REMOVING,
        s.BatchPhase.COMPLETING: s.BatchStatus.COMPLETING,
    }
    if phase in fixed:
        return fixed[phase]
    summary = batch.users.summary()
    moving = summary.moving > 0
    failed = summary.count([s.UserStatus.FAILED])
    if phase == s.BatchPhase.COMPLETED:
        # Start-MigrationBatch retries failed users of a completed batch: they complete as they sync.
        if moving:
            return s.BatchStatus.COMPLETING
        return s.BatchStatus.COMPLETED_WITH_ERRORS if failed else s.BatchStatus.COMPLETED
    if moving:
        return s.BatchStatus.SYNCING
    if failed and failed == summary.total:
        return s.BatchStatus.FAILED
    return s.BatchStatus.SYNCED_WITH_ERRORS if failed else s.BatchStatus.SYNCED


def admit(state: s.SimState, batch: s.Batch, address: str) -> None:
    """Check one user as the service does when its batch starts, then queue it or fail it."""
    user = batch.users[address]
    recipient = state.recipients.get(address)
    owner = s.user_owner(state, address, besides=s.key(batch.name))
    user.due = None
    if owner is not None:
        user.status, user.duplicate = s.UserStatus.FAILED, True
        user.error = DUPLICATE_IN_OTHER_BATCH.format(addr=user.identity, batch=owner)
    elif recipient is None or recipient.type not in s.MIGRATABLE:
        user.status, user.duplicate = s.UserStatus.FAILED, False
        user.error = RECIPIENT_NOT_FOUND.format(addr=user.identity)
    else:
        user.status, user.duplicate, user.error = s.UserStatus.QUEUED, False, ""
        user.seq = state.next_seq
        state.next_seq += 1


def mark_duplicates(state: s.SimState, batch: s.Batch, addresses: list[str]) -> None:
    """A member another batch already holds fails at once, per user (row 1.6), even before a start."""
    for address in addresses:
        owner = s.user_owner(state, address, besides=s.key(batch.name))
        if owner is not None:
            user = batch.users[address]
            user.status, user.duplicate = s.UserStatus.FAILED, True
            user.error = DUPLICATE_IN_OTHER_BATCH.format(addr=user.identity, batch=owner)


def _syncs(phase: s.BatchPhase) -> bool:
    return phase in (s.BatchPhase.RUNNING, s.BatchPhase.COMPLETED)


def _finish_sync(state: s.SimState, batch: s.Batch, address: str, at: datetime) -> None:
    user = batch.users[address]
    user.due = None
    failure = state.failures.get(address)
    if failure is not None:
        user.status = s.UserStatus.FAILED
        user.error = failure.summary or f"Error: {failure.type}: {failure.message}"
        if failure.remaining is not None:
            failure.remaining -= 1
            if failure.remaining <= 0:
                del state.failures[address]
        return
    user.status = s.UserStatus.COMPLETED if batch.phase == s.BatchPhase.COMPLETED else s.UserStatus.SYNCED
    user.error, user.last_sync = "", at
    recipient = state.recipients.get(address)
    if recipient is not None:
        # exchange-facts §6: the initial sync converts the mail user to a mailbox.
        recipient.type = s.RecipientType.USER_MAILBOX


def _settle_batch(state: s.SimState, batch_key: str, at: datetime) -> None:
    batch = state.batches[batch_key]
    if batch.phase == s.BatchPhase.WAITING:
        batch.phase = s.BatchPhase.RUNNING
        return
    batch.transition_at = None
    if batch.phase == s.BatchPhase.STOPPING:
        batch.phase = s.BatchPhase.STOPPED
    elif batch.phase == s.BatchPhase.COMPLETING:
        batch.phase = s.BatchPhase.COMPLETED
        for user in batch.users.values():
            if user.status in (s.UserStatus.COMPLETING, s.UserStatus.SYNCED):
                user.status = s.UserStatus.COMPLETED
    elif batch.phase == s.BatchPhase.REMOVING:
        del state.batches[batch_key]


def _batch_event(batch: s.Batch) -> datetime | None:
    if batch.phase == s.BatchPhase.WAITING:
        return batch.start_after
    return batch.transition_at


@dataclass(frozen=True, slots=True)
class Advanced:
    """What an advance looked at: the batches in motion, and how many of their users it scanned."""

    batches: tuple[str, ...]
    users_scanned: int


def advance_to(state: s.SimState, target: datetime) -> Advanced:
    """Run the migration until `target` (not before now): fill sync slots, end syncs, settle batches.

    Only batches in motion take part: with a queued or syncing user, or an event pending (a StartAfter,
    the end of Stopping, Completing or Removing). Nothing else changes as time passes.
    """
    target = max(target, state.now)
    active = {
        key: batch
        for key, batch in state.batches.items()
        if _batch_event(batch) is not None or batch.users.summary().moving
    }
    schedule = _Schedule(state, active)
    while True:
        schedule.fill()
        candidates = [t for b in active.values() if (t := _batch_event(b)) is not None]
        if schedule.syncing:
            candidates.append(schedule.syncing[0][0])
        if not candidates or min(candidates) > target:
            break
        at = max(min(candidates), state.now)
        state.now = at
        while schedule.syncing and schedule.syncing[0][0] <= at:
            due, batch_key, address = heapq.heappop(schedule.syncing)
            batch = state.batches.get(batch_key)
            user = batch.users.get(address) if batch else None
            if batch is None or user is None or user.status != s.UserStatus.SYNCING or user.due != due:
                continue  # removed or stopped since it started
            schedule.busy[s.key(batch.endpoint)] -= 1
            _finish_sync(state, batch, address, due)
        for batch_key in [k for k, b in active.items() if (t := _batch_event(b)) and t <= at]:
            _settle_batch(state, batch_key, at)
            if batch_key in state.batches:
                schedule.enqueue(batch_key)
            else:
                del active[batch_key]
    state.now = target
    return Advanced(batches=tuple(active), users_scanned=schedule.scanned)


class _Schedule:
    """Syncing users by end time and queued users by arrival, per endpoint, built once per advance from
    the batches in motion."""

    def __init__(self, state: s.SimState, active: dict[str, s.Batch]) -> None:
        self.state = state
        self.syncing: list[tuple[datetime, str, str]] = []
        self.busy: dict[str, int] = {}
        self.queues: dict[str, list[tuple[int, str, str]]] = {}
        self.scanned = 0
        for batch_key, batch in active.items():
            if not batch.users.summary().moving:
                continue  # a pending event only: it joins the queues when it settles
            endpoint = s.key(batch.endpoint)
            self.scanned += len(batch.users)
            for address, user in batch.users.items():
                if user.status == s.UserStatus.SYNCING and user.due is not None:
                    self.syncing.append((user.due, batch_key, address))
                    self.busy[endpoint] = self.busy.get(endpoint, 0) + 1
            self.enqueue(batch_key)
        heapq.heapify(self.syncing)

    def enqueue(self, batch_key: str) -> None:
        """Queue the batch's Queued users if the batch syncs now (a Waiting batch joins when it starts)."""
        batch = self.state.batches[batch_key]
        if not _syncs(batch.phase) or not batch.users.summary().count([s.UserStatus.QUEUED]):
            return
        queue = self.queues.setdefault(s.key(batch.endpoint), [])
        self.scanned += len(batch.users)
        for address, user in batch.users.items():
            if user.status == s.UserStatus.QUEUED:
                heapq.heappush(queue, (user.seq, batch_key, address))

    def fill(self) -> None:
        """Start queued users where their endpoint has a free slot (MaxConcurrentMigrations)."""
        state = self.state
        for endpoint_key, queue in self.queues.items():
            endpoint = state.endpoints.get(endpoint_key)
            limit = endpoint.max_concurrent if endpoint else s.DEFAULT_MAX_CONCURRENT
            while queue and self.busy.get(endpoint_key, 0) < limit:
                _, batch_key, address = heapq.heappop(queue)
                batch = state.batches.get(batch_key)
                user = batch.users.get(address) if batch else None
                if user is None or user.status != s.UserStatus.QUEUED:
                    continue  # an entry made stale by a settled batch
                seconds = state.sync_seconds.get(address, state.sync_seconds_default)
                user.status, user.due = s.UserStatus.SYNCING, state.now + timedelta(seconds=seconds)
                heapq.heappush(self.syncing, (user.due, batch_key, address))
                self.busy[endpoint_key] = self.busy.get(endpoint_key, 0) + 1
