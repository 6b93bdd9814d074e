"""DNS: per managed RRset, create or replace it; cutover records (planner.cutover) lower their TTL first
and swap behind the gates, `spf:` strings follow the migration's phase (planner.coexistence). Pure."""

from __future__ import annotations

from datetime import datetime

from controller.desired.models import DesiredState, Record
from controller.model.actions import DnsAction
from controller.model.snapshot import RRset, Snapshot
from controller.planner import coexistence, cutover
from controller.planner.draft import Draft
from controller.planner.records import action, describe, desired_values, find, obj, same_values

__all__ = ["desired_values", "plan_dns", "same_values", "update_memory"]

update_memory = cutover.update_memory


def plan_dns(
    draft: Draft, desired: DesiredState, snapshot: Snapshot, *, now: datetime, batches_gate: str | None
) -> None:
    """`batches_gate` is None when every batch is complete, else the reason the cutover must wait."""
    out = cutover.CutoverPlan(lowering=[], swaps=[])
    spf_records: list[tuple[Record, list[RRset]]] = []
    unauthorised: list[str] = []  # why Exchange Online may not send yet: batch starts wait
    for record in desired.records:
        observed = snapshot.dns.get(record.zone)
        if observed is None:
            why = f"zone {record.zone} could not be read; nothing is planned for it"
            draft.block(obj(record), "unknown", why)
            if record.spf is not None:
                unauthorised.append(f"{obj(record)}: {why}")
            continue
        if record.spf is not None:
            spf_records.append((record, observed))  # after the MX, whose swap decides the SPF phase
            continue
        found = find(observed, record)
        if record.cutover and found is not None:
            cutover.plan_record(draft, desired, record, found, now=now, batches_gate=batches_gate, out=out)
            continue
        change = _plan_plain(draft, desired, record, found, batches_gate=batches_gate)
        if change is not None:
            out.swaps.append(change)
    for change in (*out.lowering, *out.swaps):  # TTL lowering before any value change
        draft.act(change)
    for record, observed in spf_records:
        zone_records = [r for r in desired.records if r.zone == record.zone]
        phase = coexistence.phase(
            draft, record.zone, zone_records, observed, batches_gate=batches_gate, exchange=snapshot.exchange
        )
        why_not = coexistence.plan_spf(draft, record, find(observed, record), phase)
        if why_not is not None:
            unauthorised.append(why_not)
    coexistence.hold_starts(draft, unauthorised, snapshot.memory)


def _plan_plain(
    draft: Draft, desired: DesiredState, record: Record, found: RRset | None, *, batches_gate: str | None
) -> DnsAction | None:
    """A record that is not swapped behind the gates, or a cutover record that is absent (created once the
    batches are complete, at the low TTL for the rollback window)."""
    values = desired_values(record, found)
    if found is None:
        if not record.cutover:
            return action(record, values, None, kind="create", ttl=record.ttl, reason="absent -> create")
        if batches_gate is not None:
            draft.block(obj(record), "batches-completed", batches_gate)
            return None
        ttl = min(record.ttl, desired.policy.low_ttl)
        return action(
            record,
            values,
            None,
            kind="create",
            ttl=ttl,
            reason=f"absent -> create at TTL {ttl}s for the rollback window, then {record.ttl}s",
        )
    if same_values(record, found, values):
        if found.ttl == record.ttl:
            return None
        return action(
            record, values, found, kind="ttl", ttl=record.ttl, reason=f"TTL {found.ttl} -> {record.ttl}"
        )
    return action(
        record, values, found, kind="update", ttl=record.ttl, reason=describe(found, values, record.ttl)
    )
