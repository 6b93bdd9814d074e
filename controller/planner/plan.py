"""The planner: `plan(desired, snapshot, now)` is a purely computational function with no side effects.

It takes no clock, no client and no file: the desired state at a revision, what was observed (plus the
controller's memory) and the time come in as arguments; the ordered actions, what waits, what a gate
blocks and the updated memory come out. Order: endpoint, batches, DNS (TTL lowering before values).
"""

from __future__ import annotations

from datetime import datetime

from controller.desired.models import BatchState, DesiredState
from controller.model.actions import DnsAction, ExchangeAction, Plan
from controller.model.snapshot import Snapshot
from controller.planner import checksum, completion, postflight, reads
from controller.planner import dns as dns_part
from controller.planner.batches.context import users_by_batch
from controller.planner.batches.lifecycle import plan_batches
from controller.planner.draft import Draft
from controller.planner.endpoint import plan_endpoint

# The change-size gate (contract §4, as octoDNS does it): above this share of managed objects removed or
# rewritten in one plan, destructive actions need `force`; small migrations are exempt.
CHANGE_SIZE_MIN_OBJECTS = 10
CHANGE_SIZE_MAX_SHARE = 0.30
_DESTRUCTIVE_CMDLETS = frozenset({"Remove-MigrationBatch", "Remove-MigrationUser"})


def plan(desired: DesiredState, snapshot: Snapshot, now: datetime, *, force: bool = False) -> Plan:
    draft = Draft(memory=snapshot.memory)
    dns_part.update_memory(draft, desired, snapshot)
    endpoint_problem = plan_endpoint(draft, desired.migration.endpoint, snapshot.exchange.endpoints)
    exchange = snapshot.exchange
    users = users_by_batch(exchange.users)  # indexed once a plan: 200,000 users at full size
    plan_batches(
        draft,
        desired,
        exchange,
        users=users,
        endpoint_problem=endpoint_problem,
        now=now,
        endpoint_check_error=snapshot.unreadable.get("exchange/endpointCheck"),
        force=force,
    )
    draft.remember(
        finished=reads.finished_batches(desired, exchange, users, snapshot.memory),
        memberships=reads.memberships(desired, exchange, users, snapshot.memory),
        ready={
            b.key: digest
            for b in desired.batches
            if b.state is BatchState.PLANNED and (digest := draft.memory.ready.get(b.key)) is not None
        },
    )
    gate = completion.batches_gate(draft, desired, snapshot.exchange, force=force)
    # The post-flight (contract §4): a completed batch counts for the cutover once every member is a
    # UserMailbox; said once for the migration when nothing else holds the cutover.
    held = postflight.report(draft, desired, snapshot.exchange, force=force)
    if gate is None and held is not None:
        draft.block("migration", postflight.GATE, held)
        gate = held
    dns_part.plan_dns(draft, desired, snapshot, now=now, batches_gate=gate)
    _change_size_gate(draft, desired, force=force)
    if desired.migration.target_delivery_domain:
        draft.note(
            "migration",
            "targetDeliveryDomain is not sent: Microsoft documents it for remote moves, and a "
            "staged migration sets TargetAddress itself (exchange-facts §1)",
        )
    return Plan(
        revision=desired.revision,
        checksum=checksum.of(desired, draft.actions),
        actions=tuple(draft.actions),
        waiting=tuple(draft.waiting),
        blocked=tuple(draft.blocked),
        drift=tuple(draft.drift),
        notes=tuple(draft.notes),
        failures=tuple(draft.failures),
        readiness=tuple(draft.readiness),
        memory=draft.memory,
    )


def _change_size_gate(draft: Draft, desired: DesiredState, *, force: bool) -> None:
    managed = 1 + len(desired.batches) + len(desired.records)
    destructive = {a.object for a in draft.actions if _is_destructive(a)}
    if force or managed < CHANGE_SIZE_MIN_OBJECTS or len(destructive) <= CHANGE_SIZE_MAX_SHARE * managed:
        return
    draft.actions = [a for a in draft.actions if a.object not in destructive or not _is_destructive(a)]
    for obj in sorted(destructive):
        draft.block(
            obj,
            "change-size",
            f"this revision removes or rewrites {len(destructive)} of {managed} "
            f"managed objects (more than {CHANGE_SIZE_MAX_SHARE:.0%}); apply with force",
        )


def _is_destructive(action: ExchangeAction | DnsAction) -> bool:
    if isinstance(action, ExchangeAction):
        return action.cmdlet in _DESTRUCTIVE_CMDLETS
    return action.kind == "update"
