"""Observe: read Exchange and the managed DNS RRsets and join them with memory into a Snapshot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from controller.desired.models import DesiredState
from controller.dns.base import DnsBackend
from controller.exchange.client import Recipients
from controller.model.snapshot import (
    EndpointCheck,
    ExchangeObserved,
    Memory,
    ObservedBatch,
    ObservedEndpoint,
    ObservedUser,
    Snapshot,
)
from controller.planner import reads

# The kinds of ExchangeObserved that hold objects; `usersRead`/`recipientsRead` say what a read covered.
OBJECT_KINDS = ("endpoints", "batches", "users", "mailUsers", "mailboxes")
# Said when a reader left something unknown without a reason (an old snapshot, a backend that gives none).
NO_REASON = "could not be read (no reason was recorded)"


class ExchangeReader(Protocol):
    """The reads of one pass, in this order (contract §3.1); each returns None when it could not read."""

    def read_endpoints(self) -> list[ObservedEndpoint] | None:
        """The first read of a pass: it also forgets why the previous pass could not read."""
        ...

    def read_batches(self) -> list[ObservedBatch] | None: ...

    def read_users(
        self, batches: Sequence[ObservedBatch], *, whole: bool = False
    ) -> list[ObservedUser] | None:
        """The users of these batches: a read each, or with `whole` one read of every batch's users."""
        ...

    def read_recipients(self, addresses: Sequence[str]) -> Recipients | None: ...

    def read_endpoint_check(self, endpoint: str) -> EndpointCheck | None:
        """Test-MigrationServerAvailability -Endpoint: only in a pass where a batch is about to start."""
        ...

    @property
    def unreadable(self) -> Mapping[str, str]:
        """Why each kind this pass left unknown could not be read ("exchange/batches")."""
        ...


def observe_exchange(
    desired: DesiredState, exchange: ExchangeReader, memory: Memory
) -> tuple[ExchangeObserved, dict[str, str]]:
    """Read what this pass needs: endpoints and the batch list whole, users of the batches that are not
    finished, recipients for the addresses a decision needs, and the endpoint's connection test when a
    batch is about to start (planner.reads decides which).

    Also returns why kinds were left unread because a read they depend on failed.
    """
    endpoints = exchange.read_endpoints()
    batches = exchange.read_batches()
    if batches is None:  # nothing can be scoped: users and recipients stay unknown too
        why = "not read: which to read depends on the batch list, which could not be read"
        return ExchangeObserved(endpoints=endpoints), {
            f"exchange/{kind}": why for kind in ("users", "mailUsers", "mailboxes")
        }
    unfinished = reads.users_to_read(desired, memory, batches)
    whole = reads.read_whole(unfinished, batches)
    chosen = batches if whole else unfinished
    users = exchange.read_users(chosen, whole=whole)
    partial = ExchangeObserved(
        endpoints=endpoints, batches=batches, users=users, usersRead=[b.Identity for b in chosen]
    )
    if users is None:
        why = "not read: which to read depends on the migration users, which could not be read"
        return partial, {f"exchange/{kind}": why for kind in ("mailUsers", "mailboxes")}
    recipients = exchange.read_recipients(reads.recipients_to_check(desired, partial, memory))
    tested = reads.endpoint_to_test(desired, partial)
    check = None if tested is None else exchange.read_endpoint_check(tested)
    partial = partial.model_copy(update={"endpointCheck": check})
    if recipients is None:
        return partial, {}
    return partial.model_copy(
        update={
            "mailUsers": recipients.mail_users,
            "mailboxes": recipients.mailboxes,
            "recipients": recipients.details,
            "recipientsRead": recipients.covered,
        }
    ), {}


def wanted_rrsets(desired: DesiredState) -> dict[str, list[tuple[str, str]]]:
    """Per zone, the (relative name, TYPE) pairs the repository manages: nothing else is read."""
    wanted: dict[str, list[tuple[str, str]]] = {}
    for zone in desired.zones:
        wanted[zone.name] = [(record.name, record.type.value) for record in zone.records]
    return wanted


def observe(
    desired: DesiredState, *, exchange: ExchangeReader, dns: DnsBackend, memory: Memory, now: datetime
) -> tuple[Snapshot, tuple[str, ...]]:
    """The snapshot and the DNS findings (for example two authoritative servers that disagree).

    `Snapshot.unreadable` says why each unknown kind or zone could not be read, as the readers said it.
    """
    exchange_observed, not_read = observe_exchange(desired, exchange, memory)
    dns_observed = dns.observe(wanted_rrsets(desired))
    dns_reasons = {
        f"dns/{zone}": dns_observed.errors.get(zone, NO_REASON)
        for zone, rrsets in dns_observed.zones.items()
        if rrsets is None
    }
    snapshot = Snapshot(
        observedAt=now,
        exchange=exchange_observed,
        dns=dict(dns_observed.zones),
        unreadable={**not_read, **exchange.unreadable, **dns_reasons},
        memory=memory,
    )
    return snapshot, dns_observed.findings


def unknown(snapshot: Snapshot) -> dict[str, str]:
    """Everything the snapshot could not read ("exchange/batches", "dns/contoso.com") and why.

    Taken from what is `None`, not only from `unreadable`, so that a snapshot written without reasons
    still never passes for a complete one.
    """
    found: dict[str, str] = {}
    for kind, value in snapshot.exchange:
        if value is None and kind in OBJECT_KINDS:
            found[f"exchange/{kind}"] = snapshot.unreadable.get(f"exchange/{kind}", NO_REASON)
    for zone, rrsets in snapshot.dns.items():
        if rrsets is None:
            found[f"dns/{zone}"] = snapshot.unreadable.get(f"dns/{zone}", NO_REASON)
    return found
