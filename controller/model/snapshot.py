"""The planner's other input (contract §3): what was observed in Exchange and DNS, plus memory.

Unknown is never absent: a kind or a zone that could not be read is `None`; an empty list means it was
read and nothing exists. Exchange objects keep their PowerShell property names.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)


class Observed(BaseModel):
    """An object read from Exchange, under its PowerShell property names; unlisted properties are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)


class ObservedEndpoint(Observed):
    Identity: str
    EndpointType: str = "ExchangeOutlookAnywhere"
    ExchangeServer: str | None = None
    RpcProxyServer: str | None = None
    UseAutoDiscover: bool | None = None
    Authentication: str | None = None
    EmailAddress: str | None = None
    MaxConcurrentMigrations: int | None = None


class ObservedBatch(Observed):
    Identity: str
    Status: str  # kept as text: a status this controller does not know is reported, never guessed
    TotalCount: int = 0
    SyncedCount: int = 0
    # Users whose batch was completed (finalized): no longer counted in SyncedCount, as the EAC shows
    # Synced and Finalized apart; a Completed batch of 15 reads SyncedCount 0, FinalizedCount 15.
    FinalizedCount: int = 0
    FailedCount: int = 0
    NotificationEmails: list[str] | None = None
    StartAfterUTC: AwareDatetime | None = None
    CompleteAfterUTC: AwareDatetime | None = None
    LastSyncedDateTime: AwareDatetime | None = None


class ObservedUser(Observed):
    Identity: str  # the EmailAddress of the CSV row
    BatchId: str
    Status: str
    ErrorSummary: str = ""


class ObservedRecipient(Observed):
    """A directory entry from the recipient read (exchange-facts §6, filter-properties): its type, whether
    directory sync made it (IsDirSynced) and whether a licence is assigned (SKUAssigned, None: unreported)."""

    PrimarySmtpAddress: str
    RecipientTypeDetails: str = ""
    IsDirSynced: bool | None = None
    SKUAssigned: bool | None = None


class EndpointCheck(Observed):
    """What Test-MigrationServerAvailability -Endpoint answered (exchange-facts §9.0: it does not throw; it
    returns Result Success or Failed, Message, ErrorDetail with the `--->` chain, IsValid, ...)."""

    Endpoint: str = ""  # the endpoint tested, as the controller named it (not an Exchange property)
    Result: str
    Message: str = ""
    ErrorDetail: str = ""
    IsValid: bool | None = None
    SupportsCutover: bool | None = None

    @property
    def succeeded(self) -> bool:
        return self.Result.lower() == "success"


class ExchangeObserved(BaseModel):
    """Bulk reads, proportional to unfinished work (contract §3.1, docs/observation.md); `None` where a
    read failed.

    `usersRead` names the batches whose migration users were read (None: every batch's): a finished
    batch is known from the batch list and memory alone. `recipientsRead` names the addresses the
    recipient read covered (None: the whole directory): an address outside it is unknown, not absent.
    """

    model_config = ConfigDict(frozen=True)

    endpoints: list[ObservedEndpoint] | None = None
    batches: list[ObservedBatch] | None = None
    users: list[ObservedUser] | None = None
    mailUsers: list[str] | None = Field(  # snapshot JSON names
        default=None, description="addresses that exist in Exchange Online as a mail user or mailbox"
    )
    mailboxes: list[str] | None = Field(
        default=None, description="of those, the addresses that already have a mailbox (migrated)"
    )
    recipients: list[ObservedRecipient] | None = Field(
        default=None,
        description="the entries the recipient read found, with RecipientTypeDetails, IsDirSynced and "
        "SKUAssigned (the preflight and post-flight); None in a snapshot written before they were read",
    )
    endpointCheck: EndpointCheck | None = Field(
        default=None,
        description="Test-MigrationServerAvailability -Endpoint, run only in a pass where a batch is about "
        "to start; None when not run (why it could not be is under unreadable: exchange/endpointCheck)",
    )
    usersRead: list[str] | None = None
    recipientsRead: list[str] | None = None

    def users_read(self, batch: str) -> bool:
        """Whether the migration users of this batch (by name, any case) were read."""
        return self.users is not None and (
            self.usersRead is None or batch.lower() in {b.lower() for b in self.usersRead}
        )


