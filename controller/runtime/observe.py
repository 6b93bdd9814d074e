"""Observe: read Exchange and the managed DNS RRsets and join them with memory into a Snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from controller.desired.models import DesiredState
from controller.dns.base import DnsBackend
from controller.model.snapshot import ExchangeObserved, Memory, Snapshot

# Said when a reader left something unknown without a reason (an old snapshot, a backend that gives none).
NO_REASON = "could not be read (no reason was recorded)"


class ExchangeReader(Protocol):
    def observe(self) -> ExchangeObserved: ...

    @property
    def unreadable(self) -> Mapping[str, str]:
        """Why each kind the last observe() left unknown could not be read ("exchange/batches")."""
        ...


def wanted_rrsets(desired: DesiredState) -> dict[str, list[tuple[str, str]]]:
    """Per zone, the (relative name, TYPE) pairs the repository manages: nothing else is read."""
    wanted: dict[str, list[tuple[str, str]]] = {}
    for zone in desired.zones:
        wanted[zone.name] = [(record.name, record.type.value) for record in zone.records]
    return wanted


def observe(
    desired: DesiredState, *, exchange: ExchangeReader, dns: DnsBackend, memory: Memory, now: datetime
) -> tuple[Snapshot, tuple[str, ...]]:
    """The snapshot and the DNS findings (for example two authoritative servers that disagree).

    `Snapshot.unreadable` says why each unknown kind or zone could not be read, as the readers said it.
    """
    exchange_observed = exchange.observe()
    dns_observed = dns.observe(wanted_rrsets(desired))
    dns_reasons = {
        f"dns/{zone}": dns_observed.errors.get(zone, NO_REASON)
        for zone, rrsets in dns_observed.zones.items()
        if rrsets is None
    }
    snapshot = Snapshot(
        observedAt=now,
        exchange=exchange_observed,
        dns=dict(dns_observed.zones),
        unreadable={**exchange.unreadable, **dns_reasons},
        memory=memory,
    )
    return snapshot, dns_observed.findings


def unknown(snapshot: Snapshot) -> dict[str, str]:
    """Everything the snapshot could not read ("exchange/batches", "dns/contoso.com") and why.

    Taken from what is `None`, not only from `unreadable`, so that a snapshot written without reasons
    still never passes for a complete one.
    """
    found: dict[str, str] = {}
    for kind, value in snapshot.exchange:
        if value is None:
            found[f"exchange/{kind}"] = snapshot.unreadable.get(f"exchange/{kind}", NO_REASON)
    for zone, rrsets in snapshot.dns.items():
        if rrsets is None:
            found[f"dns/{zone}"] = snapshot.unreadable.get(f"dns/{zone}", NO_REASON)
    return found
