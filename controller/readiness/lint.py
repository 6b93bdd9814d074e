"""The runbook's rules checked against a desired state and an inventory (`stagectl lint`): warnings, never a
block. Each is `file:line:column: warning: ...` at the member or batch it is about. Pure.

- a grant (a delegate, a shared mailbox and who holds rights on it) across two batches: until both have
  moved, one side of it is on premises and the other in Exchange Online, where a staged migration keeps no
  permission working;
- a batch over the size budget;
- an IT pilot that is not the first batch (batches start in this order: those past `planned` first, then
  by `startAfter`, then by name with numbers compared as numbers);
- a member missing from the inventory (a leaver, or a typo): nothing is known of its size or ties.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from controller.desired import models
from controller.desired.kinds import DeclaredBatch
from controller.desired.problems import Problems
from controller.readiness.inventory import GB, Inventory, Kind, Mailbox, Right, gigabytes

MIGRATED = (models.BatchState.COMPLETED, models.BatchState.REMOVED)
_STARTED = (models.BatchState.STARTED, models.BatchState.STOPPED, *MIGRATED)
_LATEST = datetime.max.replace(tzinfo=UTC)


class Warnings(Problems):
    """The warnings found, each counted though only `problems.MAX_PER_FILE` of a file are listed."""

    def __init__(self) -> None:
        super().__init__("")
        self.count = 0

    def at(self, source: models.Source, message: str) -> None:
        self.count += 1
        super().at(source, message)


def check(
    declared: Sequence[DeclaredBatch], inventory: Inventory, *, max_batch_gb: float, pilot: str
) -> tuple[list[str], int]:
    """Every warning as a line in file and line order (at most `problems.MAX_PER_FILE` listed per file),
    and how many there are."""
    warnings = Warnings()
    mailboxes = {mailbox.key: mailbox for mailbox in inventory.mailboxes}
    active = [item for item in declared if item.batch.state is not models.BatchState.REMOVED]
    where: dict[str, tuple[models.Batch, models.Source]] = {}
    for item in declared:
        for member, source in zip(item.batch.members, item.sources, strict=True):
            where.setdefault(member.key, (item.batch, source))
    _missing(active, mailboxes, warnings)
    _crossing(inventory, mailboxes, where, warnings)
    _budget(active, mailboxes, max_batch_gb, warnings)
    _pilot(declared, mailboxes, re.compile(pilot), warnings)
    return warnings.messages(), warnings.count


def _missing(active: Iterable[DeclaredBatch], mailboxes: Mapping[str, Mailbox], warnings: Problems) -> None:
    for item in active:
        for member, source in zip(item.batch.members, item.sources, strict=True):
            if member.key not in mailboxes:
                warnings.at(
                    source,
                    f"warning: {member.address} in {item.batch.name} is not in the inventory (a leaver, or a "
                    "typo?): its size, department and permissions are unknown",
                )


def _crossing(
    inventory: Inventory,
    mailboxes: Mapping[str, Mailbox],
    where: Mapping[str, tuple[models.Batch, models.Source]],
    warnings: Problems,
) -> None:
    for grant in inventory.grants:
        owner, holder = where.get(grant.identity), where.get(grant.user)
        if owner is None or holder is None or owner[0] is holder[0]:
            continue
        if owner[0].state in MIGRATED and holder[0].state in MIGRATED:
            continue  # both sides have moved: the grant works again in Exchange Online
        mailbox, user = mailboxes[grant.identity].address, mailboxes[grant.user].address
        rights = ", ".join(right.value for right in grant.rights)
        theirs, its = holder[0].name, owner[0].name
        if Right.DELEGATE in grant.rights:
            what = f"delegate {user} is in {theirs} and their principal {mailbox} in {its}"
        elif mailboxes[grant.identity].kind is Kind.SHARED:
            what = f"{user} holds {rights} on the shared mailbox {mailbox} but is in {theirs}, it in {its}"
        else:
            what = f"{user} holds {rights} on {mailbox} but is in {theirs}, the mailbox in {its}"
        warnings.at(
            holder[1],
            f"warning: {what}: permissions do not work across premises in a staged migration; "
            "move them into one batch",
        )


def _budget(
    active: Iterable[DeclaredBatch], mailboxes: Mapping[str, Mailbox], max_batch_gb: float, warnings: Problems
) -> None:
    budget = max_batch_gb * GB
    for item in active:
        size = sum(mailboxes[m.key].size for m in item.batch.members if m.key in mailboxes)
        if size > budget:
            warnings.at(
                item.batch.source,
                f"warning: batch {item.batch.name} holds {gigabytes(size)}, over the size budget of "
                f"{gigabytes(int(budget))} (--max-batch-gb)",
            )


def start_order(batches: Iterable[models.Batch]) -> list[models.Batch]:
    """Batches in the order they start: past `planned` first, then by startAfter, then by name."""

    def key(batch: models.Batch) -> tuple[int, datetime, list[tuple[int, str]]]:
        rank = 0 if batch.state in _STARTED else 1 if batch.state is models.BatchState.CREATED else 2
        name = [(int(part), "") if part.isdigit() else (0, part) for part in re.split(r"(\d+)", batch.key)]
        return rank, batch.start_after or _LATEST, name

    return sorted(batches, key=key)


def _pilot(
    declared: Sequence[DeclaredBatch],
    mailboxes: Mapping[str, Mailbox],
    pilot: re.Pattern[str],
    warnings: Problems,
) -> None:
    ordered = start_order(item.batch for item in declared)
    if not ordered:
        return
    pilots = [batch for batch in ordered if _is_pilot(batch, mailboxes, pilot)]
    first = ordered[0]
    if not pilots:
        if any(pilot.search(mailbox.department) for m in first.members if (mailbox := mailboxes.get(m.key))):
            return  # IT people in the first batch, though not most of it: a pilot in all but name
        if any(pilot.search(mailbox.department) for mailbox in mailboxes.values() if mailbox.department):
            warnings.at(
                first.source,
                f"warning: no IT pilot: no batch is mostly IT (departments matching {pilot.pattern}); the "
                f"runbook starts with one, and {first.name} starts first",
            )
        return
    if first not in pilots:
        warnings.at(
            first.source,
            f"warning: {first.name} starts before the IT pilot {pilots[0].name}: IT migrates first and signs "
            "off before anyone else moves (batches start: past planned first, then by startAfter, by name)",
        )


def _is_pilot(batch: models.Batch, mailboxes: Mapping[str, Mailbox], pilot: re.Pattern[str]) -> bool:
    departments = [mb.department for m in batch.members if (mb := mailboxes.get(m.key)) and mb.department]
    return bool(departments) and sum(1 for d in departments if pilot.search(d)) * 2 > len(departments)
