"""Observe: read Exchange and the managed DNS RRsets and join them with memory into a Snapshot."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from controller.desired.models import DesiredState
from controller.dns.base import DnsBackend
from controller.model.snapshot import ExchangeObserved, Memory, Snapshot


class ExchangeReader(Protocol):
    def observe(self) -> ExchangeObserved: ...


def wanted_rrsets(desired: DesiredState) -> dict[str, list[tuple[str, str]]]:
    """Per zone, the (relative name, TYPE) pairs the repository manages: nothing else is read."""
    wanted: dict[str, list[tuple[str, str]]] = {}
    for zone in desired.zones:
        wanted[zone.name] = [(record.name, record.type.value) for record in zone.records]
    return wanted


def observe(
    desired: DesiredState, *, exchange: ExchangeReader, dns: DnsBackend, memory: Memory, now: datetime
) -> tuple[Snapshot, tuple[str, ...]]:
    """The snapshot and the DNS findings (for example two authoritative servers that disagree)."""
    exchange_observed = exchange.observe()
    dns_observed = dns.observe(wanted_rrsets(desired))
    snapshot = Snapshot(
        observedAt=now, exchange=exchange_observed, dns=dict(dns_observed.zones), memory=memory
    )
    return snapshot, dns_observed.findings
