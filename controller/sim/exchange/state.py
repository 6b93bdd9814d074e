"""The Exchange Online simulator's state: tenant directory, endpoints, batches, users and injected faults.

Everything here is plain data that round-trips through JSON (`ExchangeSimulator.to_json`). The directory
and the batches' users are `tables.Table`s: dicts that note which rows changed, so `store.SimStore` writes
only those, and that keep what the engine asks of them often (a batch's counts, an address's batches)
instead of rescanning the tenant.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from controller.sim.exchange.tables import Keyed, Row, Source, Table

# exchange-facts §1: 100 batches per tenant, 2,000 rows per staged CSV, 64-character batch names.
MAX_BATCHES = 100
MAX_CSV_ROWS = 2000
MAX_BATCH_NAME = 64
DEFAULT_RESULT_SIZE = 1000
# The documented defaults conflict (reference: 100; [WTK]/[MBP]: 20). Assumption: 20, at most 100 [MBP].
DEFAULT_MAX_CONCURRENT = 20
MAX_CONCURRENT_LIMIT = 100
# Undocumented durations; assumptions chosen so a pass of the controller sees the transient statuses.
DEFAULT_SYNC_SECONDS = 20 * 60.0
STOP_SECONDS = 60.0
COMPLETE_SECONDS = 10 * 60.0
REMOVE_SECONDS = 5 * 60.0


class Completion(StrEnum):
    """Whether Complete-MigrationBatch is accepted for staged batches (exchange-facts §8)."""

    SUPPORTED = "supported"
    UNSUPPORTED = "unsupported"


class RecipientType(StrEnum):
    MAIL_USER = "MailUser"
    USER_MAILBOX = "UserMailbox"
    USER = "User"  # a plain user: not a valid staged-migration target (row 1.1)
    MAIL_CONTACT = "MailContact"


MIGRATABLE = frozenset({RecipientType.MAIL_USER, RecipientType.USER_MAILBOX})


class BatchPhase(StrEnum):
    """What an administrator last asked of a batch; the visible Status is derived from it and its users."""

    CREATED = "Created"
    WAITING = "Waiting"  # started, but StartAfter is in the future
    RUNNING = "Running"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    COMPLETING = "Completing"
    COMPLETED = "Completed"
    REMOVING = "Removing"


class BatchStatus(StrEnum):
    """`MigrationBatchStatus` values the simulator produces."""

    CREATED = "Created"
    WAITING = "Waiting"
    SYNCING = "Syncing"
    SYNCED = "Synced"
    SYNCED_WITH_ERRORS = "SyncedWithErrors"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    COMPLETING = "Completing"
    COMPLETED = "Completed"
    COMPLETED_WITH_ERRORS = "CompletedWithErrors"
    REMOVING = "Removing"


class UserStatus(StrEnum):
    """`MigrationUserStatus` values the simulator produces.

    Assumption: a user of a batch that was never started shows `Stopped` (the EAC shows such a batch as
    Stopped); Exchange documents no user status for it.
    """

    QUEUED = "Queued"
    SYNCING = "Syncing"
    SYNCED = "Synced"
    FAILED = "Failed"
    STOPPED = "Stopped"
    COMPLETING = "Completing"
    COMPLETED = "Completed"
    REMOVING = "Removing"


MOVING = frozenset({UserStatus.QUEUED, UserStatus.SYNCING})
SYNCED_LIKE = frozenset({UserStatus.SYNCED, UserStatus.COMPLETING, UserStatus.COMPLETED})


class Model(BaseModel):
    model_config = ConfigDict(validate_assignment=False, extra="forbid")


class Recipient(Row):
    address: str
    type: RecipientType
    # exchange-facts §6: a staged migration converts the mail user directory sync created (IsDirSynced true);
    # a cloud-only one (created in Exchange Online) is not the on-premises mailbox's object.
    dir_synced: bool = True
    # SKUAssigned (§6: licences are assigned after migration, within 30 days). Assumption: a tenant licenses
    # its synced users (group-based licensing), so True unless a test or `stagectl sim recipient` says not.
    licensed: bool = True


class Endpoint(Model):
    name: str
    exchange_server: str | None = None
    rpc_proxy_server: str | None = None
    autodiscover: bool = False
    authentication: str = "Basic"
    email_address: str | None = None
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    username: str = ""  # the password is never stored: the state file is not a secret store


class User(Row):
    identity: str  # the CSV EmailAddress as given
    status: UserStatus = UserStatus.STOPPED
    error: str = ""
    last_sync: AwareDatetime | None = None
    seq: int = 0  # queue order: users take the endpoint's free sync slots first come, first served
    due: AwareDatetime | None = None  # when the initial sync of a Syncing user ends
    duplicate: bool = False  # failed because another batch owns the address (row 1.6)


@dataclass(frozen=True, slots=True)
class Summary:
    """A batch's users counted by status, and its latest sync: what its Status and counts are made of."""

    total: int
    by_status: Mapping[UserStatus, int]
    last_sync: datetime | None

    def count(self, statuses: Iterable[UserStatus]) -> int:
        return sum(self.by_status.get(status, 0) for status in statuses)

    @property
    def moving(self) -> int:
        return self.count(MOVING)


