"""What every batch decision reads besides the batch itself, and how a batch is named in the plan. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from controller.desired.models import Batch, DesiredState
from controller.model.snapshot import (
    EndpointCheck,
    ExchangeObserved,
    ObservedBatch,
    ObservedRecipient,
    ObservedUser,
)


@dataclass(frozen=True, slots=True)
class Context:
    """What every batch decision reads besides the batch itself."""

    desired: DesiredState
    endpoint_problem: str | None  # why New-MigrationBatch cannot run now, None when the endpoint is there
    mail_users: frozenset[str] | None  # None: could not be read
    mailboxes: frozenset[str]  # members already migrated (empty when unknown: the guard then stays silent)
    users: dict[str, dict[str, ObservedUser]] | None  # batch key -> member key -> user; None: unknown
    now: datetime
    users_read: frozenset[str] | None = None  # batch keys whose users were read; None: every batch's
    checked: frozenset[str] | None = None  # addresses the recipient read covered; None: the directory
    # Each entry the recipient read found, by lower-cased address (type, IsDirSynced, SKUAssigned); None in
    # a snapshot written before they were read (the preflight then says those checks were not reported).
    recipients: dict[str, ObservedRecipient] | None = None
    endpoint_check: EndpointCheck | None = None  # Test-MigrationServerAvailability, when it ran
    endpoint_check_error: str | None = None  # why it could not run, when it could not
    force: bool = False  # the command's --force (contract §4)
    # Batches Exchange has that the repository does not name and whose users were not read this pass: who
    # they hold is unknown (the preflight's "in no other batch" cannot pass while any is left unread).
    unnamed_unread: tuple[str, ...] = ()

    def read_users_of(self, batch: Batch) -> bool:
        """Whether this batch's migration users were read (a finished batch's are not)."""
        return self.users is not None and (self.users_read is None or batch.key in self.users_read)

    def unchecked(self, keys: Iterable[str]) -> list[str]:
        """The addresses among `keys` that the recipient read did not cover: unknown, never absent."""
        if self.checked is None:
            return []
        return [key for key in keys if key not in self.checked]

    @classmethod
    def read(
        cls,
        desired: DesiredState,
        exchange: ExchangeObserved,
        *,
        users: UsersByBatch | None,
        endpoint_problem: str | None,
        now: datetime,
        endpoint_check_error: str | None = None,
        force: bool = False,
    ) -> Context:
        """Index what Exchange reported by lower-cased address, the identity members compare on;
        `users` is `users_by_batch(exchange.users)`, which the plan indexes once."""
        return cls(
            desired=desired,
            endpoint_problem=endpoint_problem,
            mail_users=None
            if exchange.mailUsers is None
            else frozenset(a.lower() for a in exchange.mailUsers),
            mailboxes=frozenset(a.lower() for a in exchange.mailboxes or ()),
            users=users,
            now=now,
            users_read=None
            if exchange.usersRead is None
            else frozenset(b.lower() for b in exchange.usersRead),
            checked=None
            if exchange.recipientsRead is None
            else frozenset(a.lower() for a in exchange.recipientsRead),
            recipients=None
            if exchange.recipients is None
            else {r.PrimarySmtpAddress.lower(): r for r in exchange.recipients},
            endpoint_check=exchange.endpointCheck,
            endpoint_check_error=endpoint_check_error,
            force=force,
            unnamed_unread=_unnamed_unread(desired, exchange),
        )


def _unnamed_unread(desired: DesiredState, exchange: ExchangeObserved) -> tuple[str, ...]:
    named = {batch.key for batch in desired.batches}
    return tuple(
        found.Identity
        for found in exchange.batches or ()
        if found.Identity.lower() not in named
        and found.Status.lower() != "removing"
        and not exchange.users_read(found.Identity)
    )


def users_by_batch(users: list[ObservedUser] | None) -> dict[str, dict[str, ObservedUser]] | None:
    """Batch key -> member key -> user, by lower-cased name and address; None when users are unknown."""
    if users is None:
        return None
    index: dict[str, dict[str, ObservedUser]] = {}
    for user in users:
        index.setdefault(user.BatchId.lower(), {})[user.Identity.lower()] = user
    return index


UsersByBatch = dict[str, dict[str, ObservedUser]]


def batch_object(batch: Batch) -> str:
    """The plan's name for a batch: `batch/<name>`."""
    return f"batch/{batch.name}"


def progress(found: ObservedBatch) -> str:
    failed = f", {found.FailedCount} failed" if found.FailedCount else ""
    return f"{found.SyncedCount + found.FinalizedCount}/{found.TotalCount} synced{failed}"
