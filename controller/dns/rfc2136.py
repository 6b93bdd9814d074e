"""The RFC 2136 DNS backend: authoritative reads from every server, TSIG-signed UPDATEs to the primary.

Prerequisite choice: an RFC 2136 prerequisite cannot compare SOA serials, and "the SOA RRset exists
with these values" would fail on any change anywhere in the zone, including our own previous action
of the same pass. So each UPDATE carries a prerequisite on the target RRset as observed: "exists with
exactly these values" (value dependent, TTL 0) or "does not exist" when it was absent. A concurrent
change to what we manage fails with NXRRSET/YXRRSET, which is a transient error: observe again.

Where a zone is served: `servers` as configured, or the zone's NS records looked up through a
`resolver` (a recursive resolver, or an authoritative server answering for its own zone). An NS record
carries no port, so every discovered server is asked on the resolver's port: the same port everywhere,
as name servers on port 53 are. The primary is `primary` when configured; otherwise the server the SOA
MNAME names (looked up through the resolver, or without one matched by name against the configured
hosts); otherwise the first server. Updates go to the primary and its answers are the truth; the
others are compared with it.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.tsig
import dns.update
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controller.dns.base import DnsError, DnsObserved, DnsPermanentError, DnsTransientError
from controller.dns.tsig import TsigKey, is_key_ref, load_key
from controller.dns.wire import (
    MessageCounts,
    Server,
    absolute,
    describe,
    query,
    rrset_from,
    same_data,
    to_rdatas,
)
from controller.model.actions import DnsAction
from controller.model.snapshot import RRset


class Rfc2136ZoneSettings(BaseModel):
    """Where a zone is served and how to sign updates to it."""

    # hide_input_in_errors: a secret pasted where a reference belongs must not come back in the error.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    servers: list[str] | None = Field(
        default=None,
        min_length=1,
        description="host:port of each authoritative server, primary first; optional with `resolver`",
    )
    resolver: str | None = Field(
        default=None,
        description="host:port through which the zone's NS records (the servers, asked on this port)"
        " and its SOA MNAME (the primary) are looked up",
    )
    primary: str | None = Field(
        default=None, description="host:port of the primary: updates go there and its answers are the truth"
    )
    keyRef: str | None = Field(
        default=None, description="file:/path/to/bind.key[#keyname] or env:NAME (name:algorithm:base64secret)"
    )
    timeout: float = Field(default=3.0, gt=0, le=60, description="seconds per DNS message")

    @field_validator("servers")
    @classmethod
    def _servers(cls, value: list[str] | None) -> list[str] | None:
        for text in value or ():
            Server.parse(text)
        return value

    @field_validator("resolver", "primary")
    @classmethod
    def _server(cls, value: str | None) -> str | None:
        if value is not None:
            Server.parse(value)
        return value

    @model_validator(mode="after")
    def _somewhere(self) -> Rfc2136ZoneSettings:
        if self.servers is None and self.resolver is None:
            raise ValueError(
                "a zone needs `servers` or a `resolver` through which its NS records give the servers"
            )
        return self

    @field_validator("keyRef")
    @classmethod
    def _key_ref(cls, value: str | None) -> str | None:
        if value is not None and not is_key_ref(value):
            raise ValueError(
                "keyRef must be a reference (file:/path/to/bind.key or env:NAME), never a secret"
            )
        return value


class Rfc2136Settings(BaseModel):
    """Per zone settings, or `default` for every zone not listed."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    default: Rfc2136ZoneSettings | None = None
    zones: dict[str, Rfc2136ZoneSettings] = {}

    def for_zone(self, zone: str) -> Rfc2136ZoneSettings | None:
        key = zone.lower().rstrip(".")
        for name, settings in self.zones.items():
            if name.lower().rstrip(".") == key:
                return settings
        return self.default


class _Unanswered(Exception):
    """A server gave no usable authoritative answer; the text says why, for a finding."""

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