class Recipients(Table[Recipient]):
    """The tenant's directory: lower-cased address -> recipient."""

    __slots__ = ()
    value_type = Recipient


class Members(Table[User]):
    """A batch's users by lower-cased address, in CSV order.

    Keeps the batch's `summary` until a user changes (a finished batch is counted once, not on every
    Get-MigrationBatch) and tells the tenant's `Batches` which addresses the batch holds.
    """

    __slots__ = ("_summary", "batch_key", "batches", "recounts")
    value_type = User
    reads_whole = True  # a batch's users are read all at once, when first needed

    def __init__(self) -> None:
        super().__init__()
        self._summary: Summary | None = None
        self.recounts = 0  # summaries computed: a test can see that an unchanged batch is not recounted
        self.batches: Batches | None = None  # the tenant's batches, once the batch is one of them
        self.batch_key = ""

    def read_later(self, source: Source[User], summary: Summary | None = None) -> None:
        """Read the users when first needed; until then `summary` (the store's) is the batch's."""
        super().read_later(source)
        self._summary = summary

    def read_later_still(self, summary: Summary) -> None:
        """Another transaction changed the users, not read here yet: their counts are now `summary`."""
        if self.pending:
            self._summary = summary

    def summary(self) -> Summary:
        if self._summary is None:
            users = self.values()
            syncs = [user.last_sync for user in users if user.last_sync is not None]
            self._summary = Summary(
                total=len(users),
                by_status=Counter(user.status for user in users),
                last_sync=max(syncs) if syncs else None,
            )
            self.recounts += 1
        return self._summary

    def _added(self, key: str) -> None:
        if self.batches is not None:
            self.batches.hold(key, self.batch_key)

    def _removed(self, key: str) -> None:
        if self.batches is not None:
            self.batches.release(key, self.batch_key)

    def _changed(self, key: str) -> None:
        self._summary = None

    def _loaded(self) -> None:
        self._summary = None
        if self.batches is not None:
            for address in self:
                self.batches.hold(address, self.batch_key)


class Batch(Model):
    name: str
    endpoint: str
    phase: BatchPhase = BatchPhase.CREATED
    created: AwareDatetime
    start_after: AwareDatetime | None = None
    complete_after: AwareDatetime | None = None
    notification_emails: list[str] = []
    time_zone: str | None = None
    transition_at: AwareDatetime | None = None  # end of Stopping, Completing or Removing
    users: Members = Field(default_factory=Members)  # lower-cased address -> user, in CSV order


class Batches(Keyed[Batch]):
    """The tenant's batches by lower-cased name, in creation order, and which batches hold each address.

    A batch set under a key already taken is a new batch: it replaces the old one and goes last.
    """

    __slots__ = ("holders", "recording", "unread_holders")
    value_type = Batch

    def __init__(self) -> None:
        super().__init__()
        self.holders: dict[str, tuple[str, ...]] = {}  # address -> keys of the batches it is a user of
        self.recording = False
        # The store's: the keys of the batches an address is a user of, as the database holds them.
        self.unread_holders: Callable[[str], Iterable[str]] | None = None

    def __setitem__(self, key: str, batch: Batch) -> None:
        if self._items.get(key) is batch:
            return
        if key in self._items:
            del self[key]
        self._items[key] = batch
        users = batch.users
        users.batches, users.batch_key, users.recording = self, key, self.recording
        if not users.pending:  # else they are held when read
            for address in users:
                self.hold(address, key)

    def __delitem__(self, key: str) -> None:
        users = self._items.pop(key).users
        if not users.pending:
            for address in users:
                self.release(address, key)
        users.batches = None

    def hold(self, address: str, batch_key: str) -> None:
        self.holders[address] = (*self.holders.get(address, ()), batch_key)

    def release(self, address: str, batch_key: str) -> None:
        rest = tuple(k for k in self.holders.get(address, ()) if k != batch_key)
        if rest:
            self.holders[address] = rest
        else:
            self.holders.pop(address, None)

    def holding(self, address: str) -> tuple[str, ...]:
        """The keys of the batches `address` is a user of (as a real member or a failed duplicate), in
        batch order: from the index of the batches whose users are read, from `unread_holders` for the
        others."""
        keys = self.holders.get(address, ())
        if self.unread_holders is not None:
            unread = [key for key in self.unread_holders(address) if key in self._items]
            keys += tuple(key for key in unread if self._items[key].users.pending)
        if len(keys) > 1:
            order = {key: position for position, key in enumerate(self._items)}
            keys = tuple(sorted(keys, key=order.__getitem__))
        return keys

    def record(self) -> None:
        """Note changes from now on, in the batches' users too (the store's tenant)."""
        self.recording = True
        for batch in self._items.values():
            batch.users.recording = True


