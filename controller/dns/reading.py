"""Reading RRsets from a zone's authoritative servers: each server's answer, and where the others disagree
with the primary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rrset

from controller.dns import wildcards
from controller.dns.questions import Silence, Unanswered, ask
from controller.dns.wire import MessageCounts, Server, absolute, describe, rrset_from, same_data
from controller.model.snapshot import RRset, ServerAnswer

RRsetKey = tuple[str, str]  # (relative name in lower case, TYPE in upper case)


@dataclass(frozen=True)
class Served:
    """What one authoritative server serves: the zone's SOA and each wanted RRset.

    `rrsets` holds None where the RRset is absent or only a wildcard answered (named in `wildcards`);
    `held` is the rdata as the server holds it (a TXT record's character-strings as split there), from
    which an UPDATE's prerequisite is built.
    """

    soa: dns.rdtypes.ANY.SOA.SOA
    rrsets: Mapping[RRsetKey, RRset | None]
    held: Mapping[RRsetKey, tuple[dns.rdata.Rdata, ...]]
    wildcards: Mapping[RRsetKey, str]


def read_soa(
    zone: str, server: Server, *, timeout: float, counts: MessageCounts, silence: Silence | None = None
) -> dns.rdtypes.ANY.SOA.SOA:
    origin = absolute(zone, "@")
    response = ask(server, origin, "SOA", timeout=timeout, counts=counts, silence=silence)
    found = response.get_rrset(response.answer, origin, dns.rdataclass.IN, dns.rdatatype.SOA)
    if response.rcode() != dns.rcode.NOERROR or found is None:
        raise Unanswered(f"no SOA for {zone}: {dns.rcode.to_text(response.rcode())}")
    soa = found[0]
    assert isinstance(soa, dns.rdtypes.ANY.SOA.SOA)  # an SOA RRset holds SOA rdata
    return soa


def read_answer(
    zone: str,
    server: Server,
    key: RRsetKey,
    *,
    timeout: float,
    counts: MessageCounts,
    silence: Silence | None = None,
) -> dns.rrset.RRset | None:
    """The RRset in the server's answer for the name, as it came (None: absent)."""
    name, rdtype = key
    qname = absolute(zone, name)
    response = ask(server, qname, rdtype, timeout=timeout, counts=counts, silence=silence)
    if response.rcode() == dns.rcode.NXDOMAIN:
        return None
    if response.rcode() != dns.rcode.NOERROR:
        raise Unanswered(f"{name} {rdtype}: {dns.rcode.to_text(response.rcode())}")
    # Only the RRset asked for: at a CNAME the answer holds the CNAME, which is not an A or TXT.
    match: dns.rrset.RRset | None = response.get_rrset(
        response.answer, qname, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype)
    )
    return match


def read_rrset(
    zone: str, server: Server, key: RRsetKey, *, timeout: float, counts: MessageCounts
) -> RRset | None:
    match = read_answer(zone, server, key, timeout=timeout, counts=counts)
    return None if match is None else rrset_from(zone, match)


def read_server(
    zone: str,
    server: Server,
    keys: Sequence[RRsetKey],
    *,
    timeout: float,
    counts: MessageCounts,
    silence: Silence,
) -> Served:
    soa = read_soa(zone, server, timeout=timeout, counts=counts, silence=silence)
    found = {
        key: read_answer(zone, server, key, timeout=timeout, counts=counts, silence=silence) for key in keys
    }
    wild = wildcards.synthesised(zone, server, found, timeout=timeout, counts=counts, silence=silence)
    real = {key: rrset for key, rrset in found.items() if rrset is not None and key not in wild}
    rrsets = {key: rrset_from(zone, real[key]) if key in real else None for key in keys}
    return Served(soa, rrsets, {key: tuple(rrset) for key, rrset in real.items()}, wild)


def read_servers(
    zone: str,
    servers: Sequence[Server],
    keys: Sequence[RRsetKey],
    *,
    primary: Server | None,
    timeout: float,
    counts: MessageCounts,
    silence: Silence,
) -> dict[Server, Served | Unanswered]:
    """Each server's answer in order, or why it gave none; none after an unreadable `primary`."""
    reads: dict[Server, Served | Unanswered] = {}
    for server in servers:
        try:
            reads[server] = read_server(zone, server, keys, timeout=timeout, counts=counts, silence=silence)
        except Unanswered as error:
            reads[server] = error
            if server == primary:
                break  # the truth is unreadable: the others cannot change that
    return reads


def first_mname(reads: Mapping[Server, Served | Unanswered]) -> dns.name.Name | None:
    """The SOA MNAME in the first answer read, None when no server answered."""
    return next((answer.soa.mname for answer in reads.values() if isinstance(answer, Served)), None)


def server_answers(
    key: RRsetKey, primary: Server, reads: Mapping[Server, Served | Unanswered]
) -> list[ServerAnswer]:
    """Each server's answer for one RRset, in the order read (the primary first)."""
    answers: list[ServerAnswer] = []
    for server, answer in reads.items():
        if not isinstance(answer, Served):
            answers.append(ServerAnswer(server=str(server), primary=server == primary, error=str(answer)))
            continue
        rrset = answer.rrsets[key]
        answers.append(
            ServerAnswer(
                server=str(server),
                primary=server == primary,
                serial=answer.soa.serial,
                ttl=None if rrset is None else rrset.ttl,
                values=None if rrset is None else rrset.values,
            )
        )
    return answers


def wildcard_findings(zone: str, truth: Served) -> list[str]:
    return [
        f"{zone}: {name} {rdtype} is answered from {wildcard}, not data at the name; taken as absent"
        for (name, rdtype), wildcard in truth.wildcards.items()
    ]


def ahead_of_primary(
    primary: Server, truth: Served, reads: Mapping[Server, Served | Unanswered]
) -> str | None:
    """Why the primary looks stale, when another server serves a newer SOA serial (RFC 1982); else None."""
    serial = truth.soa.serial
    for server, answer in reads.items():
        # RFC 1982: newer when the forward distance is non-zero and less than half the serial space.
        if isinstance(answer, Served) and 0 < (answer.soa.serial - serial) % 2**32 < 2**31:
            return (
                f"the primary {primary} looks stale: it serves SOA serial {serial} but {server} serves"
                f" {answer.soa.serial}, so the truth is in doubt; check `primary:` for this zone"
            )
    return None


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
