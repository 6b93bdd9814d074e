"""Drift: something the controller had settled changed without a commit and without the controller.

Only the facets a person (or Exchange's own housekeeping) can change are compared: whether an object
exists, a batch's membership and whether it was stopped, endpoint settings, an RRset's values and TTL
(for an `spf:` record, its `v=spf1` string alone: other TXT strings at the name are not managed).
Progress Exchange makes by itself (Syncing -> Synced) is not drift. A baseline is taken when an object
settles; a new desired spec or an action of ours re-takes it, so our own changes are never drift.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from controller.desired.models import Batch, DesiredState
from controller.model.snapshot import Snapshot
from controller.model.statuses import BatchStatus
from controller.planner.spf import spf_strings

Facets = dict[str, object]


@dataclass(frozen=True, slots=True)
class Baseline:
    desired: str  # fingerprint of the object's desired spec when the baseline was taken
    facets: Facets


@dataclass(frozen=True, slots=True)
class Finding:
    object: str
    expected: Facets  # the baseline: what the controller had converged
    observed: Facets

    @property
    def system(self) -> str:
        return "dns" if self.object.startswith("dns/") else "exchange"


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def desired_fingerprints(desired: DesiredState) -> dict[str, str]:
    """Per managed object, a fingerprint of what the repository says about it."""
    prints = {f"endpoint/{desired.migration.endpoint.name}": _digest(desired.migration.endpoint.model_dump())}
    emails = sorted(e.lower() for e in desired.migration.notification_emails)
    for batch in desired.batches:
        spec = [batch.state.value, batch.members_digest, str(batch.start_after), emails]
        prints[f"batch/{batch.name}"] = _digest(spec)
    for record in desired.records:
        prints[f"dns/{record.key}"] = _digest([record.ttl, list(record.values), record.spf, record.cutover])
    return prints


def observed_facets(desired: DesiredState, snapshot: Snapshot) -> dict[str, Facets]:
    """Per managed object whose kind was read, the facets a person can change; unknown kinds are left out."""
    facets: dict[str, Facets] = {}
    exchange = snapshot.exchange
    endpoint = desired.migration.endpoint
    if exchange.endpoints is not None:
        found = next((e for e in exchange.endpoints if e.Identity.lower() == endpoint.name.lower()), None)
        facets[f"endpoint/{endpoint.name}"] = (
            {"exists": False}
            if found is None
            else {
                "exists": True,
                "ExchangeServer": (found.ExchangeServer or "").lower(),
                "RpcProxyServer": (found.RpcProxyServer or "").lower(),
                "Authentication": found.Authentication,
                "MaxConcurrentMigrations": found.MaxConcurrentMigrations,
            }
        )
    if exchange.batches is not None:
        batches = {b.Identity.lower(): b for b in exchange.batches}
        members: dict[str, list[str]] = {}
        for user in exchange.users or []:
            members.setdefault(user.BatchId.lower(), []).append(user.Identity.lower())
        for batch in desired.batches:
            observed_batch = batches.get(batch.key)
            if observed_batch is None:
                facets[f"batch/{batch.name}"] = {"exists": False}
                continue
            if not exchange.users_read(batch.name):
                # Users unknown this pass: unknown is not drift, the baseline stands. Or left unread
                # (contract §3.1: finished or quietly syncing), its counts unchanged, so its baseline
                # stands as taken (see `unread` for when it is re-taken).
                continue
            status = BatchStatus.parse(observed_batch.Status)
            facets[f"batch/{batch.name}"] = {
                "exists": True,
                "stopped": status in (BatchStatus.STOPPED, BatchStatus.STOPPING),
                "members": sorted(members.get(batch.key, [])),
            }
    for record in desired.records:
        observed = snapshot.dns.get(record.zone)
        if observed is None:
            continue
        rrset = next(
            (r for r in observed if r.name.lower() == record.name.lower() and r.type == record.type.value),
            None,
        )
        key = f"dns/{record.key}"
        if record.spf is not None:
            # Only the `v=spf1` string is the controller's: a verification token added by hand at the
            # name (or the RRset's TTL it brought) is not drift. The string shown is what is served.
            facets[key] = {"spf": sorted(spf_strings(rrset.values if rrset is not None else []))}
        elif rrset is None:
            facets[key] = {"exists": False}
        else:
            facets[key] = {"exists": True, "ttl": rrset.ttl, "values": sorted(rrset.values)}
    return facets


def unread(desired: DesiredState, snapshot: Snapshot) -> dict[str, Batch]:
    """The repository's batches whose users were not read because they are finished or quietly syncing
    (contract §3.1), by object."""
    exchange = snapshot.exchange
    if exchange.batches is None or exchange.users is None:
        return {}
    present = {b.Identity.lower() for b in exchange.batches}
    return {
        f"batch/{batch.name}": batch
        for batch in desired.batches
        if batch.key in present and not exchange.users_read(batch.name)
    }


def verified_facets(batch: Batch) -> Facets:
    """What an unread batch was verified to be: there, not stopped, holding the repository's members.

    Its baseline is re-taken from these when its spec changed or we acted on it, while it is not read.
    """
    return {"exists": True, "stopped": False, "members": sorted(batch.member_keys)}


def detect(
    *,
    desired: Mapping[str, str],
    observed: Mapping[str, Facets],
    baselines: Mapping[str, Baseline],
    acted: set[str],
) -> tuple[list[Finding], dict[str, Baseline]]:
    """Compare each object with its baseline; return the drift found and the baselines to keep.

    An object whose desired spec changed, that we acted on in the last pass, or that has no baseline
    yet gets a new baseline; a drifted object keeps its old one so the drift stays visible until it
    clears (observed equals the baseline again).
    """
    findings: list[Finding] = []
    kept: dict[str, Baseline] = {}
    for obj, facets in observed.items():
        print_ = desired.get(obj)
        if print_ is None:
            continue
        base = baselines.get(obj)
        # A baseline of another shape (an `spf:` record saved before its facet was the string alone) is
        # re-taken, not compared.
        reshaped = base is not None and ("spf" in base.facets) != ("spf" in facets)
        if base is None or reshaped or base.desired != print_ or obj in acted or base.facets == facets:
            kept[obj] = Baseline(print_, facets)
        else:
            findings.append(Finding(obj, base.facets, facets))
            kept[obj] = base
    for obj, base in baselines.items():  # kinds not read this pass keep their baseline: unknown is not absent
        if obj not in observed and obj in desired:
            kept[obj] = base
    return findings, kept