class InjectedFailure(Model):
    """A user's sync fails with `Error: <type>: <message>` (or `summary` verbatim: a documented text
    without that shape), `remaining` more times (None: until the cause is fixed, `sim fix`)."""

    type: str
    message: str
    remaining: int | None = None
    summary: str | None = None


class ThrottleMode(StrEnum):
    ERROR = "error"  # the call raises ThrottledError
    WARNING = "warning"  # the call runs and carries a "Micro delay applied" warning


class Throttle(Model):
    count: int
    mode: ThrottleMode = ThrottleMode.ERROR


class Busy(Model):
    """A share of calls answered busy, drawn from a sequence seeded by `seed`: the same seed busies the same
    calls, whichever process makes them. A busy call raises ThrottledError (the server is busy) or runs and
    carries a "Micro delay applied" warning: `mode`, or each half the time when None. A busy error asks
    the client to retry after `retry_after` seconds."""

    rate: float = Field(ge=0.0, le=1.0)
    seed: int = 0
    mode: ThrottleMode | None = None
    retry_after: float = Field(default=0.1, ge=0.0)
    draws: int = 0
    errors: int = 0  # calls answered with a busy error so far
    warnings: int = 0  # calls answered with a "Micro delay applied" warning so far

    def draw(self) -> ThrottleMode | None:
        """The next call's fate: None (served as usual), or how it is busied."""
        rng = random.Random(f"{self.seed}:{self.draws}")
        self.draws += 1
        if rng.random() >= self.rate:
            return None
        mode = self.mode or (ThrottleMode.ERROR if rng.random() < 0.5 else ThrottleMode.WARNING)
        if mode == ThrottleMode.ERROR:
            self.errors += 1
        else:
            self.warnings += 1
        return mode


class SimState(Model):
    now: AwareDatetime
    completion: Completion = Completion.SUPPORTED
    next_seq: int = 1
    recipients: Recipients = Field(default_factory=Recipients)  # lower-cased address -> recipient
    endpoints: dict[str, Endpoint] = {}
    batches: Batches = Field(default_factory=Batches)
    sync_seconds_default: float = DEFAULT_SYNC_SECONDS
    sync_seconds: dict[str, float] = {}  # lower-cased address -> its initial sync time
    failures: dict[str, InjectedFailure] = {}
    throttles: dict[str, Throttle] = {}  # lower-cased cmdlet -> the next calls throttled
    latency_seconds: float = 0.0  # real time added to every call by SimRunner
    busy: Busy | None = None  # a share of all calls busied (see Busy), besides `throttles`
    # Test-MigrationServerAvailability fails with this ErrorDetail (exchange-facts §9.2) until cleared; None:
    # the source answers. `stagectl sim endpoint-check --fail DETAIL` / `--pass`.
    endpoint_check_failure: str | None = None
    calls: dict[str, int] = {}


def key(text: str) -> str:
    """Names and addresses are case-insensitive in Exchange."""
    return text.strip().lower()


def user_owner(state: SimState, address: str, *, besides: str | None = None) -> str | None:
    """The batch (other than `besides`) that holds `address` as a real member, not as a failed duplicate."""
    for batch_key in state.batches.holding(address):
        batch = state.batches[batch_key]
        if batch_key != besides and not batch.users[address].duplicate:
            return batch.name
    return None
