"""The batches-completed gate (contract §4): every batch complete and every member arrived in Exchange
Online before mail is pointed there; a batch left in Exchange unfinished holds it too. Pure."""

from __future__ import annotations

from controller.desired.models import BatchState, DesiredState
from controller.model.snapshot import ExchangeObserved, Memory, ObservedBatch, ObservedUser
from controller.model.statuses import ARRIVED_USER_STATUSES, COMPLETED, SYNCED, BatchStatus
from controller.planner import reads
from controller.planner.draft import Draft, listing


def batches_gate(
    draft: Draft, desired: DesiredState, exchange: ExchangeObserved, *, force: bool
) -> str | None:
    """None when the cutover may go ahead, else why it must wait. `force` lets it go ahead past members
    that have not arrived (and batches left in Exchange), never past a batch the repository wants finished
    that is not; the plan then names who goes without a mailbox."""
    if exchange.batches is None:
        return "Exchange batches could not be read, so completion is unknown"
    memory = draft.memory
    observed = {b.Identity.lower(): b for b in exchange.batches}
    pending: list[str] = []
    done: list[str] = []  # desired batches whose status lets the cutover go
    for batch in desired.batches:
        if batch.state is BatchState.REMOVED:
            continue
        found = observed.get(batch.key)
        if found is not None and _finished(found, memory):
            done.append(batch.key)
        else:
            pending.append(f"{batch.name} is {found.Status if found is not None else 'not created'}")
    if pending:
        return f"not every batch is completed: {listing(pending, limit=3)}"
    wanted = {b.key for b in desired.batches}
    left = [
        f"{b.Identity} is {b.Status} in Exchange but not in the repository (its members have not "
        "arrived; write it with state: removed to let it go)"
        for b in exchange.batches
        if b.Identity.lower() not in wanted and not _finished(b, memory)
    ]
    # A batch verified finished in an earlier pass (its users not read again) has every member arrived.
    verified = {
        b.key
        for b in desired.batches
        if b.key in done
        and exchange.users is not None
        and not exchange.users_read(b.name)
        and reads.still_finished(b, observed[b.key], memory)
    }
    missing = _not_arrived(desired, exchange, [key for key in done if key not in verified])
    if isinstance(missing, str):
        return missing
    if not left and not missing:
        return None
    holds = [*left]
    if missing:
        holds.append(
            f"{len(missing)} members have not arrived in Exchange Online: {listing(missing, limit=5)}; "
            "migrate them, remove them from their batch in the repository, or apply with force"
        )
    if force:
        draft.note("migration", "cutover forced although " + "; ".join(holds))
        return None
    # Unlike a batch still syncing, this waits on a person (migrate, edit the repository or force):
    # said once for the migration under a gate of its own, so that status reports it as stalled.
    draft.block("migration", "members-arrived", "; ".join(holds))
    return "; ".join(holds)


def _finished(found: ObservedBatch, memory: Memory) -> bool:
    """Completed, or Synced where Exchange refused to complete the staged batch (exchange-facts §8)."""
    status = BatchStatus.parse(found.Status)
    unsupported = {name.lower() for name in memory.completionUnsupported}
    return status in COMPLETED or (status in SYNCED and found.Identity.lower() in unsupported)


def _not_arrived(desired: DesiredState, exchange: ExchangeObserved, batches: list[str]) -> list[str] | str:
    """The members of these batches without a mailbox or an arrived migration user, with why; a sentence
    when that cannot be known because a read failed."""
    mailboxes = {a.lower() for a in exchange.mailboxes or ()}
    checked = None if exchange.recipientsRead is None else {a.lower() for a in exchange.recipientsRead}
    users: dict[str, ObservedUser] = {}
    for observed in exchange.users or ():
        users.setdefault(observed.Identity.lower(), observed)
    missing: list[str] = []
    unknown = False
    for batch in desired.batches:
        if batch.key not in batches:
            continue
        for member in batch.members:
            user = users.get(member.key)
            if member.key in mailboxes or (user is not None and user.Status.lower() in ARRIVED_USER_STATUSES):
                continue
            if (
                exchange.users is None
                or exchange.mailboxes is None
                or (checked is not None and member.key not in checked)
            ):
                unknown = True
            elif user is None:
                missing.append(f"{member.address} (no migration user and no mailbox)")
            else:
                missing.append(f"{member.address} ({user.ErrorSummary or user.Status})")
    if unknown:
        return "migration users or mailboxes could not be read, so whether every member arrived is unknown"
    return missing
