"""Each valid document checked beyond its schema and resolved into what the planner reads: the
Migration's endpoint, a Batch with its members (inline or from a CSV file), a DnsZone's records."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from controller.desired import csvmembers, models, records, yamlsafe
from controller.desired.documents import Parsed
from controller.desired.problems import Problems
from controller.desired.shown import shown

# A batch without members is a placeholder (planned) or on its way out (removed); any other
# state asks Exchange to migrate someone, so it needs at least one member.
EMPTY_BATCH_STATES = (models.BatchState.PLANNED, models.BatchState.REMOVED)


@dataclass(frozen=True, slots=True)
class DeclaredBatch:
    """A batch with where each of its members was named, for the checks across batches."""

    batch: models.Batch
    sources: tuple[models.Source, ...]  # one per member, in the order of `batch.members`
    csv_path: str | None = None  # the members CSV read, relative to the desired directory


def check_endpoint(item: Parsed[models.MigrationDocument], problems: Problems) -> None:
    endpoint = item.model.spec.endpoint
    if endpoint.autodiscover:
        return
    missing = [
        key
        for key, value in (
            ("exchangeServer", endpoint.exchange_server),
            ("rpcProxyServer", endpoint.rpc_proxy_server),
        )
        if not value
    ]
    if missing:
        problems.add(
            item.path,
            item.document.position(("spec", "endpoint"), key=True),
            f"endpoint {endpoint.name} needs {' and '.join(missing)} unless autodiscover is true",
        )


def batch(
    item: Parsed[models.BatchDocument], files: Mapping[str, bytes], problems: Problems
) -> DeclaredBatch | None:
    """The batch with its members and where each member was named, or None when it is broken."""
    spec = item.model.spec
    name = item.model.metadata.name
    document = item.document
    csv_path: str | None = None
    if spec.members is not None and spec.members_csv is None:
        members = spec.members
        count = len(members)
        sources = [item.source(("spec", "members", index)) for index in range(len(members))]
        at: yamlsafe.Path = ("spec", "members")
    elif spec.members_csv is not None and spec.members is None:
        at = ("spec", "membersCsv")
        loaded = _csv_members(item, spec.members_csv, files, problems)
        if loaded is None:
            return None
        csv_path, members, sources, count = loaded
    else:
        both = spec.members is not None
        problems.add(
            item.path,
            document.position(("spec", "membersCsv") if both else ("spec",), key=True),
            f"batch {name}: give exactly one of members and membersCsv" + ("" if both else ", not neither"),
        )
        return None
    if count > models.MAX_BATCH_MEMBERS:
        problems.add(
            item.path,
            document.position(at),
            f"batch {name} has {count:,} members; a staged batch holds at most {models.MAX_BATCH_MEMBERS:,}",
        )
    if not members and spec.state not in EMPTY_BATCH_STATES:
        problems.add(
            item.path,
            document.position(at),
            f"batch {name} is {spec.state.value} but has no members (only planned or removed may be)",
        )
    declared = models.Batch(
        name=name,
        state=spec.state,
        members=tuple(models.Member(address) for address in members),
        start_after=spec.start_after,
        complete_after=spec.complete_after,
        source=item.source(("metadata", "name")),
        retry=None if spec.retry is None else str(spec.retry),
        force=spec.force,
    )
    return DeclaredBatch(declared, tuple(sources), csv_path)


def _csv_members(
    item: Parsed[models.BatchDocument], reference: str, files: Mapping[str, bytes], problems: Problems
) -> tuple[str, list[str], list[models.Source], int] | None:
    """(the CSV's path, its addresses, where each is, how many rows name a member) for
    `membersCsv: reference`, or None when broken."""
    position = item.document.position(("spec", "membersCsv"))
    path = posixpath.normpath(posixpath.join(posixpath.dirname(item.path), reference))
    if reference.startswith("/") or "\\" in reference or path == ".." or path.startswith("../"):
        problems.add(item.path, position, f"membersCsv {shown(reference)} is outside the desired directory")
        return None
    if path not in files:
        problems.add(
            item.path,
            position,
            f"membersCsv {shown(reference)} not found (looked for {problems.where(path)})",
        )
        return None
    rows, row_problems, count = csvmembers.read_members(files[path])
    for row, message in row_problems:
        problems.add(path, (row, 1), message)
    if row_problems:
        return None
    where = problems.where(path)
    return path, [address for _, address in rows], [models.Source(where, row, 1) for row, _ in rows], count


def zone(item: Parsed[models.DnsZoneDocument], problems: Problems) -> models.Zone:
    """The zone with its good records, normalised; the problems of the others go to `problems`."""
    name = item.model.metadata.name.lower().rstrip(".")
    specs = item.model.spec.records
    document = item.document
    good, record_problems = records.check_zone(
        name, specs, lambda index: document.position(("spec", "records", index))[0]
    )
    for at, message in record_problems:
        problems.add(item.path, document.position(at), message)
    zone_records = tuple(
        models.Record(
            zone=name,
            name=record_name,
            type=specs[index].type,
            ttl=specs[index].ttl,
            values=values,
            spf=specs[index].spf,
            cutover=specs[index].cutover,
            source=item.source(("spec", "records", index)),
        )
        for index, record_name, values in good
    )
    return models.Zone(name, zone_records, item.source(("metadata", "name")))
