"""The forecast on the migration page: per batch an ETA from the sync throughput its passes observed, and
the earliest possible cutover with the gate that decides it.

Pure: the samples (store.ProgressSample, one per pass), the plan's blocked entries and the time of the
observation come in as arguments; time is the controller's clock (the simulator's in a rehearsal), never
the wall clock of whoever looks at the page.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.desired.models import DesiredState
from controller.model.actions import Plan
from controller.model.snapshot import Memory, Snapshot, at
from controller.model.statuses import COMPLETED, BatchStatus
from controller.runtime.store import ProgressSample

# Throughput is measured over the newest samples of this span: long enough to smooth the bursts of a
# migration slot finishing a large mailbox, short enough to follow a change of pace.
WINDOW = timedelta(hours=24)

# Batch forecast states, in the administrator's words.
UNKNOWN, NOT_STARTED, SYNCING, STALLED, STOPPED, ATTENTION, SYNCED, DONE = (
    "unknown",
    "not started",
    "syncing",
    "stalled",
    "stopped",
    "needs attention",
    "synced",
    "completed",
)


@dataclass(frozen=True, slots=True)
class BatchForecast:
    name: str
    state: str
    remaining: int  # users neither synced nor failed
    failed: int  # users that need their fix and a retry: time alone does not bring them
    per_hour: float | None  # users synced per hour over the window
    eta: datetime | None  # when the remaining users are synced at that pace
    basis: str  # how the ETA was reached, or why there is none

    def as_data(self) -> dict[str, object]:
        return {
            "name": self.name,
            "state": self.state,
            "remaining": self.remaining,
            "failed": self.failed,
            "perHour": None if self.per_hour is None else round(self.per_hour, 2),
            "eta": None if self.eta is None else at(self.eta),
            "basis": self.basis,
        }


@dataclass(frozen=True, slots=True)
class Gate:
    """One thing the cutover waits for: when it opens (None: not by time alone), its gate and why."""

    opens: datetime | None
    gate: str
    reason: str


@dataclass(frozen=True, slots=True)
class CutoverForecast:
    earliest: datetime | None  # None: a gate cannot be forecast by time (not started, stalled, unread)
    gate: str | None  # the gate that decides it: the latest to open, or the one that cannot be forecast
    reason: str
    needs: tuple[str, ...] = ()  # what waits on a person besides time: failed users, a batch to complete
    done: datetime | None = None  # the MX cutover was observed then

    def as_data(self) -> dict[str, object]:
        return {
            "earliest": None if self.earliest is None else at(self.earliest),
            "gate": self.gate,
            "reason": self.reason,
            "needs": list(self.needs),
            "doneAt": None if self.done is None else at(self.done),
        }


def batch(
    name: str,
    *,
    status: str | None,
    synced: int,
    failed: int,
    total: int,
    samples: Sequence[ProgressSample],
) -> BatchForecast:
    """`synced` counts synced and finalized users; `samples` are this batch's, oldest first."""
    remaining = max(0, total - synced - failed)
    parsed = None if status is None else BatchStatus.parse(status)

    def forecast(
        state: str, basis: str, per_hour: float | None = None, eta: datetime | None = None
    ) -> BatchForecast:
        return BatchForecast(name, state, remaining, failed, per_hour, eta, basis)

    if status is None:
        return forecast(UNKNOWN, "the batch list could not be read")
    if parsed in COMPLETED:
        return forecast(DONE, f"{status}: {synced}/{total} synced")
    if status == "absent" or parsed is BatchStatus.CREATED:
        return forecast(NOT_STARTED, "not started yet: no throughput to measure")
    if parsed is BatchStatus.WAITING:  # its StartAfter time, or a free migration slot (exchange-facts §3)
        return forecast(NOT_STARTED, "waiting for Exchange to begin it: no throughput to measure yet")
    if remaining == 0:
        return forecast(ATTENTION if failed else SYNCED, f"{synced}/{total} synced")
    if parsed in (BatchStatus.STOPPED, BatchStatus.STOPPING):
        return forecast(STOPPED, f"stopped with {remaining} users to go")
    run = _current_run(samples, total)
    if len(run) < 2:
        return forecast(SYNCING, "measuring: one pass observed so far")
    newest = run[-1]
    inside = [s for s in run if s.observed_at >= newest.observed_at - WINDOW]
    # With fewer than two samples in the window (passes further apart than it), the one before counts.
    base = inside[0] if len(inside) >= 2 else run[-2]
    gained = newest.synced - base.synced
    hours = (newest.observed_at - base.observed_at).total_seconds() / 3600
    if gained <= 0 or hours <= 0:
        still = next(s for s in run if s.synced == newest.synced)
        if newest.observed_at - still.observed_at < WINDOW:
            # A mailbox takes hours, a batch may queue behind the endpoint's concurrent migrations: only a
            # whole window without a user synced is a stall.
            first = "the first users are being copied" if newest.synced == 0 else "no user synced"
            return forecast(SYNCING, f"measuring: {first} since {at(still.observed_at)}")
        return forecast(STALLED, f"no user synced since {at(still.observed_at)}", per_hour=0.0)
    per_hour = gained / hours
    eta = newest.observed_at + timedelta(hours=remaining / per_hour)
    basis = f"{gained} users synced in {_hours(hours)} ({per_hour:.1f}/h), {remaining} to go"
    return forecast(SYNCING, basis, per_hour=per_hour, eta=eta)


