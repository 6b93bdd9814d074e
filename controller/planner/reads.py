"""What a pass must read from Exchange, from the desired state, memory and what was read so far. Pure.

Observation is proportional to unfinished work (contract §3.1, docs/observation.md): the batch list is
read whole (one call, a row per batch), migration users only for batches that are not finished, and
recipients only for the addresses a decision needs. A batch is *finished* when it was seen Completed with
every desired member arrived (`Memory.finished`), and stays finished while Exchange shows it Completed
with the same TotalCount and the repository lists the same members; anything else reads it again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from controller.desired.models import Batch, BatchState, DesiredState
from controller.model.snapshot import ExchangeObserved, FinishedBatch, Memory, ObservedBatch, ObservedUser
from controller.model.statuses import (
    ARRIVED_USER_STATUSES,
    COMPLETED,
    FAILED_USER_STATUSES,
    MOVING,
    RECIPIENT_NOT_FOUND,
    SYNCED,
    BatchStatus,
)
from controller.planner.batches.context import UsersByBatch, users_by_batch

NOT_STARTED = frozenset({BatchStatus.CREATED, BatchStatus.STOPPED})
STARTING = (BatchState.STARTED, BatchState.COMPLETED)  # repository states that start a batch
# A batch with failed users is never finished: a retry may still act on it.
FINISHABLE = frozenset({BatchStatus.COMPLETED, BatchStatus.SYNCED})


def done(found: ObservedBatch, memory: Memory) -> bool:
    """Completed, or Synced where Exchange refused to complete the staged batch (exchange-facts §8): the
    statuses in which the cutover gate counts a batch as done, and a batch can be verified finished."""
    status = BatchStatus.parse(found.Status)
    unsupported = {name.lower() for name in memory.completionUnsupported}
    return status in COMPLETED or (status in SYNCED and found.Identity.lower() in unsupported)


def still_finished(batch: Batch, found: ObservedBatch, memory: Memory) -> bool:
    """Whether the batch's users may be skipped: verified before, and nothing a person or the repository
    could have changed since shows a difference: the same status (a retry, a stop, an incremental sync
    failure or a removal changes it), the same TotalCount (a user removed by hand, or added to a Synced
    batch) and the same member list in the repository."""
    known = memory.finished.get(batch.key)
    return (
        known is not None
        and BatchStatus.parse(found.Status) is BatchStatus.parse(known.status)
        and found.TotalCount == known.total
        and known.members == batch.members_digest
        and done(found, memory)
    )


def quietly_syncing(batch: Batch, found: ObservedBatch, memory: Memory) -> bool:
    """A batch still copying mailboxes whose users can change no decision: its membership was read and
    matched the repository at this TotalCount and member list, and none of its users failed. Exchange's
    counts show what would matter (a failure raises FailedCount, a user added or removed by hand changes
    TotalCount, a stop or the end of the sync changes the status), and each reads it again."""
    known = memory.memberships.get(batch.key)
    return (
        known is not None
        and BatchStatus.parse(found.Status) in MOVING
        and found.FailedCount == 0
        and found.TotalCount == known.total
        and known.members == batch.members_digest
    )


def skipped(batch: Batch, found: ObservedBatch, memory: Memory) -> bool:
    """Whether this pass may leave the batch's users unread: finished, or quietly syncing."""
    return still_finished(batch, found, memory) or quietly_syncing(batch, found, memory)


def users_to_read(
    desired: DesiredState, memory: Memory, batches: Iterable[ObservedBatch]
) -> list[ObservedBatch]:
    """The observed batches of the repository whose migration users this pass reads; and, in a pass where
    a batch is about to be created or started or may gain members, those of the batches Exchange has that
    the repository does not name (the preflight's "in no other batch": every other batch's users are then
    known — a finished or quietly syncing batch of the repository holds exactly its repository members,
    which validation keeps out of every other batch)."""
    batches = list(batches)
    wanted = {batch.key: batch for batch in desired.batches}
    starting = bool(about_to_start(desired, batches)) or any(
        _may_add(wanted[found.Identity.lower()], found, memory)
        for found in batches
        if found.Identity.lower() in wanted
    )
    chosen = []
    for found in batches:
        batch = wanted.get(found.Identity.lower())
        if batch is None:
            if starting and BatchStatus.parse(found.Status) is not BatchStatus.REMOVING:
                chosen.append(found)
        elif not skipped(batch, found, memory):
            chosen.append(found)
    return chosen


