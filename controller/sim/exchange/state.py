"""The Exchange Online simulator's state: tenant directory, endpoints, batches, users and injected faults.

Everything here is plain data that round-trips through JSON, so separate processes (CLI runs, the PSRP
gateway) share one simulated tenant through `store.SimStore`.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict

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


class Recipient(Model):
    address: str
    type: RecipientType


class Endpoint(Model):
    name: str
    exchange_server: str | None = None
    rpc_proxy_server: str | None = None
    autodiscover: bool = False
    authentication: str = "Basic"
    email_address: str | None = None
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    username: str = ""  # the password is never stored: the state file is not a secret store


class User(Model):
    identity: str  # the CSV EmailAddress as given
    status: UserStatus = UserStatus.STOPPED
    error: str = ""
    last_sync: AwareDatetime | None = None
    seq: int = 0  # queue order: users take the endpoint's free sync slots first come, first served
    due: AwareDatetime | None = None  # when the initial sync of a Syncing user ends
    duplicate: bool = False  # failed because another batch owns the address (row 1.6)


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
    users: dict[str, User] = {}  # lower-cased address -> user, in CSV order


class InjectedFailure(Model):
    """A user's sync fails with `Error: <type>: <message>`, `remaining` more times (None: always)."""

    type: str
    message: str
    remaining: int | None = None


class ThrottleMode(StrEnum):
    ERROR = "error"  # the call raises ThrottledError
    WARNING = "warning"  # the call runs and carries a "Micro delay applied" warning


class Throttle(Model):
    count: int
    mode: ThrottleMode = ThrottleMode.ERROR


class SimState(Model):
    now: AwareDatetime
    completion: Completion = Completion.SUPPORTED
    next_seq: int = 1
    recipients: dict[str, Recipient] = {}
    endpoints: dict[str, Endpoint] = {}
    batches: dict[str, Batch] = {}
    sync_seconds_default: float = DEFAULT_SYNC_SECONDS
    sync_seconds: dict[str, float] = {}  # lower-cased address -> its initial sync time
    failures: dict[str, InjectedFailure] = {}
    throttles: dict[str, Throttle] = {}  # lower-cased cmdlet -> the next calls throttled
    latency_seconds: float = 0.0  # real time added to every call by SimRunner
    calls: dict[str, int] = {}


def key(text: str) -> str:
    """Names and addresses are case-insensitive in Exchange."""
    return text.strip().lower()


def user_owner(state: SimState, address: str, *, besides: str | None = None) -> str | None:
    """The batch (other than `besides`) that holds `address` as a real member, not as a failed duplicate."""
    for batch_key, batch in state.batches.items():
        if batch_key == besides:
            continue
        user = batch.users.get(address)
        if user is not None and not user.duplicate:
            return batch.name
    return None