def _current_run(samples: Sequence[ProgressSample], total: int) -> list[ProgressSample]:
    """The newest samples measured on the same member count with a count that never went down: users
    added, removed or retried start a new measurement."""
    run: list[ProgressSample] = []
    for sample in reversed(samples):
        if sample.total != total or (run and sample.synced > run[-1].synced):
            break
        run.append(sample)
    return run[::-1]


def _hours(hours: float) -> str:
    return f"{hours:.0f} h" if hours >= 1 else f"{hours * 60:.0f} min"


def batches_gate(forecasts: Iterable[BatchForecast], *, now: datetime) -> tuple[Gate, list[str]]:
    """When every batch the cutover waits for could be synced, at the pace measured (the last ETA), and
    what besides time it needs from a person: failed users fixed and retried, synced batches completed."""
    opens: datetime | None = now
    reasons: list[str] = []
    needs: list[str] = []
    for forecast in forecasts:
        if forecast.state == DONE:
            continue
        if forecast.failed:
            users = (
                "1 failed user needs its"
                if forecast.failed == 1
                else f"{forecast.failed} failed users need their"
            )
            needs.append(f"{forecast.name}: {users} fix, then a retry")
        if forecast.state in (SYNCED, ATTENTION):
            needs.append(f"{forecast.name}: complete it once synced (state: completed)")
        elif forecast.eta is None:
            if opens is not None:
                opens, reasons = None, []
            reasons.append(f"{forecast.name} is {forecast.state}: {forecast.basis}")
        elif opens is not None:
            opens = max(opens, forecast.eta)
            reasons.append(f"{forecast.name} synced by {at(forecast.eta)}")
    return Gate(opens, "batches-completed", "; ".join(reasons) or "every batch is synced"), needs


def cutover(gates: Sequence[Gate], *, needs: Sequence[str] = (), done: datetime | None) -> CutoverForecast:
    """The earliest cutover: the latest of the gates' openings; a gate that time alone cannot open
    decides first. `needs` is carried along: the earliest time assumes a person does them."""
    if done is not None:
        return CutoverForecast(done, None, f"cut over at {at(done)}", done=done)
    unforecast = next((g for g in gates if g.opens is None), None)
    if unforecast is not None:
        return CutoverForecast(None, unforecast.gate, unforecast.reason, tuple(needs))
    if not gates:
        return CutoverForecast(None, None, "no cutover record in the repository", tuple(needs))
    deciding = max(gates, key=lambda g: g.opens or datetime.min)
    return CutoverForecast(deciding.opens, deciding.gate, deciding.reason, tuple(needs))


