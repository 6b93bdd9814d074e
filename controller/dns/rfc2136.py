"""The RFC 2136 DNS backend: authoritative reads from every server, TSIG-signed UPDATEs to the primary.

Where each zone is served is found by `discovery`, read by `reading` and changed by `updating`. Updates
go to the primary and its answers are the truth; every server's answer is kept beside it (the TTL lead
is measured on the slowest), and the others are compared with it. One observation starts a pass: a
server that did not answer is not asked again until the next one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dns.rdata

from controller.dns import reading
from controller.dns.base import DnsObserved, DnsPermanentError, DnsTransientError
from controller.dns.discovery import Locator
from controller.dns.questions import Silence, Unanswered
from controller.dns.settings import Rfc2136Settings, Rfc2136ZoneSettings
from controller.dns.tsig import load_key
from controller.dns.updating import apply_update
from controller.dns.wire import MessageCounts, Server
from controller.model.actions import DnsAction
from controller.model.snapshot import RRset

HeldKey = tuple[str, str, str]  # (zone, relative name in lower case, TYPE in upper case)


class Unknown(Exception):
    """A zone that could not be read; the text says why, for `DnsObserved.errors`."""


class Rfc2136Backend:
    """DnsBackend over dnspython. `messages` counts what was sent; `serials`: each primary's SOA serial."""

    def __init__(self, settings: Rfc2136Settings) -> None:
        self.settings = settings
        self.messages = MessageCounts()
        self.serials: dict[str, int] = {}
        self._silence = Silence()
        self._locator = Locator(self.messages, self._silence)
        # The rdata each primary held when last read: an UPDATE's prerequisite is exactly that.
        self._held: dict[HeldKey, tuple[dns.rdata.Rdata, ...]] = {}

    def observe(self, wanted: Mapping[str, Sequence[tuple[str, str]]]) -> DnsObserved:
        self._silence.new_pass()
        zones: dict[str, list[RRset] | None] = {}
        findings: list[str] = []
        errors: dict[str, str] = {}
        for zone, names in wanted.items():
            try:
                zones[zone] = self._observe_zone(zone, names, findings)
            except Unknown as why:
                # Unknown, never absent: the planner must not act on a zone it could not read.
                zones[zone] = None
                errors[zone] = str(why)
                findings.append(f"{zone}: {why}; the zone is unknown")
        return DnsObserved(zones=zones, findings=tuple(findings), errors=errors)

    def _observe_zone(self, zone: str, names: Sequence[tuple[str, str]], findings: list[str]) -> list[RRset]:
        settings = self.settings.for_zone(zone)
        if settings is None:
            raise Unknown("no DNS servers are configured for this zone")
        try:
            location = self._locator.locate(zone, settings)
        except Unanswered as error:
            raise Unknown(str(error)) from None
        findings.extend(location.notes)
        keys = list(dict.fromkeys((name.lower(), rdtype.upper()) for name, rdtype in names))
        reads = reading.read_servers(
            zone,
            location.servers,
            keys,
            primary=location.primary,
            timeout=settings.timeout,
            counts=self.messages,
            silence=self._silence,
        )
        primary = self._locator.settle(zone, location, reads)
        if primary is None:
            mname = reading.first_mname(reads)
            if mname is not None:
                raise Unknown(location.no_primary(mname))
            why = ", ".join(f"{server} ({answer})" for server, answer in reads.items())
            raise Unknown(f"none of its servers could be read: {why}")
        truth = reads.get(primary)
        if not isinstance(truth, reading.Served):
            raise Unknown(f"the primary {primary} could not be read ({truth})")
        stale = reading.ahead_of_primary(primary, truth, reads)
        if stale is not None:
            raise Unknown(stale)  # a server ahead of the primary: its answers are not the truth
        self.serials[zone] = truth.soa.serial
        for key in keys:
            self._held.pop((zone, *key), None)
        self._held.update({(zone, *key): held for key, held in truth.held.items()})
        findings.extend(reading.wildcard_findings(zone, truth))
        findings.extend(reading.disagreements(zone, primary, truth, reads, keys))
        found = [(key, rrset) for key, rrset in truth.rrsets.items() if rrset is not None]
        if len(location.servers) == 1:
            return [rrset for _, rrset in found]  # one source only: its answer is the RRset
        return [
            rrset.model_copy(update={"servers": reading.server_answers(key, primary, reads)})
            for key, rrset in found
        ]

    def apply(self, action: DnsAction) -> None:
        settings = self.settings.for_zone(action.zone)
        if settings is None or settings.keyRef is None:
            raise DnsPermanentError(f"{action.object}: no TSIG key is configured for the zone {action.zone}")
        key = load_key(settings.keyRef)
        try:
            primary = self._locator.primary(action.zone, settings)
            held = self._held_now(action, primary, settings)
        except Unanswered as error:
            raise (DnsTransientError if error.transient else DnsPermanentError)(
                f"{action.zone}: {error}; no update was sent"
            ) from None
        apply_update(action, key, primary, held=held, timeout=settings.timeout, counts=self.messages)
        self._held.pop((action.zone, action.name.lower(), action.type.upper()), None)

    def _held_now(
        self, action: DnsAction, primary: Server, settings: Rfc2136ZoneSettings
    ) -> tuple[dns.rdata.Rdata, ...] | None:
        """The rdata the primary holds, as last read; for TXT read now when it was not (its split matters)."""
        key = (action.name.lower(), action.type.upper())
        held = self._held.get((action.zone, *key))
        if held is not None or action.previous_values is None or key[1] not in ("TXT", "SPF"):
            return held
        found = reading.read_answer(
            action.zone, primary, key, timeout=settings.timeout, counts=self.messages, silence=self._silence
        )
        return None if found is None else tuple(found)
