"""The SPF string through the migration (contract §4): left alone until the first batch starts, then a
coexistence string that authorises on-premises and Exchange Online, then the repository's string in the
same pass as the MX swap. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controller.desired.models import Record, RecordType
from controller.model.actions import Action, DnsAction, DnsChangeKind, ExchangeAction
from controller.model.snapshot import ExchangeObserved, Memory, RRset
from controller.model.statuses import BatchStatus
from controller.planner import spf
from controller.planner.draft import Draft
from controller.planner.records import action, desired_values, obj, same_values

# Where Exchange Online receives a domain's mail (exchange-facts §7): the long-standing host, and the
# `*.mx.microsoft` host new accepted domains get (DNSSEC, DANE).
EXCHANGE_ONLINE_MX = (".mail.protection.outlook.com", ".mx.microsoft")


@dataclass(frozen=True, slots=True)
class Phase:
    """Where a zone's mail goes: `final` once the MX swap is observed or planned in this pass."""

    final: bool
    started: bool  # a batch has started (or starts in this plan): Exchange Online sends for migrated users
    mx_gate: tuple[str, str] | None  # the gate and reason holding the MX swap, when one does
    mx_onprem: bool = False  # the repository's MX points elsewhere than Exchange Online (a revert)


def phase(
    draft: Draft,
    zone: str,
    records: list[Record],
    observed: list[RRset],
    *,
    batches_gate: str | None,
    exchange: ExchangeObserved,
) -> Phase:
    """The zone's apex MX decides; a zone without a cutover MX goes final when the batches gate opens."""
    mx = next((r for r in records if r.cutover and r.type is RecordType.MX and r.name == "@"), None)
    mx_gate: tuple[str, str] | None = None
    onprem = mx is not None and not any(_exchange_online_host(v) for v in mx.values)
    if mx is None:
        final = batches_gate is None
        if batches_gate is not None:
            mx_gate = ("batches-completed", batches_gate)
    else:
        found = next((rr for rr in observed if rr.name == "@" and rr.type == "MX"), None)
        at_desired = found is not None and same_values(mx, found, desired_values(mx, found))
        swapping = any(
            isinstance(a, DnsAction) and a.object == obj(mx) and a.kind != "ttl" for a in draft.actions
        )
        final = at_desired or swapping
        mx_gate = next(((b.gate, b.reason) for b in draft.blocked if b.object == obj(mx)), None)
    started = (
        any(BatchStatus.parse(b.Status) not in (None, BatchStatus.CREATED) for b in exchange.batches or ())
        or first_start(draft.actions) is not None
    )
    return Phase(final=final, started=started, mx_gate=mx_gate, mx_onprem=onprem)


def _exchange_online_host(mx_value: str) -> bool:
    """`0 contoso-com.mail.protection.outlook.com.` or `0 contoso-com.a-v1.mx.microsoft.`."""
    host = mx_value.split()[-1].lower().rstrip(".")
    return host.endswith(EXCHANGE_ONLINE_MX)


def first_start(actions: Sequence[Action]) -> int | None:
    """Where the first batch start of the plan is: the coexistence string must be in place before it."""
    return next((index for index, planned in enumerate(actions) if is_start(planned)), None)


def is_start(planned: Action) -> bool:
    """A batch start: from it, migrated users send from Exchange Online."""
    return isinstance(planned, ExchangeAction) and (
        planned.cmdlet == "Start-MigrationBatch"
        or (planned.cmdlet == "New-MigrationBatch" and planned.params.get("AutoStart") is True)
    )


def hold_starts(draft: Draft, why: list[str], before: Memory) -> None:
    """Without an SPF string that authorises Exchange Online, no batch starts: migrated users would send
    unauthorised (receivers reject or junk their mail). Each start is blocked under the `spf` gate;
    a held retry is not counted (`before` is the memory the pass began with)."""
    if not why:
        return
    held = [a for a in draft.actions if is_start(a)]
    draft.actions = [a for a in draft.actions if not is_start(a)]
    draft.remember(retries=uncounted(draft.memory, held, before).retries)
    for start in held:
        draft.block(
            start.object,
            "spf",
            "the batch does not start until the SPF string authorises Exchange Online (else migrated users "
            f"send unauthorised): {'; '.join(why)}",
        )


def uncounted(memory: Memory, held: Sequence[Action], before: Memory) -> Memory:
    """`memory` without the retries counted for starts that were held: a retry not sent is not spent."""
    retries = dict(memory.retries)
    for start in held:
        key = start.object.removeprefix("batch/").lower()
        if key in before.retries:
            retries[key] = before.retries[key]
        else:
            retries.pop(key, None)
    return memory.model_copy(update={"retries": retries})


