"""Counted questions to DNS servers, authoritative or through a resolver; every failure is `Unanswered`.

A server that did not answer is remembered in the pass's `Silence` and not asked again in that pass, so
an unreachable server costs one bounded timeout per pass, not one per question.
"""

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


class Silence:
    """The servers that did not answer in this pass, and why: each is asked again only in the next pass."""

    def __init__(self) -> None:
        self._why: dict[Server, str] = {}

    def new_pass(self) -> None:
        self._why.clear()

    def check(self, server: Server) -> None:
        """Raise Unanswered, without a question, for a server that did not answer earlier in this pass."""
        why = self._why.get(server)
        if why is not None:
            raise Unanswered(f"did not answer earlier in this pass ({why})", transient=True)

    def remember(self, server: Server, why: str) -> None:
        self._why[server] = why


def resolve(
    resolver: Server,
    qname: dns.name.Name,
    rdtype: str,
    *,
    timeout: float,
    counts: MessageCounts,
    silence: Silence | None = None,
) -> dns.message.Message:
    """A question to the resolver, recursion desired (an authoritative server answers its own zone)."""
    return _send(resolver, qname, rdtype, timeout=timeout, counts=counts, silence=silence, recursive=True)


def ask(
    server: Server,
    qname: dns.name.Name,
    rdtype: str,
    *,
    timeout: float,
    counts: MessageCounts,
    silence: Silence | None = None,
) -> dns.message.Message:
    """A question to an authoritative server, which must answer as the authority for the name."""
    response = _send(server, qname, rdtype, timeout=timeout, counts=counts, silence=silence, recursive=False)
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
    silence: Silence | None,
    recursive: bool,
) -> dns.message.Message:
    if silence is not None:
        silence.check(server)
    try:
        return query(server, qname, rdtype, timeout=timeout, counts=counts, recursive=recursive)
    except (dns.exception.Timeout, OSError) as error:
        why = (
            "timed out"
            if isinstance(error, dns.exception.Timeout)
            else error.strerror or type(error).__name__
        )
        if silence is not None:
            silence.remember(server, why)
        raise Unanswered(why, transient=True) from None
    except (EOFError, dns.exception.DNSException) as error:
        raise Unanswered(f"bad answer: {type(error).__name__}") from None