def _may_add(batch: Batch, found: ObservedBatch, memory: Memory) -> bool:
    """A batch read this pass whose users have not been seen to match the repository's member list (new
    members may be added with -AddUsers, whose preflight needs every other batch's users too)."""
    if skipped(batch, found, memory):
        return False
    known = memory.memberships.get(batch.key)
    return known is None or known.members != batch.members_digest


def about_to_start(desired: DesiredState, batches: Iterable[ObservedBatch]) -> list[Batch]:
    """The repository's batches the preflight checks this pass (contract §4): those Exchange does not have
    that the repository wants created, started or completed, and those Exchange has created or stopped
    that the repository wants started or completed."""
    observed = {b.Identity.lower(): b for b in batches}
    chosen = []
    for batch in desired.batches:
        found = observed.get(batch.key)
        if found is None:
            if batch.state in (BatchState.CREATED, BatchState.STARTED, BatchState.COMPLETED):
                chosen.append(batch)
        elif BatchStatus.parse(found.Status) in NOT_STARTED and batch.state in STARTING:
            chosen.append(batch)
    return chosen


def endpoint_to_test(desired: DesiredState, exchange: ExchangeObserved) -> str | None:
    """The endpoint Test-MigrationServerAvailability checks this pass: the repository's, when Exchange has
    it and a batch is about to start (not merely be created); None otherwise. An endpoint created or
    changed in a pass is verified by New-/Set-MigrationEndpoint themselves (the cmdlet reference: the
    connection is checked unless -SkipVerification), and the next start tests it again."""
    if exchange.batches is None or exchange.endpoints is None:
        return None
    name = desired.migration.endpoint.name
    if not any(e.Identity.lower() == name.lower() for e in exchange.endpoints):
        return None
    starting = [b for b in about_to_start(desired, exchange.batches) if b.state in STARTING]
    return name if starting else None


# What one more call costs, in rows of migration users: a round trip through a real gateway takes a
# second or more (issue 13's measurements), about what 2,000 selected rows take to arrive (assumption).
ROWS_PER_CALL = 2000
# One pipeline's output is held whole by the PSRP client: past this many rows, a read per batch keeps
# each reply (and the controller's peak memory) to one batch's users.
WHOLE_MAX_ROWS = 20_000


def read_whole(unfinished: Sequence[ObservedBatch], batches: Sequence[ObservedBatch]) -> bool:
    """Whether one read of every batch's users costs less than a read per unfinished batch: when the
    finished batches' users it also brings are fewer than the calls it saves are worth (a small tenant,
    or most batches unfinished). The payload stays bounded by the unfinished work either way."""
    if len(unfinished) < 2:
        return False
    total = sum(b.TotalCount for b in batches)
    extra = total - sum(b.TotalCount for b in unfinished)
    return total <= WHOLE_MAX_ROWS and extra <= (len(unfinished) - 1) * ROWS_PER_CALL


