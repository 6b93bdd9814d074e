"""Counted questions to DNS servers, authoritative or through a resolver; every failure is `Unanswered`."""

from __future__ import annotations

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode

from controller.dns.wire import MessageCounts, Server, query


class Unanswered(Exception):
    """A server gave no usable answer; the text says why, for a finding."""

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


def resolve(
    resolver: Server, qname: dns.name.Name, rdtype: str, *, timeout: float, counts: MessageCounts
) -> dns.message.Message:
    """A question to the resolver, recursion desired (an authoritative server answers its own zone)."""
    return _send(resolver, qname, rdtype, timeout=timeout, counts=counts, recursive=True)


def ask(
    server: Server, qname: dns.name.Name, rdtype: str, *, timeout: float, counts: MessageCounts
) -> dns.message.Message:
    """A question to an authoritative server, which must answer as the authority for the name."""
    response = _send(server, qname, rdtype, timeout=timeout, counts=counts, recursive=False)
    if not response.flags & dns.flags.AA and response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        raise Unanswered("the answer is not authoritative: the zone is not served there")
    return response


def _send(
    server: Server,
    qname: dns.name.Name,
    rdtype: str,
    *,
    timeout: float,
    counts: MessageCounts,
    recursive: bool,
) -> dns.message.Message:
    try:
        return query(server, qname, rdtype, timeout=timeout, counts=counts, recursive=recursive)
    except dns.exception.Timeout:
        raise Unanswered("timed out", transient=True) from None
    except OSError as error:
        raise Unanswered(error.strerror or type(error).__name__, transient=True) from None
    except (EOFError, dns.exception.DNSException) as error:
        raise Unanswered(f"bad answer: {type(error).__name__}") from None
