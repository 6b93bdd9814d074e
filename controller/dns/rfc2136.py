"""The RFC 2136 DNS backend: authoritative reads from every server, TSIG-signed UPDATEs to the primary.

Prerequisite choice: an RFC 2136 prerequisite cannot compare SOA serials, and "the SOA RRset exists
with these values" would fail on any change anywhere in the zone, including our own previous action
of the same pass. So each UPDATE carries a prerequisite on the target RRset as observed: "exists with
exactly these values" (value dependent, TTL 0) or "does not exist" when it was absent. A concurrent
change to what we manage fails with NXRRSET/YXRRSET, which is a transient error: observe again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.tsig
import dns.update
from pydantic import BaseModel, ConfigDict, Field, field_validator

from controller.actions import DnsAction
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
from controller.snapshot import RRset


class Rfc2136ZoneSettings(BaseModel):
    """Where a zone is served and how to sign updates to it."""

    # hide_input_in_errors: a secret pasted where a reference belongs must not come back in the error.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    servers: list[str] = Field(
        min_length=1, description="host:port of each authoritative server, primary first"
    )
    keyRef: str | None = Field(
        default=None, description="file:/path/to/bind.key[#keyname] or env:NAME (name:algorithm:base64secret)"
    )
    timeout: float = Field(default=3.0, gt=0, le=60, description="seconds per DNS message")

    @field_validator("servers")
    @classmethod
    def _servers(cls, value: list[str]) -> list[str]:
        for text in value:
            Server.parse(text)
        return value

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


def _prerequisite_failed(rcode: int) -> bool:
    return rcode in (dns.rcode.NXRRSET, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN, dns.rcode.YXDOMAIN)


class Rfc2136Backend:
    """DnsBackend over dnspython. `messages` counts what was sent; `serials`: each primary's SOA serial."""

    def __init__(self, settings: Rfc2136Settings) -> None:
        self.settings = settings
        self.messages = MessageCounts()
        self.serials: dict[str, int] = {}

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
        keys = list(dict.fromkeys((name.lower(), rdtype.upper()) for name, rdtype in names))
        servers = [Server.parse(text) for text in settings.servers]
        primary, secondaries = servers[0], servers[1:]
        try:
            serial, truth = self._read(zone, primary, keys, timeout=settings.timeout)
        except _Unanswered as error:
            # Unknown, never absent: the planner must not act on a zone it could not read.
            findings.append(f"{zone}: the primary {primary} could not be read ({error}); the zone is unknown")
            return None
        self.serials[zone] = serial
        for server in secondaries:
            try:
                other_serial, other = self._read(zone, server, keys, timeout=settings.timeout)
            except _Unanswered as error:
                findings.append(f"{zone}: the secondary {server} could not be read ({error})")
                continue
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

    def _read(
        self, zone: str, server: Server, keys: list[tuple[str, str]], *, timeout: float
    ) -> tuple[int, dict[tuple[str, str], RRset | None]]:
        """The zone's SOA serial and each wanted RRset (None: absent) as one server serves them."""
        origin = absolute(zone, "@")
        soa = self._ask(server, origin, "SOA", timeout=timeout)
        found = soa.get_rrset(soa.answer, origin, dns.rdataclass.IN, dns.rdatatype.SOA)
        if soa.rcode() != dns.rcode.NOERROR or found is None:
            raise _Unanswered(f"no SOA for {zone}: {dns.rcode.to_text(soa.rcode())}")
        rrsets = {key: self._read_rrset(zone, server, key, timeout=timeout) for key in keys}
        return int(found[0].serial), rrsets

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

    def _ask(
        self, server: Server, qname: dns.name.Name, rdtype: str, *, timeout: float
    ) -> dns.message.Message:
        try:
            response = query(server, qname, rdtype, timeout=timeout, counts=self.messages)
        except dns.exception.Timeout:
            raise _Unanswered("timed out") from None
        except OSError as error:
            raise _Unanswered(error.strerror or type(error).__name__) from None
        except (EOFError, dns.exception.DNSException) as error:
            raise _Unanswered(f"bad answer: {type(error).__name__}") from None
        if not response.flags & dns.flags.AA and response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise _Unanswered("the answer is not authoritative: the zone is not served there")
        return response

    # -- apply -----------------------------------------------------------------------------------------

    def apply(self, action: DnsAction) -> None:
        settings = self.settings.for_zone(action.zone)
        if settings is None or settings.keyRef is None:
            raise DnsPermanentError(f"{action.object}: no TSIG key is configured for the zone {action.zone}")
        key = load_key(settings.keyRef)
        primary = Server.parse(settings.servers[0])
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