def recipients_to_check(desired: DesiredState, exchange: ExchangeObserved, memory: Memory) -> list[str]:
    """The member addresses a decision needs the directory for, given the batches and users read.

    Members of a batch Exchange does not have yet (is each a mail user? has each a mailbox already?) or
    has not started while the repository wants it started, members added to a batch, failed users whose
    error says the mail user is missing, members of a completed batch whose migration user does not
    show them arrived (has the mailbox arrived anyway?) — completed as the cutover gate counts it —, and
    every member of a completed batch whose post-flight has not passed at its member list
    (`Memory.postflight`): is each a UserMailbox now? Once passed, it is not read again.
    """
    if exchange.batches is None:
        return []
    observed = {b.Identity.lower(): b for b in exchange.batches}
    by_batch = users_by_batch(exchange.users) or {}
    needed: dict[str, None] = {}
    for batch in desired.batches:
        if batch.state is BatchState.REMOVED:
            continue
        found = observed.get(batch.key)
        if found is None:
            if batch.state is BatchState.PLANNED and memory.ready.get(batch.key) == batch.members_digest:
                continue  # found ready before, the same members: its start checks them again
            needed.update((m.key, None) for m in batch.members)
            continue
        status = BatchStatus.parse(found.Status)
        if status in NOT_STARTED and batch.state in STARTING:
            needed.update((m.key, None) for m in batch.members)  # the preflight before a start
            continue
        completed = done(found, memory)
        if completed and memory.postflight.get(batch.key) != batch.members_digest:
            needed.update((m.key, None) for m in batch.members)  # the post-flight, once
            continue
        if not exchange.users_read(batch.name):
            continue  # finished: nothing to decide about its members
        users = by_batch.get(batch.key, {})
        for member in batch.members:
            user = users.get(member.key)
            if user is None:
                needed[member.key] = None
                continue
            user_status = user.Status.lower()
            if (user_status in FAILED_USER_STATUSES and RECIPIENT_NOT_FOUND in user.ErrorSummary) or (
                completed and user_status not in ARRIVED_USER_STATUSES
            ):
                needed[member.key] = None
    return list(needed)


def finished_batches(
    desired: DesiredState, exchange: ExchangeObserved, users: UsersByBatch | None, memory: Memory
) -> dict[str, FinishedBatch]:
    """`Memory.finished` after this pass: kept while still finished, added when a batch whose users were
    read is done (Completed, or Synced where completion is refused) with every desired member among them
    arrived, dropped otherwise. `users` is `users_by_batch(exchange.users)`."""

    def verified(batch: Batch, found: ObservedBatch, read: dict[str, ObservedUser]) -> bool:
        status = BatchStatus.parse(found.Status)
        return (
            status in FINISHABLE
            and done(found, memory)
            and all(_arrived(read.get(m.key)) for m in batch.members)
        )

    return _remembered(desired, exchange, users, memory.finished, verified, still_finished, memory)


def memberships(
    desired: DesiredState, exchange: ExchangeObserved, users: UsersByBatch | None, memory: Memory
) -> dict[str, FinishedBatch]:
    """`Memory.memberships` after this pass: a batch whose users were read and are exactly the
    repository's members is recorded; one left unread while quietly syncing keeps its entry; any other
    is dropped."""

    def verified(batch: Batch, found: ObservedBatch, read: dict[str, ObservedUser]) -> bool:
        return batch.member_keys <= read.keys()

    return _remembered(desired, exchange, users, memory.memberships, verified, quietly_syncing, memory)


def _remembered(
    desired: DesiredState,
    exchange: ExchangeObserved,
    users: UsersByBatch | None,
    entries: dict[str, FinishedBatch],
    verified: Callable[[Batch, ObservedBatch, dict[str, ObservedUser]], bool],
    still: Callable[[Batch, ObservedBatch, Memory], bool],
    memory: Memory,
) -> dict[str, FinishedBatch]:
    """The entries after this pass: a batch left unread keeps its entry while `still` holds; one whose
    users were read gets a new entry when they are exactly its members, as many as its TotalCount, and
    `verified` holds; any other is dropped. All are kept when the batch list is unknown."""
    if exchange.batches is None:
        return dict(entries)  # unknown: neither confirmed nor refuted
    observed = {b.Identity.lower(): b for b in exchange.batches}
    kept: dict[str, FinishedBatch] = {}
    for batch in desired.batches:
        found = observed.get(batch.key)
        if found is None:
            continue
        if not exchange.users_read(batch.name):
            if still(batch, found, memory):
                kept[batch.key] = entries[batch.key]
            continue
        read = (users or {}).get(batch.key, {})
        if len(read) == found.TotalCount == len(batch.members) and verified(batch, found, read):
            kept[batch.key] = FinishedBatch(
                members=batch.members_digest, total=found.TotalCount, status=found.Status
            )
    return kept


def _arrived(user: ObservedUser | None) -> bool:
    return user is not None and user.Status.lower() in ARRIVED_USER_STATUSES
