"""One RRset change as a TSIG-signed RFC 2136 UPDATE to the primary, with its prerequisite and read-back.

Prerequisite choice: an RFC 2136 prerequisite cannot compare SOA serials, and "the SOA RRset exists
with these values" would fail on any change anywhere in the zone, including our own previous action
of the same pass. So each UPDATE carries a prerequisite on the target RRset as observed: "exists with
exactly these values" (value dependent, TTL 0) or "does not exist" when it was absent. A concurrent
change to what we manage fails with NXRRSET/YXRRSET, which is a transient error: observe again.

The prerequisite, and each TXT record deleted or kept, is the rdata exactly as the primary held it when
read: a TXT value split into several character-strings matches only as split there, and the values the
plan carries are joined.
"""

from __future__ import annotations

from collections.abc import Sequence

import dns.exception
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataset
import dns.tsig
import dns.update

from controller import fence
from controller.dns.base import DnsError, DnsIndeterminateError, DnsPermanentError, DnsTransientError
from controller.dns.questions import Unanswered
from controller.dns.reading import read_rrset
from controller.dns.tsig import TsigKey
from controller.dns.wire import (
    MessageCounts,
    Server,
    absolute,
    describe,
    same_data,
    to_rdata,
    to_rdatas,
    to_text,
)
from controller.model.actions import DnsAction


def apply_update(
    action: DnsAction,
    key: TsigKey,
    primary: Server,
    *,
    held: Sequence[dns.rdata.Rdata] | None,
    timeout: float,
    counts: MessageCounts,
) -> None:
    """Send the UPDATE to the primary and read the RRset back; raise a DnsError when it did not take.

    `held`: the rdata the primary held when read, the prerequisite when it still means the action's
    previous values."""
    update = update_message(action, key, held=held)
    fence.check()  # the primary was just read: the UPDATE must still be ours to send
    try:
        counts.updates += 1
        response = dns.query.tcp(update, primary.address(), port=primary.port, timeout=timeout)
    except Exception as error:
        raise _map_send_error(error, action=action, key=key, primary=primary) from None
    rcode = response.rcode()
    if rcode != dns.rcode.NOERROR:
        raise _map_rcode(rcode, action=action, primary=primary)
    _verify(action, primary, timeout=timeout, counts=counts)


def update_message(
    action: DnsAction, key: TsigKey, *, held: Sequence[dns.rdata.Rdata] | None = None
) -> dns.update.UpdateMessage:
    """The signed UPDATE: the observed RRset as prerequisite, then the change to the desired values."""
    update = dns.update.UpdateMessage(
        action.zone, keyring=key.keyring(), keyname=dns.name.from_text(key.name), keyalgorithm=key.algorithm
    )
    name = absolute(action.zone, action.name)
    rdtype = action.type.upper()
    if action.previous_values is None:
        update.absent(name, rdtype)
        observed: list[dns.rdata.Rdata] = []
    else:
        observed = _as_held(rdtype, action.previous_values, held)
        # Prerequisite RRs carry TTL 0 (RFC 2136 §2.4.2); the whole RRset must match.
        update.present(name, dns.rdataset.from_rdata_list(0, observed))
    desired = to_rdatas(rdtype, action.values)
    if not desired:
        update.delete(name, rdtype)
    elif rdtype == "TXT" and action.previous_values is not None:
        # Only the difference, so other TXT strings (domain verification tokens) are never touched;
        # a TTL belongs to the whole RRset, so a TTL change re-adds every value at the new TTL, a kept
        # one as held (re-split, it would be a second record with the same joined text).
        before = {to_text(rdata): rdata for rdata in observed}
        wanted = dict.fromkeys(action.values)
        for text, rdata in before.items():
            if text not in wanted:
                update.delete(name, rdata)
        for text in wanted:
            if text not in before:
                update.add(name, action.ttl, to_rdata(rdtype, text))
            elif action.ttl != action.previous_ttl:
                update.add(name, action.ttl, before[text])
    else:
        update.replace(name, action.ttl, *desired)
    return update


def _as_held(
    rdtype: str, values: Sequence[str], held: Sequence[dns.rdata.Rdata] | None
) -> list[dns.rdata.Rdata]:
    """The previous values as the primary held them, when `held` still means them; else as written."""
    if held is not None and same_data(rdtype, [to_text(rdata) for rdata in held], values):
        return list(held)
    return to_rdatas(rdtype, values)


def _verify(action: DnsAction, primary: Server, *, timeout: float, counts: MessageCounts) -> None:
    """Read the RRset back: BIND answers NOERROR yet ignores data added beside a CNAME."""
    try:
        now = read_rrset(
            action.zone, primary, (action.name.lower(), action.type.upper()), timeout=timeout, counts=counts
        )
    except Unanswered as error:  # the primary acknowledged it: applied, not verified; observation decides
        raise DnsIndeterminateError(
            f"{action.object}: the update was acknowledged but could not be read back ({error}); "
            "the next observation decides"
        ) from None
    if not action.values and now is None:
        return
    if now is None or now.ttl != action.ttl or not same_data(action.type, now.values, action.values):
        raise DnsPermanentError(
            f"{action.object}: the primary {primary} accepted the update but serves {describe(now)}"
            f" instead of ttl {action.ttl} [{', '.join(action.values)}]"
            " (is there other data beside a CNAME at that name?)"
        )


def _map_send_error(error: Exception, *, action: DnsAction, key: TsigKey, primary: Server) -> DnsError:
    """One clear sentence per failure; the key is named, its secret never."""
    if isinstance(error, dns.tsig.PeerError | dns.tsig.BadSignature | dns.tsig.BadKey | dns.tsig.BadTime):
        return DnsPermanentError(
            f"{action.object}: the server {primary} rejected the TSIG key {key.name}"
            f" ({type(error).__name__}: wrong secret, unknown key name or clock skew)"
        )
    unsure = "; it may have been applied: the next observation decides"
    if isinstance(error, dns.exception.Timeout):
        return DnsIndeterminateError(
            f"{action.object}: the primary {primary} did not answer the update in time{unsure}"
        )
    if isinstance(error, ConnectionRefusedError):
        return DnsTransientError(f"{action.object}: the primary {primary} refused the connection")
    if isinstance(error, OSError | EOFError):
        failure = type(error).__name__
        return DnsIndeterminateError(
            f"{action.object}: the connection to the primary {primary} failed ({failure}){unsure}"
        )
    return DnsPermanentError(f"{action.object}: the update to {primary} failed ({type(error).__name__})")


def _map_rcode(rcode: dns.rcode.Rcode, *, action: DnsAction, primary: Server) -> DnsError:
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


def _prerequisite_failed(rcode: dns.rcode.Rcode) -> bool:
    return rcode in (dns.rcode.NXRRSET, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN, dns.rcode.YXDOMAIN)