def plan_spf(draft: Draft, record: Record, found: RRset | None, now_phase: Phase) -> str | None:
    """One `spf:` record: refuse what RFC 7208 makes an error, else the string its phase calls for.
    Returns why Exchange Online stays unauthorised at this name before the MX swap, None when it is not."""
    assert record.spf is not None
    name = obj(record)
    observed = spf.spf_strings(found.values) if found is not None else []
    unauthorised = not now_phase.final and not (observed and spf.authorises_exchange_online(observed[0]))
    if len(observed) > 1:
        why = (
            f"{len(observed)} SPF strings at {record.name} ({' | '.join(observed)}): receivers treat that "
            "as a permerror (RFC 7208 §4.5); leave one before the controller changes SPF"
        )
        draft.block(name, "spf", why)
        return f"{name}: {why}" if not now_phase.final else None
    over = _over_limit(draft, record, record.spf, "the repository's SPF string", "in the repository")
    if over is not None:
        return f"{name}: {over}" if unauthorised else None
    if now_phase.mx_onprem and spf.only_exchange_online(record.spf):
        # A revert of the cutover commit sends mail back on-premises; the final string would fail
        # on-premises outbound mail. What on-premises needed is not remembered, so a person decides.
        served = f"{observed[0]!r} is served" if observed else "no SPF string is served"
        draft.block(
            name,
            "spf",
            f"the MX points on-premises in the repository (a revert of the cutover?) but the repository's "
            f"SPF string {record.spf!r} authorises Exchange Online only ({served}): on-premises outbound "
            "mail fails SPF; revert the SPF string in the repository too, to the on-premises mechanisms "
            f"plus {spf.EXCHANGE_ONLINE}",
        )
        return None
    final = desired_values(record, found)
    if found is not None and same_values(record, found, final):
        if found.ttl != record.ttl:
            draft.act(
                action(
                    record,
                    final,
                    found,
                    kind="ttl",
                    ttl=record.ttl,
                    reason=f"TTL {found.ttl} -> {record.ttl}",
                )
            )
        return None
    if now_phase.final:
        kind: DnsChangeKind = "create" if found is None else "update"
        reason = "with the MX swap, the final SPF string: Exchange Online receives and sends all mail now"
        draft.act(action(record, final, found, kind=kind, ttl=record.ttl, reason=reason))
        return None
    gate, why = now_phase.mx_gate or ("batches-completed", "the MX has not been swapped yet")
    if not now_phase.started:
        draft.block(
            name,
            gate,
            "on-premises phase: no batch has started, so the SPF string stays as it is; from the first "
            f"started batch it authorises Exchange Online too, and it becomes {record.spf!r} with the "
            "MX swap",
        )
        return None
    if not observed or found is None:
        draft.block(
            name,
            gate,
            f"coexistence phase: no SPF string at {record.name} to extend; {record.spf!r} is written with "
            f"the MX swap ({why})",
        )
        return None  # no SPF string: receivers have nothing to fail Exchange Online against
    coexisting = spf.coexistence(observed[0])
    if coexisting == observed[0]:
        draft.block(
            name,
            gate,
            "coexistence phase: the SPF string authorises on-premises and Exchange Online until the MX swap; "
            f"{record.spf!r} follows with it ({why})",
        )
        return None
    over = _over_limit(draft, record, coexisting, "the coexistence SPF string", f"at {record.name} first")
    if over is not None:
        return f"{name}: {over}"
    values = desired_values(record, found, spf=coexisting)
    coexist = action(
        record,
        values,
        found,
        kind="update",
        ttl=record.ttl,
        reason="coexistence phase from the first started batch: migrated users send from Exchange Online "
        f"while the MX still points on-premises: {observed[0]!r} -> {coexisting!r}",
    )
    start = first_start(draft.actions)
    draft.actions.insert(len(draft.actions) if start is None else start, coexist)
    return None


def _over_limit(draft: Draft, record: Record, text: str, what: str, where: str) -> str | None:
    """Blocks the record and says why when `text` needs more DNS lookups than RFC 7208 allows."""
    count = spf.lookups(text)
    if count <= spf.MAX_LOOKUPS:
        return None
    why = (
        f"{what} {text!r} would need {count} DNS lookups, more than the {spf.MAX_LOOKUPS} RFC 7208 §4.6.4 "
        f"allows (receivers return permerror); shorten the SPF string {where}"
    )
    draft.block(obj(record), "spf", why)
    return why
