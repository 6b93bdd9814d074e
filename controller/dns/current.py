"""The records a migration starts from (MX, autodiscover, SPF), read once through a resolver within a time
bound: `stagectl init` writes them into the DnsZone it scaffolds, and must never hang on a network it
cannot reach. Any question left without an answer makes the whole read unknown, never partly absent."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from controller.dns.questions import Silence, Unanswered, resolve
from controller.dns.wire import MessageCounts, Server, absolute, rrset_from
from controller.model.snapshot import RRset

BUDGET = 3.0  # seconds for every question together
PER_QUESTION = 1.5  # seconds; a silent server is not asked again (`Silence`)
QUESTIONS = (("@", "MX"), ("@", "TXT"), ("autodiscover", "CNAME"), ("autodiscover", "A"))


@dataclass(frozen=True, slots=True)
class Current:
    """What the resolver answered: the RRsets found (absent ones left out), or why nothing is known."""

    server: str
    rrsets: tuple[RRset, ...] = ()
    authoritative: bool = False  # every answer came from the zone's own server: its TTLs are exact
    unreadable: str | None = None


def system_resolver() -> Server | None:
    """The first name server of the system's resolver configuration (/etc/resolv.conf), or None."""
    try:
        servers = dns.resolver.Resolver(configure=True).nameservers
    except (dns.exception.DNSException, OSError):
        return None
    return Server(str(servers[0]), 53) if servers else None


def read(
    zone: str, resolver: Server, *, budget: float = BUDGET, clock: Callable[[], float] = time.monotonic
) -> Current:
    """MX and TXT at the apex and the autodiscover CNAME (or its A record when it has no CNAME) of `zone`,
    asked through `resolver` within `budget` seconds in all."""
    deadline = clock() + budget
    counts, silence = MessageCounts(), Silence()
    found: list[RRset] = []
    authoritative = True
    for name, rdtype in QUESTIONS:
        if rdtype == "A" and any(rrset.type == "CNAME" for rrset in found):
            continue
        left = deadline - clock()
        if left <= 0:
            return Current(str(resolver), unreadable=f"no answer within {budget:g} s")
        qname = absolute(zone, name)
        try:
            response = resolve(
                resolver, qname, rdtype, timeout=min(left, PER_QUESTION), counts=counts, silence=silence
            )
        except Unanswered as error:
            return Current(str(resolver), unreadable=f"{name} {rdtype}: {error}")
        rcode = response.rcode()
        if rcode == dns.rcode.NXDOMAIN and name != "@":
            continue
        if rcode != dns.rcode.NOERROR:
            what = "the domain does not exist" if rcode == dns.rcode.NXDOMAIN else "the resolver answered"
            return Current(str(resolver), unreadable=f"{name} {rdtype}: {what} ({dns.rcode.to_text(rcode)})")
        authoritative = authoritative and bool(response.flags & dns.flags.AA)
        answer = response.get_rrset(
            response.answer, qname, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype)
        )
        if answer is not None:
            found.append(rrset_from(zone, answer))
    return Current(str(resolver), tuple(found), authoritative)
