"""Cutover records (contract §4): the TTL lowered first, the lead measured on every authoritative server,
the values swapped at the low TTL, the desired TTL after the rollback window. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.desired.models import DesiredState, Record, RecordType, format_duration
from controller.model.actions import DnsAction
from controller.model.snapshot import RRset, ServerAnswer, Snapshot, at
from controller.planner.draft import Draft
from controller.planner.records import action, describe, desired_values, find, obj, same_values


@dataclass(frozen=True, slots=True)
class Servers:
    """One RRset as every authoritative server serves it: who still serves a high TTL, who lags."""

    high: dict[str, int]  # server -> TTL above lowTtl
    lagging: dict[str, str]  # server -> why it is behind the primary or unreadable

    @classmethod
    def read(cls, found: RRset, low_ttl: int) -> Servers:
        """With no per-server answers (one source only) the RRset's own TTL is the only one."""
        if not found.servers:
            return cls({"the primary": found.ttl} if found.ttl > low_ttl else {}, {})
        serial = next((a.serial for a in found.servers if a.primary), None)
        high: dict[str, int] = {}
        lagging: dict[str, str] = {}
        for answer in found.servers:
            why = lag(answer, serial, found)
            if why is not None:
                lagging[answer.server] = why
            elif answer.ttl is not None and answer.ttl > low_ttl:
                high[answer.server] = answer.ttl
        return cls(high, lagging)


def lag(answer: ServerAnswer, primary_serial: int | None, found: RRset) -> str | None:
    """Why a server cannot be counted on for the lead, or None when it serves the current zone."""
    if answer.error is not None:
        return f"cannot be read ({answer.error})"
    if primary_serial is not None and answer.serial is not None and _behind(answer.serial, primary_serial):
        return f"serves serial {answer.serial}, behind the primary's {primary_serial}"
    if answer.ttl is None:
        return f"serves no {found.type} at {found.name}"
    return None


def _behind(serial: int, primary: int) -> bool:
    """RFC 1982 serial arithmetic: `serial` is older than `primary`."""
    return serial != primary and (primary - serial) % 2**32 < 2**31


def update_memory(draft: Draft, desired: DesiredState, snapshot: Snapshot) -> None:
    """What this observation teaches: since when a cutover TTL is low on every server, which servers lag
    and since when, when values were swapped (the rollback window) and when MX was cut over."""
    memory = draft.memory
    low_since, ttl_before = dict(memory.lowTtlSince), dict(memory.ttlBeforeLowering)
    swapped, lagging = dict(memory.swappedAt), dict(memory.laggingSince)
    cutover_at = memory.cutoverAt
    low_ttl, window = desired.policy.low_ttl, desired.policy.rollback_window
    seen = snapshot.observedAt
    lag_now: dict[str, set[str]] = {}
    for record in desired.records:
        observed = snapshot.dns.get(record.zone)
        if observed is None:
            continue  # unknown: what memory says about the zone stays as it was
        lag_now.setdefault(record.zone, set())
        found = find(observed, record)
        if not record.cutover or found is None:
            continue
        servers = Servers.read(found, low_ttl)
        lag_now[record.zone] |= set(servers.lagging)
        if same_values(record, found, desired_values(record, found)):
            low_since.pop(record.key, None)
            if record.type is RecordType.MX and cutover_at is None:
                cutover_at = seen
            if found.ttl <= low_ttl and found.ttl < record.ttl:
                swapped.setdefault(record.key, seen)
            else:
                swapped.pop(record.key, None)
            continue
        if record.key in swapped and seen >= swapped[record.key] + window:
            swapped.pop(record.key)
        if servers.high:
            low_since.pop(record.key, None)
            ttl_before[record.key] = max(servers.high.values())
        elif not servers.lagging:
            low_since.setdefault(record.key, seen)
    for zone, servers_now in lag_now.items():
        for key in [k for k in lagging if k.startswith(f"{zone}/") and k[len(zone) + 1 :] not in servers_now]:
            del lagging[key]
        for server in servers_now:
            lagging.setdefault(f"{zone}/{server}", seen)
    draft.remember(
        lowTtlSince=low_since,
        ttlBeforeLowering=ttl_before,
        cutoverAt=cutover_at,
        swappedAt=swapped,
        laggingSince=lagging,
    )


@dataclass(slots=True)
class CutoverPlan:
    """The DNS actions of cutover records, split so TTL lowering runs before any value change."""

    lowering: list[DnsAction]
    swaps: list[DnsAction]