def timeline(desired: DesiredState, snapshot: Snapshot, planned: Plan, memory: Memory) -> dict[str, object]:
    """The DNS cutover: per cutover record since when its TTL is low, when its values may swap and when
    they did; the SPF phase of each `spf:` record; when the MX cutover was seen; what holds it."""
    records = []
    for record in desired.records:
        if not record.cutover:
            continue
        since = memory.lowTtlSince.get(record.key)
        lead = _lead(desired, memory, record.key)
        swapped = memory.swappedAt.get(record.key)
        records.append(
            {
                "record": record.key,
                "lowTtlSince": None if since is None else at(since),
                "swapPossibleAt": None if since is None else at(since + lead),
                "leadTime": int(lead.total_seconds()),
                "swappedAt": None if swapped is None else at(swapped),
                "blocked": [
                    {"gate": b.gate, "reason": b.reason}
                    for b in planned.blocked
                    if b.object == f"dns/{record.key}"
                ],
            }
        )
    started = any(
        BatchStatus.parse(b.Status) not in (None, BatchStatus.CREATED)
        for b in snapshot.exchange.batches or []
    )
    if memory.cutoverAt is not None:
        spf_phase = "final: the repository's string, Exchange Online sends all mail"
    elif started:
        spf_phase = "coexistence: on-premises and Exchange Online (include:spf.protection.outlook.com)"
    else:
        spf_phase = "before the first batch: the string as found"
    return {
        "records": records,
        "spf": [{"record": r.key, "phase": spf_phase} for r in desired.records if r.spf is not None],
        "cutoverAt": None if memory.cutoverAt is None else at(memory.cutoverAt),
    }


def assemble(
    desired: DesiredState,
    snapshot: Snapshot,
    planned: Plan,
    memory: Memory,
    batches: list[BatchForecast],
) -> dict[str, object]:
    """Per batch its ETA; the earliest cutover: the latest of the batches' ETAs and of each cutover
    record's TTL lead, or the gate that waits on a person (members-arrived) or on a reading."""
    now = snapshot.observedAt
    state_of = {b.key: b.state.value for b in desired.batches}
    gate, needs = batches_gate((f for f in batches if state_of.get(f.name.lower()) != "removed"), now=now)
    gates = [gate]
    needs += [
        f"{b.gate}: {b.reason}"
        for b in planned.blocked
        if b.object == "migration" and b.gate == "members-arrived"
    ]
    for record in desired.records:
        if not record.cutover or record.key in memory.swappedAt:
            continue
        since = memory.lowTtlSince.get(record.key)
        lead = _lead(desired, memory, record.key)
        zone = snapshot.dns.get(record.zone)
        found = next(
            (r for r in zone or [] if r.name.lower() == record.name.lower() and r.type == record.type.value),
            None,
        )
        if since is not None:
            gates.append(Gate(max(now, since + lead), "ttl-lead", f"{record.key}: TTL low since {at(since)}"))
        elif found is not None and found.ttl > desired.policy.low_ttl:
            # Lowered in this pass: the lead counts from the next observation at the earliest.
            gates.append(Gate(now + lead, "ttl-lead", f"{record.key}: the TTL is lowered now"))
        else:  # low on the primary but not seen low everywhere, or not read: the plan says why
            held = [b.reason for b in planned.blocked if b.object == f"dns/{record.key}"]
            gates.append(
                Gate(None, "ttl-lead", f"{record.key}: {held[0] if held else 'not yet observed low'}")
            )
    return {
        "at": at(now),
        "batches": [f.as_data() for f in batches],
        "cutover": cutover(gates, needs=needs, done=memory.cutoverAt).as_data(),
    }


def _lead(desired: DesiredState, memory: Memory, key: str) -> timedelta:
    """max(ttlLeadTime, the TTL before lowering), as the ttl-lead gate measures it (planner/cutover.py)."""
    return max(desired.policy.ttl_lead_time, timedelta(seconds=memory.ttlBeforeLowering.get(key, 0)))
