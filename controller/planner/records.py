"""What every DNS decision shares: finding the observed RRset of a managed record, the values it should
hold, comparing them, and building the action. Pure."""

from __future__ import annotations

from controller.desired.models import Record, RecordType
from controller.model.actions import DnsAction, DnsChangeKind
from controller.model.snapshot import RRset
from controller.planner.spf import is_spf


def obj(record: Record) -> str:
    """The plan's name for a record: `dns/<zone>/<name>/<TYPE>`."""
    return f"dns/{record.key}"


def find(observed: list[RRset], record: Record) -> RRset | None:
    name = record.name.lower()
    return next((rr for rr in observed if rr.name.lower() == name and rr.type == record.type.value), None)


def desired_values(record: Record, found: RRset | None, *, spf: str | None = None) -> tuple[str, ...]:
    """The full value list the RRset should hold; an `spf` TXT keeps every other TXT string observed.
    `spf` replaces the repository's string (the coexistence phase writes a string of its own)."""
    if record.spf is None:
        return record.values
    kept = [v for v in found.values if not is_spf(v)] if found is not None else []
    extra = [v for v in record.values if v not in kept]
    return (*kept, *extra, spf or record.spf)


def _comparable(record: Record, values: tuple[str, ...] | list[str]) -> frozenset[str]:
    """Host names compare without case; TXT strings compare exactly."""
    if record.type is RecordType.TXT:
        return frozenset(values)
    return frozenset(" ".join(v.lower().split()) for v in values)


def same_values(record: Record, found: RRset, values: tuple[str, ...]) -> bool:
    return _comparable(record, found.values) == _comparable(record, values)


def describe(found: RRset, values: tuple[str, ...], ttl: int) -> str:
    return f"{', '.join(found.values)} (TTL {found.ttl}) -> {', '.join(values)} (TTL {ttl})"


def action(
    record: Record,
    values: tuple[str, ...] | list[str],
    found: RRset | None,
    *,
    kind: DnsChangeKind,
    ttl: int,
    reason: str,
) -> DnsAction:
    return DnsAction(
        zone=record.zone,
        name=record.name,
        type=record.type.value,
        ttl=ttl,
        values=tuple(values),
        previous_ttl=None if found is None else found.ttl,
        previous_values=None if found is None else tuple(found.values),
        object=obj(record),
        reason=reason,
        kind=kind,
    )
