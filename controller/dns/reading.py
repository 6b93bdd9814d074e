"""Reading RRsets from a zone's authoritative servers, and where the others disagree with the primary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA

from controller.dns.questions import Unanswered, ask
from controller.dns.wire import MessageCounts, Server, absolute, describe, rrset_from, same_data
from controller.model.snapshot import RRset

RRsetKey = tuple[str, str]  # (relative name in lower case, TYPE in upper case)


@dataclass(frozen=True)
class Served:
    """What one authoritative server serves: the zone's SOA and each wanted RRset (None: absent)."""

    soa: dns.rdtypes.ANY.SOA.SOA
    rrsets: Mapping[RRsetKey, RRset | None]


def read_soa(zone: str, server: Server, *, timeout: float, counts: MessageCounts) -> dns.rdtypes.ANY.SOA.SOA:
    origin = absolute(zone, "@")
    response = ask(server, origin, "SOA", timeout=timeout, counts=counts)
    found = response.get_rrset(response.answer, origin, dns.rdataclass.IN, dns.rdatatype.SOA)
    if response.rcode() != dns.rcode.NOERROR or found is None:
        raise Unanswered(f"no SOA for {zone}: {dns.rcode.to_text(response.rcode())}")
    soa = found[0]
    assert isinstance(soa, dns.rdtypes.ANY.SOA.SOA)  # an SOA RRset holds SOA rdata
    return soa


def read_rrset(
    zone: str, server: Server, key: RRsetKey, *, timeout: float, counts: MessageCounts
) -> RRset | None:
    name, rdtype = key
    qname = absolute(zone, name)
    response = ask(server, qname, rdtype, timeout=timeout, counts=counts)
    if response.rcode() == dns.rcode.NXDOMAIN:
        return None
    if response.rcode() != dns.rcode.NOERROR:
        raise Unanswered(f"{name} {rdtype}: {dns.rcode.to_text(response.rcode())}")
    # Only the RRset asked for: at a CNAME the answer holds the CNAME, which is not an A or TXT.
    match = response.get_rrset(response.answer, qname, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
    return None if match is None else rrset_from(zone, match)


def read_server(
    zone: str, server: Server, keys: Sequence[RRsetKey], *, timeout: float, counts: MessageCounts
) -> Served:
    soa = read_soa(zone, server, timeout=timeout, counts=counts)
    rrsets = {key: read_rrset(zone, server, key, timeout=timeout, counts=counts) for key in keys}
    return Served(soa, rrsets)


def read_servers(
    zone: str,
    servers: Sequence[Server],
    keys: Sequence[RRsetKey],
    *,
    primary: Server | None,
    timeout: float,
    counts: MessageCounts,
) -> dict[Server, Served | Unanswered]:
    """Each server's answer in order, or why it gave none; none after an unreadable `primary`."""
    reads: dict[Server, Served | Unanswered] = {}
    for server in servers:
        try:
            reads[server] = read_server(zone, server, keys, timeout=timeout, counts=counts)
        except Unanswered as error:
            reads[server] = error
            if server == primary:
                break  # the truth is unreadable: the others cannot change that
    return reads


def first_mname(reads: Mapping[Server, Served | Unanswered]) -> dns.name.Name | None:
    """The SOA MNAME in the first answer read, None when no server answered."""
    return next((answer.soa.mname for answer in reads.values() if isinstance(answer, Served)), None)


def disagreements(
    zone: str,
    primary: Server,
    truth: Served,
    reads: Mapping[Server, Served | Unanswered],
    keys: Sequence[RRsetKey],
) -> list[str]:
    """Findings for each other server that could not be read or serves other data than the primary."""
    findings: list[str] = []
    serial = truth.soa.serial
    for server, answer in reads.items():
        if server == primary:
            continue
        if not isinstance(answer, Served):
            findings.append(f"{zone}: the secondary {server} could not be read ({answer})")
            continue
        if answer.soa.serial != serial:
            findings.append(
                f"{zone}: SOA serial {serial} on the primary {primary} but {answer.soa.serial} on {server}:"
                " propagation in progress"
            )
        for key in keys:
            mine, theirs = truth.rrsets[key], answer.rrsets[key]
            if not _same(mine, theirs):
                findings.append(
                    f"{zone}: {key[0]} {key[1]} differs between the primary {primary} ({describe(mine)})"
                    f" and {server} ({describe(theirs)}): propagation in progress"
                )
    return findings


def _same(left: RRset | None, right: RRset | None) -> bool:
    if left is None or right is None:
        return left is right
    return left.ttl == right.ttl and same_data(left.type, left.values, right.values)
