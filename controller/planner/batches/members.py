"""Who is in a batch: members added with one -AddUsers (after their preflight), removed one by one. Pure."""

from __future__ import annotations

from controller.desired.models import Batch, BatchState, Member
from controller.model.actions import CsvRows, ExchangeAction
from controller.model.snapshot import ObservedBatch, ObservedUser
from controller.model.statuses import COMPLETED, IN_FLIGHT, MOVING, BatchStatus
from controller.planner import reads
from controller.planner.batches import preflight
from controller.planner.batches.context import Context, batch_object, progress
from controller.planner.draft import Draft, listing


def plan_membership(
    draft: Draft, batch: Batch, found: ObservedBatch, status: BatchStatus, context: Context
) -> bool:
    """Members added -> one -AddUsers with only the new rows; removed -> Remove-MigrationUser each.

    Returns False when membership still has to change before the batch may move on.
    """
    obj = batch_object(batch)
    if context.users is None:
        # Unknown membership: the batch must not move on (a completion would take a removed member
        # with it, and an added one could no longer join); one still syncing only waits anyway.
        draft.note(obj, "migration users could not be read; membership changes wait for the next pass")
        return status in MOVING or status in IN_FLIGHT
    if status in COMPLETED and (not context.read_users_of(batch) or batch.key not in context.users):
        # contract §3.1: users are read only for batches that are not finished, so none listed for a
        # Completed batch is unknown, not an empty batch whose every member was "added".
        return True
    if not context.read_users_of(batch):
        if reads.quietly_syncing(batch, found, draft.memory):
            return True  # its membership matched when last read, and Exchange's counts say so still
        draft.note(obj, "migration users were not read; membership changes wait for the next pass")
        return False
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
            f"batch is {status.value}, which Exchange no longer changes; {_finished_advice(added, gone)}",
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
    if status in MOVING or status in IN_FLIGHT:
        draft.wait(
            obj,
            f"{status.value} ({progress(found)}); {len(added)} new members are added once it ends "
            "(Exchange refuses -AddUsers while a batch syncs)",
        )
        return False
    starting = batch.state in (BatchState.STARTED, BatchState.COMPLETED)
    if starting and not preflight.gate(
        draft, batch, [m.key for m in added], context, fresh=True, start=False
    ):
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


def _finished_advice(added: list[Member], gone: list[ObservedUser]) -> str:
    """What happens to members added to or removed from a batch Exchange has finished."""
    parts = []
    if added:
        parts.append(f"start a new batch for the added members ({listing([m.address for m in added])})")
    if gone:
        parts.append(
            f"the removed members ({listing([u.Identity for u in gone])}) stay in the batch in Exchange as "
            "they are: a migrated mailbox stays migrated, a failed one is no longer retried and does not "
            "hold the cutover"
        )
    return "; ".join(parts)
