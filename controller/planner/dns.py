"""DNS: per managed RRset, create or replace it; cutover records lower their TTL first, then change
values behind the batches-completed and ttl-lead gates (contract §4). Pure."""

from __future__ import annotations

from datetime import datetime, timedelta

from controller.desired.models import DesiredState, Record, RecordType, format_duration
from controller.model.actions import DnsAction, DnsChangeKind
from controller.model.snapshot import RRset, Snapshot, at
from controller.planner.draft import Draft

SPF_PREFIX = "v=spf1"


def _obj(record: Record) -> str:
    return f"dns/{record.key}"


def _find(observed: list[RRset], record: Record) -> RRset | None:
    name = record.name.lower()
    return next((rr for rr in observed if rr.name.lower() == name and rr.type == record.type.value), None)


def desired_values(record: Record, found: RRset | None) -> tuple[str, ...]:
    """The full value list the RRset should hold; an `spf` TXT keeps every other TXT string observed."""
    if record.spf is None:
        return record.values
    kept = [v for v in found.values if not v.startswith(SPF_PREFIX)] if found is not None else []
    extra = [v for v in record.values if v not in kept]
    return (*kept, *extra, record.spf)


def _comparable(record: Record, values: tuple[str, ...] | list[str]) -> frozenset[str]:
    """Host names compare without case; TXT strings compare exactly."""
    if record.type is RecordType.TXT:
        return frozenset(values)
    return frozenset(" ".join(v.lower().split()) for v in values)


def same_values(record: Record, found: RRset, values: tuple[str, ...]) -> bool:
    return _comparable(record, found.values) == _comparable(record, values)


def update_memory(draft: Draft, desired: DesiredState, snapshot: Snapshot) -> None:
    """Record what this observation teaches: since when a cutover TTL is low, and when MX was cut over."""
    low_since = dict(draft.memory.lowTtlSince)
    ttl_before = dict(draft.memory.ttlBeforeLowering)
    cutover_at = draft.memory.cutoverAt
    low_ttl = desired.policy.low_ttl
    for record in desired.records:
        observed = snapshot.dns.get(record.zone)
        if not record.cutover or observed is None:
            continue
        found = _find(observed, record)
        if found is None:
            continue
        if same_values(record, found, desired_values(record, found)):
            low_since.pop(record.key, None)
            if record.type is RecordType.MX and cutover_at is None:
                cutover_at = snapshot.observedAt
        elif found.ttl <= low_ttl:
            low_since.setdefault(record.key, snapshot.observedAt)
        else:
            low_since.pop(record.key, None)
            ttl_before[record.key] = found.ttl
    draft.remember(lowTtlSince=low_since, ttlBeforeLowering=ttl_before, cutoverAt=cutover_at)


def plan_dns(
    draft: Draft, desired: DesiredState, snapshot: Snapshot, *, now: datetime, batches_gate: str | None
) -> None:
    """`batches_gate` is None when every batch is complete, else the reason the cutover must wait."""
    lowering: list[DnsAction] = []
    changes: list[DnsAction] = []
    for record in desired.records:
        observed = snapshot.dns.get(record.zone)
        if observed is None:
            draft.block(
                _obj(record), "unknown", f"zone {record.zone} could not be read; nothing is planned for it"
            )
            continue
        found = _find(observed, record)
        values = desired_values(record, found)
        if (found is None or not same_values(record, found, values)) and batches_gate is not None:
            if record.cutover:
                if found is None:
                    draft.block(_obj(record), "batches-completed", batches_gate)
                    continue
            elif record.spf is not None:
                # contract §1 step 6: SPF moves to Exchange Online with the cutover; until then the
                # on-premises senders must stay allowed, so a new string waits for every batch.
                draft.block(
                    _obj(record),
                    "batches-completed",
                    f"the SPF string changes with the cutover: {batches_gate}",
                )
                continue
        action: DnsAction | None
        if found is None:
            action = _action(record, values, None, kind="create", ttl=record.ttl, reason="absent -> create")
        elif same_values(record, found, values):
            if found.ttl == record.ttl:
                continue
            action = _action(
                record, values, found, kind="ttl", ttl=record.ttl, reason=f"TTL {found.ttl} -> {record.ttl}"
            )
        elif not record.cutover:
            action = _action(
                record,
                values,
                found,
                kind="update",
                ttl=record.ttl,
                reason=_describe(found, values, record.ttl),
            )
        else:
            action = _plan_cutover(
                draft, desired, record, found, values, now=now, batches_gate=batches_gate, lowering=lowering
            )
        if action is not None:
            changes.append(action)
    for action in (*lowering, *changes):  # TTL lowering before any value change
        draft.act(action)


def _plan_cutover(
    draft: Draft,
    desired: DesiredState,
    record: Record,
    found: RRset,
    values: tuple[str, ...],
    *,
    now: datetime,
    batches_gate: str | None,
    lowering: list[DnsAction],
) -> DnsAction | None:
    obj = _obj(record)
    low_ttl = desired.policy.low_ttl
    ready = True
    if batches_gate is not None:
        draft.block(obj, "batches-completed", batches_gate)
        ready = False
    if found.ttl > low_ttl:
        lowering.append(
            _action(
                record,
                found.values,
                found,
                kind="ttl",
                ttl=low_ttl,
                reason=f"lower TTL {found.ttl} -> {low_ttl} ahead of cutover",
            )
        )
        lead = _lead(desired, record, draft, found.ttl)
        draft.block(
            obj, "ttl-lead", f"values change once the TTL has been <= {low_ttl}s for {format_duration(lead)}"
        )
        return None
    lead = _lead(desired, record, draft, None)
    since = draft.memory.lowTtlSince.get(record.key)
    if since is None or now < since + lead:
        if since is None:
            reason = f"the TTL is <= {low_ttl}s; values change {format_duration(lead)} after it is seen"
        else:
            reason = f"the TTL has been <= {low_ttl}s since {at(since)}; values change at {at(since + lead)}"
        draft.block(obj, "ttl-lead", reason)
        return None
    if not ready:
        return None
    return _action(
        record,
        values,
        found,
        kind="update",
        ttl=record.ttl,
        reason="cutover: " + _describe(found, values, record.ttl),
    )


def _lead(desired: DesiredState, record: Record, draft: Draft, current_ttl: int | None) -> timedelta:
    """max(ttlLeadTime, the TTL the record had before it was lowered): old answers must have expired."""
    before = current_ttl if current_ttl is not None else draft.memory.ttlBeforeLowering.get(record.key, 0)
    return max(desired.policy.ttl_lead_time, timedelta(seconds=before))


def _describe(found: RRset, values: tuple[str, ...], ttl: int) -> str:
    return f"{', '.join(found.values)} (TTL {found.ttl}) -> {', '.join(values)} (TTL {ttl})"


def _action(
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
        object=_obj(record),
        reason=reason,
        kind=kind,
    )
