"""Settle an interrupted action by observation: is its effect there? Pure.

An action whose intent was recorded but whose result was not (the controller died with it in flight) is
never sent again blindly: after the next observation, its effect decides. `settle` answers from the
action as the journal holds it (its redacted data) and the snapshot:

- `APPLIED`: what the action was to bring about is observed (or the object already moved past it);
- `ABSENT`: it is not; the plan of this pass decides afresh whether to send it (it may, once);
- `UNKNOWN`: the kind it concerns could not be read: the intent stays open and nothing acts on the
  object until an observation can tell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from controller.model.actions import Action, ExchangeAction, Plan
from controller.model.snapshot import ObservedBatch, RRset, Snapshot
from controller.model.statuses import COMPLETED, RETRYABLE, BatchStatus


class Verdict(StrEnum):
    APPLIED = "applied"
    ABSENT = "not applied"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Settlement:
    verdict: Verdict
    reason: str  # one sentence: what was observed

    def result(self) -> str:
        """The journal's and the audit's result for the settled intent."""
        return f"settled: {self.verdict.value}: {self.reason}"


def settle(action: Mapping[str, object], snapshot: Snapshot, planned: Plan | None = None) -> Settlement:
    """`action` is an action's `as_data()`; `planned` this pass's plan, made from the same observation
    (settings and members added to a batch are told from it: the journal keeps the rows' count, not the
    addresses)."""
    if action.get("system") == "dns":
        return _dns(action, snapshot)
    cmdlet = str(action.get("cmdlet", ""))
    parameters = action.get("parameters")
    params: Mapping[str, object] = parameters if isinstance(parameters, dict) else {}
    if cmdlet.endswith("-MigrationEndpoint"):
        return _endpoint(cmdlet, params, snapshot)
    if cmdlet.endswith("-MigrationBatch") or cmdlet == "Remove-MigrationUser":
        retry = str(action.get("reason", "")).startswith("retry")
        return _batch(cmdlet, params, str(action.get("object", "")), snapshot, planned, retry=retry)
    return Settlement(
        Verdict.UNKNOWN, f"{cmdlet or 'this action'} has no observable effect this controller knows"
    )


# --- DNS ------------------------------------------------------------------------------------------


def _dns(action: Mapping[str, object], snapshot: Snapshot) -> Settlement:
    zone, name, rtype = str(action.get("zone")), str(action.get("name")), str(action.get("type"))
    observed = snapshot.dns.get(zone)
    if observed is None:
        return Settlement(Verdict.UNKNOWN, f"the zone {zone} could not be read")
    found = next((rr for rr in observed if rr.name.lower() == name.lower() and rr.type == rtype), None)
    values = [str(v) for v in _list(action.get("values"))]
    ttl = action.get("ttl")
    if not values:
        held = found is None
        seen = "absent" if found is None else _shown(found)
    else:
        held = found is not None and found.ttl == ttl and _same(rtype, found.values, values)
        seen = "absent" if found is None else _shown(found)
    if held:
        return Settlement(Verdict.APPLIED, f"{name} {rtype} in {zone} holds what was sent ({seen})")
    return Settlement(Verdict.ABSENT, f"{name} {rtype} in {zone} is {seen}, not what was sent")


def _same(rtype: str, left: Sequence[str], right: Sequence[str]) -> bool:
    """As the planner compares (planner.records): TXT strings exactly, other data without case."""
    if rtype == "TXT":
        return set(left) == set(right)
    return {" ".join(v.lower().split()) for v in left} == {" ".join(v.lower().split()) for v in right}


def _shown(found: RRset) -> str:
    return f"TTL {found.ttl} [{', '.join(found.values)[:200]}]"


# --- Exchange -------------------------------------------------------------------------------------


def _endpoint(cmdlet: str, params: Mapping[str, object], snapshot: Snapshot) -> Settlement:
    endpoints = snapshot.exchange.endpoints
    name = str(params.get("Name") or params.get("Identity") or "")
    if endpoints is None:
        return Settlement(Verdict.UNKNOWN, "migration endpoints could not be read")
    found = next((e for e in endpoints if e.Identity.lower() == name.lower()), None)
    if cmdlet == "Remove-MigrationEndpoint":
        return _either(found is None, f"endpoint {name} is absent", f"endpoint {name} still exists")
    if found is None:
        return Settlement(Verdict.ABSENT, f"endpoint {name} does not exist")
    if cmdlet == "New-MigrationEndpoint":
        return Settlement(Verdict.APPLIED, f"endpoint {name} exists")
    differing = [
        setting
        for setting in ("ExchangeServer", "RpcProxyServer", "Authentication", "MaxConcurrentMigrations")
        if setting in params and not _equal(params[setting], getattr(found, setting))
    ]
    return _either(
        not differing,
        f"endpoint {name} shows the settings sent",
        f"endpoint {name} differs in {', '.join(differing)}",
    )


def _batch(
    cmdlet: str,
    params: Mapping[str, object],
    obj: str,
    snapshot: Snapshot,
    planned: Plan | None,
    *,
    retry: bool,
) -> Settlement:
    batches = snapshot.exchange.batches
    name = obj.removeprefix("batch/") if obj.startswith("batch/") else str(params.get("Identity", ""))
    if cmdlet == "New-MigrationBatch":
        name = str(params.get("Name", name))
    if batches is None:
        return Settlement(Verdict.UNKNOWN, "migration batches could not be read")
    found = next((b for b in batches if b.Identity.lower() == name.lower()), None)
    status = None if found is None else BatchStatus.parse(found.Status)
    if cmdlet == "Remove-MigrationBatch":
        gone = found is None or status is BatchStatus.REMOVING
        return _either(gone, f"batch {name} is {_status(found)}", f"batch {name} is still {_status(found)}")
    if found is None:
        return Settlement(Verdict.ABSENT, f"batch {name} does not exist")
    if cmdlet == "New-MigrationBatch":
        return Settlement(Verdict.APPLIED, f"batch {name} exists ({found.Status})")
    if status is None:
        return Settlement(Verdict.UNKNOWN, f"batch {name} shows status {found.Status!r}, unknown here")
    shown = f"batch {name} is {found.Status}"
    if cmdlet == "Start-MigrationBatch":
        # A first start leaves Created/Stopped (a batch that failed at once did start); a retry of the
        # failed users leaves the failed statuses (exchange-facts §2).
        waiting = RETRYABLE if retry else {BatchStatus.CREATED, BatchStatus.STOPPED}
        return _either(status not in waiting, shown, shown)
    if cmdlet == "Stop-MigrationBatch":
        return _either(status in (BatchStatus.STOPPING, BatchStatus.STOPPED), shown, shown)
    if cmdlet == "Complete-MigrationBatch":
        return _either(status is BatchStatus.COMPLETING or status in COMPLETED, shown, shown)
    if cmdlet == "Remove-MigrationUser":
        return _user_removed(str(params.get("Identity", "")), name, snapshot)
    if cmdlet == "Set-MigrationBatch":
        return _batch_settings(params, found, obj, snapshot, planned)
    return Settlement(Verdict.UNKNOWN, f"{cmdlet} has no observable effect this controller knows")


def _user_removed(address: str, batch: str, snapshot: Snapshot) -> Settlement:
    users = snapshot.exchange.users
    if users is None or not snapshot.exchange.users_read(batch):
        return Settlement(Verdict.UNKNOWN, f"the migration users of batch {batch} were not read")
    found = next(
        (u for u in users if u.Identity.lower() == address.lower() and u.BatchId.lower() == batch.lower()),
        None,
    )
    if found is None:
        return Settlement(Verdict.APPLIED, f"{address} is no longer a migration user of {batch}")
    if found.Status.lower() == "removing":  # Exchange is carrying it out
        return Settlement(Verdict.APPLIED, f"{address} is being removed from {batch}")
    return Settlement(Verdict.ABSENT, f"{address} is still a migration user of {batch} ({found.Status})")


def _batch_settings(
    params: Mapping[str, object], found: ObservedBatch, obj: str, snapshot: Snapshot, planned: Plan | None
) -> Settlement:
    name = found.Identity
    actions: Sequence[Action] = planned.actions if planned is not None else ()
    if params.get("AddUsers"):
        # The journal holds the rows' count, not the addresses; the plan made from this observation adds
        # exactly the members Exchange does not show, so its own AddUsers call tells what is missing —
        # unless the plan waits on or holds the batch, when it would not add them either way.
        if not snapshot.exchange.users_read(name):
            return Settlement(Verdict.UNKNOWN, f"the migration users of batch {name} were not read")
        held = {w.object for w in planned.waiting} | {b.object for b in planned.blocked} if planned else set()
        if obj in held:
            return Settlement(
                Verdict.UNKNOWN, f"batch {name} waits or is held: whether members are missing is not told yet"
            )
        again = any(
            isinstance(a, ExchangeAction) and a.object == obj and a.params.get("AddUsers") for a in actions
        )
        return _either(
            not again,
            f"batch {name} holds every member the repository adds",
            f"batch {name} still lacks members; this pass's plan adds them",
        )
    # Settings (notification addresses, StartAfter, CompleteAfter): the plan made from this observation
    # corrects exactly the settings that differ, so whether it still holds a settings call tells.
    again = any(
        isinstance(a, ExchangeAction)
        and a.object == obj
        and a.cmdlet == "Set-MigrationBatch"
        and not a.params.get("AddUsers")
        for a in actions
    )
    return _either(not again, f"batch {name} shows the settings sent", f"batch {name} still differs")


def _either(held: bool, applied: str, absent: str) -> Settlement:
    return Settlement(Verdict.APPLIED, applied) if held else Settlement(Verdict.ABSENT, absent)


def _equal(sent: object, seen: object) -> bool:
    if seen is None:
        return False
    if isinstance(sent, str) and isinstance(seen, str):
        return sent.lower().rstrip(".") == seen.lower().rstrip(".")
    return sent == seen


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


def _status(found: ObservedBatch | None) -> str:
    return "absent" if found is None else found.Status