def plan_record(
    draft: Draft,
    desired: DesiredState,
    record: Record,
    found: RRset,
    *,
    now: datetime,
    batches_gate: str | None,
    out: CutoverPlan,
) -> None:
    """One cutover record that exists: raise the TTL after the window, swap back inside it, or swap behind
    the batches-completed and ttl-lead gates."""
    values = desired_values(record, found)
    low_ttl = desired.policy.low_ttl
    swapped = draft.memory.swappedAt.get(record.key)
    window_end = None if swapped is None else swapped + desired.policy.rollback_window
    if same_values(record, found, values):
        if found.ttl == record.ttl:
            return
        if window_end is not None and now < window_end:
            draft.wait(
                obj(record),
                f"rollback window: values swapped at {at(swapped or now)}; the TTL stays {found.ttl}s so a "
                f"revert reaches resolvers quickly, and becomes {record.ttl}s at {at(window_end)}",
            )
            return
        reason = f"TTL {found.ttl} -> {record.ttl}"
        if window_end is not None:
            reason += f": the rollback window ended at {at(window_end)}"
        out.swaps.append(action(record, values, found, kind="ttl", ttl=record.ttl, reason=reason))
        return
    if window_end is not None and now < window_end and found.ttl <= low_ttl:
        out.swaps.append(
            action(
                record,
                values,
                found,
                kind="update",
                ttl=found.ttl,
                reason=f"rollback window (until {at(window_end)}): swap back at the low TTL: "
                + describe(found, values, found.ttl),
            )
        )
        return
    swap = _gated_swap(draft, desired, record, found, values, now=now, batches_gate=batches_gate, out=out)
    if swap is not None:
        out.swaps.append(swap)


def _gated_swap(
    draft: Draft,
    desired: DesiredState,
    record: Record,
    found: RRset,
    values: tuple[str, ...],
    *,
    now: datetime,
    batches_gate: str | None,
    out: CutoverPlan,
) -> DnsAction | None:
    name = obj(record)
    low_ttl = desired.policy.low_ttl
    if batches_gate is not None:
        draft.block(name, "batches-completed", batches_gate)
    if found.ttl > low_ttl:
        out.lowering.append(
            action(
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
            name, "ttl-lead", f"values change once the TTL has been <= {low_ttl}s for {format_duration(lead)}"
        )
        return None
    servers = Servers.read(found, low_ttl)
    if servers.high:
        slowest = ", ".join(
            f"{server} still serves TTL {ttl}" for server, ttl in sorted(servers.high.items())
        )
        draft.block(
            name,
            "ttl-lead",
            f"{slowest}; the lead starts when every authoritative server serves <= {low_ttl}s",
        )
        return None
    held: list[str] = []
    lead = _lead(desired, record, draft, None)
    since = draft.memory.lowTtlSince.get(record.key)
    if since is None and servers.lagging:
        held.append(
            f"the {format_duration(lead)} lead starts once every authoritative server serves the zone"
        )
    elif since is None:
        held.append(f"the TTL is <= {low_ttl}s; values change {format_duration(lead)} after it is seen")
    elif now < since + lead:
        held.append(f"the TTL has been <= {low_ttl}s since {at(since)}; values change at {at(since + lead)}")
    for server, why in sorted(servers.lagging.items()):
        first = draft.memory.laggingSince.get(f"{record.zone}/{server}", now)
        held.append(
            f"{server} lags since {at(first)}: it {why}; values change once every authoritative server "
            "serves the current zone"
        )
    if held:
        draft.block(name, "ttl-lead", "; ".join(held))
        return None
    if batches_gate is not None:
        return None
    return action(
        record,
        values,
        found,
        kind="update",
        ttl=found.ttl,
        reason=f"cutover: {describe(found, values, found.ttl)}; the TTL stays {found.ttl}s for the "
        f"rollback window ({format_duration(desired.policy.rollback_window)}), then becomes {record.ttl}s",
    )


def _lead(desired: DesiredState, record: Record, draft: Draft, current_ttl: int | None) -> timedelta:
    """max(ttlLeadTime, the TTL the record had before it was lowered): old answers must have expired."""
    before = current_ttl if current_ttl is not None else draft.memory.ttlBeforeLowering.get(record.key, 0)
    return max(desired.policy.ttl_lead_time, timedelta(seconds=before))
