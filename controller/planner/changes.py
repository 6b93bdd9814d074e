"""What changed in the desired state between two revisions (a pull request's base and head). Pure.

Per object, in the planner's names: a batch added or removed, its state, its members added and removed
(counts with a few addresses), its start and completion times; a DNS record added, removed or changed
(TTL, values, SPF string, cutover); the endpoint's settings, the migration's notification addresses,
target delivery domain and policy. The plan shows what the head would *do*; this shows what the pull
request *asks*, which a reviewer reads first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from controller.desired.models import Batch, DesiredState, Record
from controller.model.actions import JsonObject
from controller.model.snapshot import at

ChangeKind = Literal["added", "removed", "changed"]
NAMES_SHOWN = 5  # addresses named per list; the rest are counted


@dataclass(frozen=True, slots=True)
class Change:
    """One object's change: `details` are short phrases ("state planned -> started")."""

    object: str  # "batch/<name>", "dns/<zone>/<name>/<TYPE>", "endpoint/<name>", "migration/<name>"
    kind: ChangeKind
    details: tuple[str, ...]

    def as_data(self) -> JsonObject:
        return {"object": self.object, "change": self.kind, "details": list(self.details)}


@dataclass(frozen=True, slots=True)
class DesiredChanges:
    base: str  # the base revision (a commit sha; empty for a working tree)
    head: str
    changes: tuple[Change, ...]

    def as_data(self) -> dict[str, object]:
        return {"base": self.base, "head": self.head, "changes": [c.as_data() for c in self.changes]}


def diff(base: DesiredState, head: DesiredState, *, names: int = NAMES_SHOWN) -> DesiredChanges:
    """Every object that differs between `base` and `head`, migration first, then batches, then DNS."""
    changes = [
        *_migration(base, head),
        *_batches(base.batches, head.batches, names),
        *_records(base.records, head.records),
    ]
    return DesiredChanges(base.revision, head.revision, tuple(changes))


# --- the migration and its endpoint -----------------------------------------------------------------


def _migration(base: DesiredState, head: DesiredState) -> list[Change]:
    out: list[Change] = []
    was, now = base.migration.endpoint, head.migration.endpoint
    if was.name != now.name:
        out.append(Change(f"endpoint/{was.name}", "removed", ()))
        out.append(Change(f"endpoint/{now.name}", "added", tuple(_fields({}, _dump(now)))))
    else:
        details = _fields(_dump(was), _dump(now))
        if details:
            out.append(Change(f"endpoint/{now.name}", "changed", tuple(details)))
    spec_was = _dump(base.migration, exclude={"endpoint"})
    spec_now = _dump(head.migration, exclude={"endpoint"})
    details = _fields(spec_was, spec_now)
    if base.name != head.name:
        details.insert(0, f"name {base.name} -> {head.name}")
    if details:
        out.append(Change(f"migration/{head.name}", "changed", tuple(details)))
    return out


def _dump(model: BaseModel, exclude: set[str] | None = None) -> dict[str, object]:
    """A model of the desired state as its YAML keys (camelCase), flattened to dotted names."""
    return _flatten(model.model_dump(mode="json", by_alias=True, exclude=exclude))


def _flatten(data: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """`{"policy": {"drift": {"dns": "correct"}}}` -> `{"policy.drift.dns": "correct"}`."""
    flat: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _fields(was: Mapping[str, object], now: Mapping[str, object]) -> list[str]:
    return [
        f"{key} {_value(was.get(key))} -> {_value(now.get(key))}"
        for key in sorted({*was, *now})
        if was.get(key) != now.get(key)
    ]


def _value(value: object) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, list):
        return "[" + ", ".join(str(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- batches -------------------------------------------------------------------------------------------


def _batches(base: Sequence[Batch], head: Sequence[Batch], names: int) -> list[Change]:
    before = {batch.key: batch for batch in base}
    after = {batch.key: batch for batch in head}
    out: list[Change] = []
    for key, batch in after.items():
        old = before.get(key)
        if old is None:
            details = [f"state {batch.state.value}", _count(len(batch.members), "member")]
            listed = _listed([m.address for m in batch.members], names)
            out.append(Change(f"batch/{batch.name}", "added", tuple(d for d in (*details, listed) if d)))
            continue
        details = []
        if old.state is not batch.state:
            details.append(f"state {old.state.value} -> {batch.state.value}")
        added = [m.address for m in batch.members if m.key not in old.member_keys]
        removed = [m.address for m in old.members if m.key not in batch.member_keys]
        if added:
            details.append(f"{_count(len(added), 'member')} added: {_listed(added, names)}")
        if removed:
            details.append(f"{_count(len(removed), 'member')} removed: {_listed(removed, names)}")
        for label, was, now in (
            ("startAfter", old.start_after, batch.start_after),
            ("completeAfter", old.complete_after, batch.complete_after),
        ):
            if was != now:
                details.append(f"{label} {_time(was)} -> {_time(now)}")
        if old.name != batch.name:
            details.insert(0, f"name {old.name} -> {batch.name}")
        if details:
            out.append(Change(f"batch/{batch.name}", "changed", tuple(details)))
    for key, batch in before.items():
        if key not in after:
            out.append(
                Change(
                    f"batch/{batch.name}",
                    "removed",
                    (f"was {batch.state.value}, {_count(len(batch.members), 'member')}",),
                )
            )
    return out


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _listed(items: Sequence[str], names: int) -> str:
    shown = ", ".join(items[:names])
    more = len(items) - names
    return f"{shown} and {more} more" if more > 0 else shown


def _time(value: object) -> str:
    if value is None:
        return "(none)"
    return at(value) if isinstance(value, datetime) else str(value)


# --- DNS -----------------------------------------------------------------------------------------------


def _records(base: Iterable[Record], head: Iterable[Record]) -> list[Change]:
    before = {record.key.lower(): record for record in base}
    after = {record.key.lower(): record for record in head}
    out: list[Change] = []
    for key, record in after.items():
        old = before.get(key)
        if old is None:
            out.append(Change(f"dns/{record.key}", "added", tuple(_record_facts(record))))
            continue
        details = []
        if old.ttl != record.ttl:
            details.append(f"ttl {old.ttl} -> {record.ttl}")
        if old.values != record.values:
            details.append(f"values {_value(list(old.values))} -> {_value(list(record.values))}")
        if old.spf != record.spf:
            details.append(f"spf {_value(old.spf)} -> {_value(record.spf)}")
        if old.cutover != record.cutover:
            details.append(f"cutover {_value(old.cutover)} -> {_value(record.cutover)}")
        if details:
            out.append(Change(f"dns/{record.key}", "changed", tuple(details)))
    for key, record in before.items():
        if key not in after:
            out.append(Change(f"dns/{record.key}", "removed", ("no longer managed (left as it is)",)))
    return out


def _record_facts(record: Record) -> list[str]:
    facts = [f"ttl {record.ttl}"]
    if record.values:
        facts.append(f"values {_value(list(record.values))}")
    if record.spf is not None:
        facts.append(f"spf {record.spf}")
    if record.cutover:
        facts.append("cutover")
    return facts
