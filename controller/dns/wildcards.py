"""Answers synthesised from a wildcard (RFC 4592) are not data at the name: that name holds no such RRset.

An authoritative server answers a name that does not exist from a wildcard above it (`*.contoso.com`)
with the wildcard's data under the asked name, and an unsigned answer says nothing more. So a name's
answer is checked by asking for a name below it that no zone holds (`_stagectl-absent.<name>`): where
the name exists the server answers NXDOMAIN; where it does not, the same wildcard answers that name too,
with the same data. Names one label below the apex can only be covered by `*.<zone>`, so they are
checked only when that wildcard exists (one question per zone); deeper names are checked one by one.
The apex always exists.
"""

from __future__ import annotations

from collections.abc import Mapping

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from controller.dns.questions import Silence, ask
from controller.dns.wire import MessageCounts, Server

PROBE = b"_stagectl-absent"  # a label no zone holds: a name below it exists only through a wildcard

Key = tuple[str, str]  # (relative name in lower case, TYPE in upper case)


def synthesised(
    zone: str,
    server: Server,
    found: Mapping[Key, dns.rrset.RRset | None],
    *,
    timeout: float,
    counts: MessageCounts,
    silence: Silence,
) -> dict[Key, str]:
    """The keys whose answer came from a wildcard, each with the wildcard for a finding."""
    origin = dns.name.from_text(zone)
    apex_wildcard: bool | None = None  # asked once, when a name one label below the apex has data
    from_wildcard: dict[dns.name.Name, bool] = {}
    result: dict[Key, str] = {}
    for key, rrset in found.items():
        if rrset is None or rrset.name == origin:
            continue
        one_below = len(rrset.name) == len(origin) + 1
        if one_below:
            if apex_wildcard is None:
                probe = ask(server, _below(origin), "TXT", timeout=timeout, counts=counts, silence=silence)
                apex_wildcard = probe.rcode() != dns.rcode.NXDOMAIN
            if not apex_wildcard:
                continue
        if rrset.name not in from_wildcard:
            from_wildcard[rrset.name] = _answered_below(
                server, rrset, timeout=timeout, counts=counts, silence=silence
            )
        if from_wildcard[rrset.name]:
            result[key] = f"the wildcard *.{zone}" if one_below else "a wildcard above it"
    return result


def questions_without_wildcards(names: set[str]) -> int:
    """What `synthesised` asks of a zone without wildcards for data found at these relative names."""
    labels = [len(dns.name.from_text(name, origin=None)) for name in names if name != "@"]
    return int(any(count == 1 for count in labels)) + sum(count > 1 for count in labels)


def _answered_below(
    server: Server, rrset: dns.rrset.RRset, *, timeout: float, counts: MessageCounts, silence: Silence
) -> bool:
    """True when a name below `rrset`'s name that no zone holds gets the same RRset: a wildcard's."""
    try:
        probe = _below(rrset.name)
    except dns.name.NameTooLong:
        return False  # no room for a label below: the question cannot be asked, the answer is kept
    rdtype = dns.rdatatype.to_text(rrset.rdtype)
    response = ask(server, probe, rdtype, timeout=timeout, counts=counts, silence=silence)
    if response.rcode() != dns.rcode.NOERROR:
        return False
    same = response.get_rrset(response.answer, probe, dns.rdataclass.IN, rrset.rdtype)
    return same is not None and same.ttl == rrset.ttl and set(same) == set(rrset)


def _below(name: dns.name.Name) -> dns.name.Name:
    return dns.name.Name((PROBE, *name.labels))
