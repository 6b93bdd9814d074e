"""Checks across documents: exactly one Migration, batch and zone names used once, each member in
one batch only, and no more batches than Exchange Online holds."""

from __future__ import annotations

from controller.desired import models
from controller.desired.documents import Documents
from controller.desired.kinds import DeclaredBatch
from controller.desired.problems import Problems
from controller.desired.shown import shown


def check_migrations(found: Documents, problems: Problems) -> None:
    migrations = found.migrations
    for item in migrations[1:]:
        first = migrations[0].source(())
        problems.add(item.path, item.document.start, f"a second Migration document (the first is at {first})")
    if not found.migration_documents and not found.unreadable:  # else the unreadable file is named
        problems.at(models.Source(problems.root), "no Migration document (kind: Migration) found")


def check_batches(declared: list[DeclaredBatch], problems: Problems) -> None:
    names: dict[str, models.Batch] = {}
    owners: dict[str, tuple[models.Batch, models.Source]] = {}
    active = 0
    for item in declared:
        batch = item.batch
        first = names.setdefault(batch.key, batch)
        if first is not batch:
            problems.at(
                batch.source,
                f"batch name {shown(batch.name)} is also used at {first.source} "
                "(names are compared without case)",
            )
            continue  # a batch copied into a second file: one problem, not one more per member
        if batch.state is not models.BatchState.REMOVED:
            active += 1
            if active == models.MAX_BATCHES + 1:
                total = sum(1 for other in declared if other.batch.state is not models.BatchState.REMOVED)
                problems.at(
                    batch.source,
                    f"more than {models.MAX_BATCHES} batches that are not removed "
                    f"({total}); Exchange Online holds at most {models.MAX_BATCHES}",
                )
        for member, source in zip(batch.members, item.sources, strict=True):
            owner = owners.setdefault(member.key, (batch, source))
            if owner[0] is batch and owner[1] is not source:
                problems.at(
                    source, f"duplicate member {member.address} in batch {batch.name} (also at {owner[1]})"
                )
            elif owner[0] is not batch:
                problems.at(
                    source,
                    f"{member.address} is a member of both {batch.name} and {owner[0].name} (at {owner[1]})",
                )


def check_zones(zones: list[models.Zone], problems: Problems) -> None:
    seen: dict[str, models.Zone] = {}
    for zone in zones:
        first = seen.setdefault(zone.name, zone)
        if first is not zone:
            problems.at(zone.source, f"zone {zone.name} is also defined at {first.source}")
