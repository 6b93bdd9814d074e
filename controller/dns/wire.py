"""DNS on the wire for the RFC 2136 backend: servers, counted queries, and RRsets to and from rdata."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

from controller.model.snapshot import RRset

TXT_CHUNK = 255  # a TXT character-string holds at most 255 bytes; longer SPF strings are split


@dataclass
class MessageCounts:
    """DNS messages sent by a backend, for the benchmark: queries (a TCP retry counts again) and updates."""

    queries: int = 0
    updates: int = 0

    @property
    def total(self) -> int:
        return self.queries + self.updates

    def reset(self) -> None:
        self.queries = 0
        self.updates = 0


@dataclass(frozen=True)
class Server:
    """An authoritative server as configured: `host:port`, `[v6]:port` or `host` (port 53)."""

    host: str
    port: int = 53

    @classmethod
    def parse(cls, text: str) -> Server:
        text = text.strip()
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            return cls(host, int(rest[1:]) if rest.startswith(":") else 53)
        if text.count(":") == 1:
            host, port = text.split(":")
            return cls(host, int(port))
        return cls(text)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def address(self) -> str:
        """The IP address to send to; a host name is resolved by the system resolver."""
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in self.host else socket.AF_INET, self.host)
            return self.host
        except OSError:
            info = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
            return str(info[0][4][0])


def absolute(zone: str, name: str) -> dns.name.Name:
    origin = dns.name.from_text(zone)
    if name in ("@", ""):
        return origin
    return dns.name.from_text(name, origin=origin)


def relative(zone: str, name: dns.name.Name) -> str:
    return name.relativize(dns.name.from_text(zone)).to_text()


def query(
    server: Server,
    qname: dns.name.Name,
    rdtype: str,
    *,
    timeout: float,
    counts: MessageCounts,
    recursive: bool = False,
) -> dns.message.Message:
    """One question, without recursion unless `recursive` (a resolver): UDP, then TCP when truncated."""
    request = dns.message.make_query(qname, rdtype)
    if not recursive:
        request.flags &= ~dns.flags.RD  # an authoritative read: never ask the server to recurse
    counts.queries += 1
    response, used_tcp = dns.query.udp_with_fallback(
        request, server.address(), port=server.port, timeout=timeout
    )
    if used_tcp:
        counts.queries += 1
    return response


def to_text(rdata: dns.rdata.Rdata) -> str:
    """Presentation text as in the snapshot; a TXT record is its strings joined, unquoted."""
    if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT):
        return b"".join(rdata.strings).decode("utf-8", errors="backslashreplace")
    return rdata.to_text()


def to_rdata(rdtype: str, value: str) -> dns.rdata.Rdata:
    """The rdata for one snapshot value; names without a final dot are taken as fully qualified."""
    if rdtype.upper() in ("TXT", "SPF"):
        data = value.encode("utf-8")
        chunks = [data[i : i + TXT_CHUNK] for i in range(0, len(data), TXT_CHUNK)] or [b""]
        return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), chunks)
    return dns.rdata.from_text(dns.rdataclass.IN, rdtype, value, origin=dns.name.root, relativize=False)


def to_rdatas(rdtype: str, values: Iterable[str]) -> list[dns.rdata.Rdata]:
    return [to_rdata(rdtype, value) for value in values]


def rrset_from(zone: str, rrset: dns.rrset.RRset) -> RRset:
    return RRset(
        name=relative(zone, rrset.name),
        type=dns.rdatatype.to_text(rrset.rdtype),
        ttl=rrset.ttl,
        values=sorted(to_text(rdata) for rdata in rrset),
    )


def same_data(rdtype: str, left: Sequence[str], right: Sequence[str]) -> bool:
    """Equal as DNS data (names compare without case), whatever the order or spelling of the text."""
    return set(to_rdatas(rdtype, left)) == set(to_rdatas(rdtype, right))


def describe(rrset: RRset | None) -> str:
    if rrset is None:
        return "absent"
    return f"ttl {rrset.ttl} [{', '.join(rrset.values)}]"
