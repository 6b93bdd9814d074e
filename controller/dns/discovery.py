"""Where a zone is served: its authoritative servers and its primary, configured or discovered.

The servers are `servers` as configured, or the zone's NS records looked up through a `resolver` (a
recursive resolver, or an authoritative server answering for its own zone). An NS record carries no
port, so every discovered server is asked on the resolver's port: the same port everywhere, as name
servers on port 53 are. The primary is `primary` when configured, else the one configured server when
there is only one; otherwise the server the SOA MNAME names (looked up through the resolver, or without
one matched by name against the configured hosts). The list order never decides: when the MNAME names
none of the servers, or they are addresses with no resolver to match it, there is no primary and the
zone is unknown until `primary:` is set.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from controller.dns.questions import Silence, Unanswered, resolve
from controller.dns.reading import Served, first_mname, read_soa
from controller.dns.settings import Rfc2136ZoneSettings
from controller.dns.wire import MessageCounts, Server


@dataclass(frozen=True)
class Location:
    """Where a zone is served: `servers` (the primary first when known); `notes` become findings."""

    servers: tuple[Server, ...]
    primary: Server | None  # None: the SOA MNAME read decides (by host name), or no server is the primary
    notes: tuple[str, ...] = ()
    expires: float = math.inf  # monotonic time; discovered servers are kept for the lookups' TTL
    addresses_only: bool = False  # configured addresses and no resolver: nothing can match the MNAME

    def named_primary(self, mname: dns.name.Name | None) -> Server | None:
        """The primary as located, else the server whose host name is the SOA MNAME, else None."""
        if self.primary is not None:
            return self.primary
        if mname is None:
            return None
        return next((server for server in self.servers if _same_name(server.host, mname)), None)

    def no_primary(self, mname: dns.name.Name) -> str:
        """Why there is no primary: the MNAME names none of the servers, and a guess may read a stale one."""
        servers = ", ".join(str(server) for server in self.servers)
        if self.addresses_only:
            return (
                f"its servers are given as addresses ({servers}), which cannot be matched to the SOA MNAME"
                f" {mname} without a `resolver`: set `primary:` for this zone so that a secondary is never"
                " read as the truth"
            )
        return (
            f"the SOA MNAME {mname} names none of its servers ({servers}): set `primary:` for this zone"
            " so that a secondary is never read as the truth"
        )


class Locator:
    """Finds where each zone is served, keeping what a resolver said until its TTL runs out."""

    def __init__(self, counts: MessageCounts, silence: Silence) -> None:
        self.counts = counts
        self.silence = silence
        self._located: dict[str, Location] = {}  # discovered through a resolver, until the TTL runs out
        self._primaries: dict[str, Server] = {}  # the primary each zone's last observation settled on

    def locate(self, zone: str, settings: Rfc2136ZoneSettings) -> Location:
        """The servers to read and the primary; raises Unanswered with a sentence when discovery fails."""
        cached = self._located.get(zone)
        if cached is not None and time.monotonic() < cached.expires:
            return cached
        explicit = Server.parse(settings.primary) if settings.primary else None
        resolver = Server.parse(settings.resolver) if settings.resolver else None
        notes: tuple[str, ...] = ()
        expires = math.inf
        if settings.servers is not None:
            servers = [Server.parse(text) for text in settings.servers]
        else:
            assert resolver is not None  # the settings validator requires one of the two
            servers, notes, ttl = self._discover(zone, resolver, timeout=settings.timeout)
            expires = time.monotonic() + ttl
        primary: Server | None = None
        if explicit is not None:
            primary = explicit
        elif settings.servers is not None and len(servers) == 1:
            primary = servers[0]  # one configured server: nothing to choose
        elif resolver is not None:
            # None when the MNAME names none of the servers: the zone stays unknown, never guessed.
            primary, ttl = self._mname_through(zone, resolver, servers, timeout=settings.timeout)
            expires = min(expires, time.monotonic() + ttl)
        # Else a configured host name may be the MNAME, decided once the SOA is read; never the list order.
        addresses_only = primary is None and resolver is None and all(_is_address(s.host) for s in servers)
        if primary is not None:
            servers = [primary, *(server for server in servers if server != primary)]
        location = Location(tuple(servers), primary, notes, expires, addresses_only)
        if resolver is not None:
            self._located[zone] = location
        return location

    def settle(
        self, zone: str, location: Location, reads: Mapping[Server, Served | Unanswered]
    ) -> Server | None:
        """The primary an observation's reads point to, remembered for the updates that follow."""
        primary = location.named_primary(first_mname(reads))
        if primary is None:
            self._primaries.pop(zone, None)
        else:
            self._primaries[zone] = primary
        return primary

    def primary(self, zone: str, settings: Rfc2136ZoneSettings) -> Server:
        """Where updates go: as located, else as the last observation settled, else by the SOA MNAME.

        Raises Unanswered when no server answered, or (permanent) the MNAME names none of them.
        """
        location = self.locate(zone, settings)
        if location.primary is not None:
            return location.primary
        if zone in self._primaries:
            return self._primaries[zone]
        for server in location.servers:
            try:
                soa = read_soa(
                    zone, server, timeout=settings.timeout, counts=self.counts, silence=self.silence
                )
            except Unanswered:
                continue
            primary = location.named_primary(soa.mname)
            if primary is None:
                raise Unanswered(location.no_primary(soa.mname))
            return primary
        raise Unanswered("none of its servers answered, so its primary is not known", transient=True)

    def _discover(
        self, zone: str, resolver: Server, *, timeout: float
    ) -> tuple[list[Server], tuple[str, ...], int]:
        """The zone's NS targets as servers on the resolver's port (an NS record carries no port)."""
        origin = dns.name.from_text(zone)
        try:
            response = resolve(
                resolver, origin, "NS", timeout=timeout, counts=self.counts, silence=self.silence
            )
            found = response.get_rrset(response.answer, origin, dns.rdataclass.IN, dns.rdatatype.NS)
            # A server authoritative for the parent answers with a referral: the NS in the authority section.
            found = found or response.get_rrset(
                response.authority, origin, dns.rdataclass.IN, dns.rdatatype.NS
            )
            if response.rcode() != dns.rcode.NOERROR or found is None:
                reason = dns.rcode.to_text(response.rcode()) if response.rcode() else "no answer"
                raise Unanswered(f"no NS records ({reason})")
            servers: list[Server] = []
            notes: list[str] = []
            ttl = found.ttl
            for target in sorted({rdata.target for rdata in found}):
                addresses, address_ttl = self._addresses(resolver, response, target, timeout=timeout)
                ttl = min(ttl, address_ttl)
                if not addresses:
                    notes.append(
                        f"{zone}: the name server {target} has no address through the resolver {resolver};"
                        " it is not read"
                    )
                servers.extend(Server(address, resolver.port) for address in addresses)
            if not servers:
                raise Unanswered("none of its name servers has an address")
        except Unanswered as error:
            raise Unanswered(
                f"its servers could not be found through the resolver {resolver} ({error})",
                transient=error.transient,
            ) from None
        return list(dict.fromkeys(servers)), tuple(notes), ttl

    def _mname_through(
        self, zone: str, resolver: Server, servers: list[Server], *, timeout: float
    ) -> tuple[Server | None, int]:
        """The server the SOA MNAME resolves to, else None (never a guess).

        Matched by address (or by host name); when several servers share the address, the one on the
        resolver's port wins, the port every discovered server is asked on.
        """
        origin = dns.name.from_text(zone)
        try:
            response = resolve(
                resolver, origin, "SOA", timeout=timeout, counts=self.counts, silence=self.silence
            )
            soa = response.get_rrset(response.answer, origin, dns.rdataclass.IN, dns.rdatatype.SOA)
            if response.rcode() != dns.rcode.NOERROR or soa is None:
                raise Unanswered(f"no SOA record ({dns.rcode.to_text(response.rcode())})")
            mname: dns.name.Name = soa[0].mname
            addresses, ttl = self._addresses(resolver, response, mname, timeout=timeout)
        except Unanswered as error:
            raise Unanswered(
                f"its primary could not be found through the resolver {resolver} ({error})",
                transient=error.transient,
            ) from None
        matches = [server for server in servers if server.host in addresses or _same_name(server.host, mname)]
        # Several servers on one address (ports apart): the one on the resolver's port, as discovered.
        matches.sort(key=lambda server: server.port != resolver.port)
        return (matches[0] if matches else None), min(soa.ttl, ttl)

    def _addresses(
        self, resolver: Server, response: dns.message.Message, name: dns.name.Name, *, timeout: float
    ) -> tuple[list[str], int]:
        """A name's IPv4 (else IPv6) addresses: from the additional section, else asked of the resolver."""
        glue = [
            rrset
            for rrset in response.additional
            if rrset.name == name and rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
        ]
        if glue:
            return [rdata.address for rrset in glue for rdata in rrset], min(rrset.ttl for rrset in glue)
        for rdtype in ("A", "AAAA"):
            answer = resolve(
                resolver, name, rdtype, timeout=timeout, counts=self.counts, silence=self.silence
            )
            found = answer.get_rrset(answer.answer, name, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
            if found is not None:
                return [rdata.address for rdata in found], found.ttl
        return [], 3600


def _is_address(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def _same_name(host: str, name: dns.name.Name) -> bool:
    return host.lower().rstrip(".") == name.to_text().lower().rstrip(".")