@dataclass(frozen=True)
class _Location:
    """Where a zone is served: `servers` (the primary first when known); `notes` become findings."""

    servers: tuple[Server, ...]
    primary: Server | None  # None: configured host names only, the SOA MNAME read decides
    notes: tuple[str, ...] = ()
    expires: float = math.inf  # monotonic time; discovered servers are kept for the lookups' TTL


def _same_name(host: str, name: dns.name.Name) -> bool:
    return host.lower().rstrip(".") == name.to_text().lower().rstrip(".")


def _prerequisite_failed(rcode: int) -> bool:
    return rcode in (dns.rcode.NXRRSET, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN, dns.rcode.YXDOMAIN)


class Rfc2136Backend:
    """DnsBackend over dnspython. `messages` counts what was sent; `serials`: each primary's SOA serial."""

    def __init__(self, settings: Rfc2136Settings) -> None:
        self.settings = settings
        self.messages = MessageCounts()
        self.serials: dict[str, int] = {}
        self._located: dict[str, _Location] = {}  # discovered through a resolver, until the TTL runs out
        self._primaries: dict[str, Server] = {}  # the primary each zone's last observation settled on

    # -- observe ---------------------------------------------------------------------------------------

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
            location = self._locate(zone, settings)
        except _Unanswered as error:
            # Unknown, never absent: a zone whose servers cannot be found is not a zone without records.
            findings.append(f"{zone}: {error}; the zone is unknown")
            return None
        findings.extend(location.notes)
        keys = list(dict.fromkeys((name.lower(), rdtype.upper()) for name, rdtype in names))
        reads: dict[Server, tuple[dns.rdata.Rdata, dict[tuple[str, str], RRset | None]] | _Unanswered] = {}
        for server in location.servers:
            try:
                reads[server] = self._read(zone, server, keys, timeout=settings.timeout)
            except _Unanswered as error:
                reads[server] = error
                if location.primary == server:
                    break  # the truth is unreadable: the others cannot change that
        primary = location.primary or self._by_mname(location.servers, reads)
        self._primaries[zone] = primary
        answer = reads.get(primary)
        if not isinstance(answer, tuple):
            # Unknown, never absent: the planner must not act on a zone it could not read.
            findings.append(
                f"{zone}: the primary {primary} could not be read ({answer}); the zone is unknown"
            )
            return None
        soa, truth = answer
        serial = int(soa.serial)
        self.serials[zone] = serial
        for server, other_answer in reads.items():
            if server == primary:
                continue
            if not isinstance(other_answer, tuple):
                findings.append(f"{zone}: the secondary {server} could not be read ({other_answer})")
                continue
            other_soa, other = other_answer
            other_serial = int(other_soa.serial)
            if other_serial != serial:
                findings.append(
                    f"{zone}: SOA serial {serial} on the primary {primary} but {other_serial} on {server}:"
                    " propagation in progress"
                )
            for key in keys:
                mine, theirs = truth[key], other[key]
                if not _same(mine, theirs):
                    findings.append(
                        f"{zone}: {key[0]} {key[1]} differs between the primary {primary} ({describe(mine)})"
                        f" and {server} ({describe(theirs)}): propagation in progress"
                    )
        return [rrset for rrset in truth.values() if rrset is not None]

    # -- where the zone is served ----------------------------------------------------------------------

    def _locate(self, zone: str, settings: Rfc2136ZoneSettings) -> _Location:
        """The servers to read and the primary; raises _Unanswered with a sentence when discovery fails."""
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
        primary: Server | None
        if explicit is not None:
            primary = explicit
        elif resolver is not None:
            primary, ttl = self._mname_through(zone, resolver, servers, timeout=settings.timeout)
            expires = min(expires, time.monotonic() + ttl)
        elif any(not _is_address(server.host) for server in servers):
            primary = None  # a configured host name may be the MNAME: decided once the SOA is read
        else:
            primary = servers[0]
        if primary is not None:
            servers = [primary, *(server for server in servers if server != primary)]
        location = _Location(tuple(servers), primary, notes, expires)
        if resolver is not None:
            self._located[zone] = location
        return location

    def _discover(
        self, zone: str, resolver: Server, *, timeout: float
    ) -> tuple[list[Server], tuple[str, ...], int]:
        """The zone's NS targets as servers on the resolver's port (an NS record carries no port)."""
        origin = dns.name.from_text(zone)
        try:
            response = self._resolve(resolver, origin, "NS", timeout=timeout)
            found = response.get_rrset(response.answer, origin, dns.rdataclass.IN, dns.rdatatype.NS)
            # A server authoritative for the parent answers with a referral: the NS in the authority section.
            found = found or response.get_rrset(
                response.authority, origin, dns.rdataclass.IN, dns.rdatatype.NS
            )
            if response.rcode() != dns.rcode.NOERROR or found is None:
                reason = dns.rcode.to_text(response.rcode()) if response.rcode() else "no answer"
                raise _Unanswered(f"no NS records ({reason})")
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
                raise _Unanswered("none of its name servers has an address")
        except _Unanswered as error:
            raise _Unanswered(
                f"its servers could not be found through the resolver {resolver} ({error})",
                transient=error.transient,
            ) from None
        return list(dict.fromkeys(servers)), tuple(notes), ttl

    def _mname_through(
        self, zone: str, resolver: Server, servers: list[Server], *, timeout: float
    ) -> tuple[Server, int]:
        """The server the SOA MNAME resolves to, else the first server.

        Matched by address (or by host name); when several servers share the address, the one on the
        resolver's port wins, the port every discovered server is asked on.
        """
        origin = dns.name.from_text(zone)
        try:
            response = self._resolve(resolver, origin, "SOA", timeout=timeout)
            soa = response.get_rrset(response.answer, origin, dns.rdataclass.IN, dns.rdatatype.SOA)
            if response.rcode() != dns.rcode.NOERROR or soa is None:
                raise _Unanswered(f"no SOA record ({dns.rcode.to_text(response.rcode())})")
            mname = soa[0].mname
            addresses, ttl = self._addresses(resolver, response, mname, timeout=timeout)
        except _Unanswered as error:
            raise _Unanswered(
                f"its primary could not be found through the resolver {resolver} ({error})",
                transient=error.transient,
            ) from None
        matches = [server for server in servers if server.host in addresses or _same_name(server.host, mname)]
        # Several servers on one address (ports apart): the one on the resolver's port, as discovered.
        matches.sort(key=lambda server: server.port != resolver.port)
        return (matches or servers)[0], min(soa.ttl, ttl)

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
            answer = self._resolve(resolver, name, rdtype, timeout=timeout)
            found = answer.get_rrset(answer.answer, name, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
            if found is not None:
                return [rdata.address for rdata in found], found.ttl
        return [], 3600

    def _by_mname(
        self,
        servers: Sequence[Server],
        reads: Mapping[Server, tuple[dns.rdata.Rdata, object] | _Unanswered],
    ) -> Server:
        """Configured servers only: the one whose host name is the SOA MNAME, else the first."""
        for answer in reads.values():
            if isinstance(answer, tuple):
                mname = answer[0].mname
                return next((server for server in servers if _same_name(server.host, mname)), servers[0])
        return servers[0]

    def _primary(self, zone: str, settings: Rfc2136ZoneSettings) -> Server:
        """Where updates go: as located, else as the last observation decided, else by the SOA MNAME."""
        try:
            location = self._locate(zone, settings)
        except _Unanswered as error:
            raise (DnsTransientError if error.transient else DnsPermanentError)(
                f"{zone}: {error}; no update was sent"
            ) from None
        if location.primary is not None:
            return location.primary
        if zone in self._primaries:
            return self._primaries[zone]
        for server in location.servers:
            try:
                soa, _ = self._read(zone, server, [], timeout=settings.timeout)
            except _Unanswered:
                continue
            return self._by_mname(location.servers, {server: (soa, None)})
        return location.servers[0]

    def _read(
        self, zone: str, server: Server, keys: list[tuple[str, str]], *, timeout: float
    ) -> tuple[dns.rdata.Rdata, dict[tuple[str, str], RRset | None]]:
        """The zone's SOA and each wanted RRset (None: absent) as one server serves them."""
        origin = absolute(zone, "@")
        soa = self._ask(server, origin, "SOA", timeout=timeout)
        found = soa.get_rrset(soa.answer, origin, dns.rdataclass.IN, dns.rdatatype.SOA)
        if soa.rcode() != dns.rcode.NOERROR or found is None:
            raise _Unanswered(f"no SOA for {zone}: {dns.rcode.to_text(soa.rcode())}")
        rrsets = {key: self._read_rrset(zone, server, key, timeout=timeout) for key in keys}
        return found[0], rrsets

    def _read_rrset(self, zone: str, server: Server, key: tuple[str, str], *, timeout: float) -> RRset | None:
        name, rdtype = key
        qname = absolute(zone, name)
        response = self._ask(server, qname, rdtype, timeout=timeout)
        if response.rcode() == dns.rcode.NXDOMAIN:
            return None
        if response.rcode() != dns.rcode.NOERROR:
            raise _Unanswered(f"{name} {rdtype}: {dns.rcode.to_text(response.rcode())}")
        # Only the RRset asked for: at a CNAME the answer holds the CNAME, which is not an A or TXT.
        match = response.get_rrset(response.answer, qname, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
        return None if match is None else rrset_from(zone, match)

    def _resolve(
        self, resolver: Server, qname: dns.name.Name, rdtype: str, *, timeout: float
    ) -> dns.message.Message:
        """A question to the resolver, recursion desired (an authoritative server answers its own zone)."""
        return self._send(resolver, qname, rdtype, timeout=timeout, recursive=True)

    def _send(
        self, server: Server, qname: dns.name.Name, rdtype: str, *, timeout: float, recursive: bool
    ) -> dns.message.Message:
        try:
            return query(server, qname, rdtype, timeout=timeout, counts=self.messages, recursive=recursive)
        except dns.exception.Timeout:
            raise _Unanswered("timed out", transient=True) from None
        except OSError as error:
            raise _Unanswered(error.strerror or type(error).__name__, transient=True) from None
        except (EOFError, dns.exception.DNSException) as error:
            raise _Unanswered(f"bad answer: {type(error).__name__}") from None

    def _ask(
        self, server: Server, qname: dns.name.Name, rdtype: str, *, timeout: float
    ) -> dns.message.Message:
        response = self._send(server, qname, rdtype, timeout=timeout, recursive=False)
        if not response.flags & dns.flags.AA and response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise _Unanswered("the answer is not authoritative: the zone is not served there")
        return response

    # -- apply -----------------------------------------------------------------------------------------

    def apply(self, action: DnsAction) -> None:
        settings = self.settings.for_zone(action.zone)
        if settings is None or settings.keyRef is None:
            raise DnsPermanentError(f"{action.object}: no TSIG key is configured for the zone {action.zone}")
        key = load_key(settings.keyRef)
        primary = self._primary(action.zone, settings)
        update = self._update(action, key)
        try:
            self.messages.updates += 1
            response = dns.query.tcp(update, primary.address(), port=primary.port, timeout=settings.timeout)
        except Exception as error:
            raise _map_send_error(error, action=action, key=key, primary=primary) from None
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            raise _map_rcode(rcode, action=action, primary=primary)
        self._verify(action, primary, timeout=settings.timeout)

    def _update(self, action: DnsAction, key: TsigKey) -> dns.update.UpdateMessage:
        update = dns.update.UpdateMessage(
            action.zone, keyring=key.keyring(), keyname=key.name, keyalgorithm=key.algorithm
        )
        name = absolute(action.zone, action.name)
        rdtype = action.type.upper()
        if action.previous_values is None:
            update.absent(name, rdtype)
        else:
            # Prerequisite RRs carry TTL 0 (RFC 2136 §2.4.2); the whole RRset must match.
            observed = dns.rdataset.from_rdata_list(0, to_rdatas(rdtype, action.previous_values))
            update.present(name, observed)
        desired = to_rdatas(rdtype, action.values)
        if not desired:
            update.delete(name, rdtype)
        elif rdtype == "TXT" and action.previous_values is not None:
            # Only the difference, so other TXT strings (domain verification tokens) are never touched;
            # a TTL belongs to the whole RRset, so a TTL change re-adds every value at the new TTL.
            before = set(to_rdatas(rdtype, action.previous_values))
            for rdata in before - set(desired):
                update.delete(name, rdata)
            readd = desired if action.ttl != action.previous_ttl else [r for r in desired if r not in before]
            for rdata in readd:
                update.add(name, action.ttl, rdata)
        else:
            update.replace(name, action.ttl, *desired)
        return update

    def _verify(self, action: DnsAction, primary: Server, *, timeout: float) -> None:
        """Read the RRset back: BIND answers NOERROR yet ignores data added beside a CNAME."""
        try:
            now = self._read_rrset(
                action.zone, primary, (action.name.lower(), action.type.upper()), timeout=timeout
            )
        except _Unanswered as error:
            raise DnsTransientError(
                f"{action.object}: the update was sent but could not be verified ({error})"
            ) from None
        if not action.values and now is None:
            return
        if now is None or now.ttl != action.ttl or not same_data(action.type, now.values, action.values):
            raise DnsPermanentError(
                f"{action.object}: the primary {primary} accepted the update but serves {describe(now)}"
                f" instead of ttl {action.ttl} [{', '.join(action.values)}]"
                " (is there other data beside a CNAME at that name?)"
            )


def _is_address(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def _same(left: RRset | None, right: RRset | None) -> bool:
    if left is None or right is None:
        return left is right
    return left.ttl == right.ttl and same_data(left.type, left.values, right.values)


def _map_send_error(error: Exception, *, action: DnsAction, key: TsigKey, primary: Server) -> DnsError:
    """One clear sentence per failure; the key is named, its secret never."""
    if isinstance(error, dns.tsig.PeerError | dns.tsig.BadSignature | dns.tsig.BadKey | dns.tsig.BadTime):
        return DnsPermanentError(
            f"{action.object}: the server {primary} rejected the TSIG key {key.name}"
            f" ({type(error).__name__}: wrong secret, unknown key name or clock skew)"
        )
    if isinstance(error, dns.exception.Timeout):
        return DnsTransientError(f"{action.object}: the primary {primary} did not answer the update in time")
    if isinstance(error, ConnectionRefusedError):
        return DnsTransientError(f"{action.object}: the primary {primary} refused the connection")
    if isinstance(error, OSError | EOFError):
        return DnsTransientError(
            f"{action.object}: the connection to the primary {primary} failed ({type(error).__name__})"
        )
    return DnsPermanentError(f"{action.object}: the update to {primary} failed ({type(error).__name__})")


def _map_rcode(rcode: int, *, action: DnsAction, primary: Server) -> DnsError:
    name = dns.rcode.to_text(rcode)
    if _prerequisite_failed(rcode):
        return DnsTransientError(f"{action.object}: the RRset changed meanwhile; observe again ({name})")
    if rcode == dns.rcode.REFUSED:
        return DnsPermanentError(
            f"{action.object}: the server {primary} refused the update (is allow-update set for this key?"
            " BIND also refuses an MX or SRV target inside the zone that has no address record)"
        )
    if rcode in (dns.rcode.NOTAUTH, dns.rcode.NOTZONE):
        return DnsPermanentError(
            f"{action.object}: the zone {action.zone} is not served there ({primary}, {name})"
        )
    if rcode == dns.rcode.SERVFAIL:
        return DnsTransientError(
            f"{action.object}: the primary {primary} failed to apply the update (SERVFAIL)"
        )
    return DnsPermanentError(f"{action.object}: the primary {primary} answered the update with {name}")
