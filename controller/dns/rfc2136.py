"""The RFC 2136 DNS backend: authoritative reads from every server, TSIG-signed UPDATEs to the primary.

Where each zone is served is found by `discovery`, read by `reading` and changed by `updating`. Updates
go to the primary and its answers are the truth; the other servers are compared with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from controller.dns import reading
from controller.dns.base import DnsObserved, DnsPermanentError, DnsTransientError
from controller.dns.discovery import Locator
from controller.dns.questions import Unanswered
from controller.dns.settings import Rfc2136Settings
from controller.dns.tsig import load_key
from controller.dns.updating import apply_update
from controller.dns.wire import MessageCounts
from controller.model.actions import DnsAction
from controller.model.snapshot import RRset


class Rfc2136Backend:
    """DnsBackend over dnspython. `messages` counts what was sent; `serials`: each primary's SOA serial."""

    def __init__(self, settings: Rfc2136Settings) -> None:
        self.settings = settings
        self.messages = MessageCounts()
        self.serials: dict[str, int] = {}
        self._locator = Locator(self.messages)

    def observe(self, wanted: Mapping[str, Sequence[tuple[str, str]]]) -> DnsObserved:
        zones: dict[str, list[RRset] | None] = {}
        findings: list[str] = []
        for zone, names in wanted.items():
            zones[zone] = self._observe_zone(zone, names, findings)
        return DnsObserved(zones=zones, findings=tuple(findings))

    def _observe_zone(
        self, zone: str, names: Sequence[tuple[str, str]], findings: list[str]
    ) -> list[RRset] | None:
        settings = self.settings.for_zone(zone)
        if settings is None:
            findings.append(f"{zone}: no DNS servers are configured for this zone; it is unknown")
            return None
        try:
            location = self._locator.locate(zone, settings)
        except Unanswered as error:
            # Unknown, never absent: a zone whose servers cannot be found is not a zone without records.
            findings.append(f"{zone}: {error}; the zone is unknown")
            return None
        findings.extend(location.notes)
        keys = list(dict.fromkeys((name.lower(), rdtype.upper()) for name, rdtype in names))
        reads = reading.read_servers(
            zone,
            location.servers,
            keys,
            primary=location.primary,
            timeout=settings.timeout,
            counts=self.messages,
        )
        primary = self._locator.settle(zone, location, reads)
        truth = reads.get(primary)
        if not isinstance(truth, reading.Served):
            # Unknown, never absent: the planner must not act on a zone it could not read.
            findings.append(f"{zone}: the primary {primary} could not be read ({truth}); the zone is unknown")
            return None
        self.serials[zone] = truth.soa.serial
        findings.extend(reading.disagreements(zone, primary, truth, reads, keys))
        return [rrset for rrset in truth.rrsets.values() if rrset is not None]

    def apply(self, action: DnsAction) -> None:
        settings = self.settings.for_zone(action.zone)
        if settings is None or settings.keyRef is None:
            raise DnsPermanentError(f"{action.object}: no TSIG key is configured for the zone {action.zone}")
        key = load_key(settings.keyRef)
        try:
            primary = self._locator.primary(action.zone, settings)
        except Unanswered as error:
            raise (DnsTransientError if error.transient else DnsPermanentError)(
                f"{action.zone}: {error}; no update was sent"
            ) from None
        apply_update(action, key, primary, timeout=settings.timeout, counts=self.messages)