class ServerAnswer(BaseModel):
    """What one authoritative server answered for an RRset: the TTL lead is measured on the slowest one.

    `error` is set (and the rest may be None) when the server could not be read; `ttl` and `values` are
    None when the server serves no such RRset; `serial` is the zone's SOA serial that server serves.
    """

    model_config = ConfigDict(frozen=True)

    server: str  # as configured or discovered: "ns2.contoso.com (192.0.2.2:53)"
    primary: bool = False
    serial: int | None = None
    ttl: int | None = None
    values: list[str] | None = None
    error: str | None = None


class RRset(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str  # relative to the zone, "@" for the apex
    type: str
    ttl: int  # the primary's
    values: list[str]  # the primary's; TXT character-strings joined, unquoted
    servers: list[ServerAnswer] = []  # every authoritative server's answer; empty: one source only

    @property
    def key(self) -> tuple[str, str]:
        return (self.name.lower(), self.type)


class RetryCount(BaseModel):
    """A batch's retries of failed users: `count` Start-MigrationBatch calls at `revision` for errors a
    retry may help; `fixFirst` the batch's `spec.retry` ("" unset) at which failures that need a fix first
    were seen, None when none are: a later `spec.retry` asks for their retry (contract §4, fix-first)."""

    model_config = ConfigDict(frozen=True)

    revision: str
    count: int
    fixFirst: str | None = None

    @model_serializer(mode="wrap")
    def _without_unset_fix_first(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        """`fixFirst` only when set: memory written before it existed reads and writes the same."""
        data: dict[str, object] = handler(self)
        if data.get("fixFirst") is None:
            data.pop("fixFirst", None)
        return data


class FinishedBatch(BaseModel):
    """A batch seen done (Completed, or Synced where Exchange refused to complete it) with every desired
    member arrived: its users are not read again while its status, TotalCount and the repository's member
    list stay as they were (contract §3.1)."""

    model_config = ConfigDict(frozen=True)

    members: str  # digest of the desired member list when it was verified
    total: int  # the batch's TotalCount then
    status: str = "Completed"  # its status then: Completed, or Synced where completion is refused


class Memory(BaseModel):
    """What the controller remembers between passes; the planner returns the updated copy."""

    model_config = ConfigDict(frozen=True)

    lowTtlSince: dict[str, AwareDatetime] = {}  # "zone/name/TYPE" -> first seen low
    ttlBeforeLowering: dict[str, int] = {}  # the TTL a cutover record had before we lowered it
    cutoverAt: AwareDatetime | None = None  # when MX was first observed at its desired value
    retries: dict[str, RetryCount] = {}  # batch key -> Start-MigrationBatch retries for one revision
    completionUnsupported: list[str] = []  # batches whose Complete-MigrationBatch was refused
    laggingSince: dict[str, AwareDatetime] = {}  # "zone/server" -> first seen behind or unreadable
    swappedAt: dict[str, AwareDatetime] = {}  # "zone/name/TYPE" -> values swapped at the low TTL
    finished: dict[str, FinishedBatch] = {}  # batch key -> verified complete; its users are not re-read
    ready: dict[str, str] = {}  # planned batch key -> member digest when every member was a mail user
    memberships: dict[str, FinishedBatch] = {}  # batch key -> its users read matched the repository
    # batch key -> member digest when the post-flight passed (every member a UserMailbox): not read again
    postflight: dict[str, str] = {}


class Snapshot(BaseModel):
    model_config = ConfigDict(frozen=True)

    observedAt: AwareDatetime
    exchange: ExchangeObserved = ExchangeObserved()
    dns: dict[str, list[RRset] | None] = {}
    unreadable: dict[str, str] = {}  # "exchange/batches", "dns/contoso.com" -> why it could not be read
    memory: Memory = Memory()

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Snapshot:
        return cls.model_validate_json(text)

    def canonical(self) -> str:
        """Sorted, compact JSON: the bytes the plan checksum is taken over."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def at(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, the one spelling of time in snapshots, plans and the audit log."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
