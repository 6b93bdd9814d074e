"""Pydantic models of the desired state (contract §2) and the resolved `DesiredState` the planner reads.

The YAML documents are validated into the `*Document` models; `controller.desired.loader` turns files
into documents, reports every problem with its file:line:column, and builds a `DesiredState`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from controller.desired import idn
from controller.desired.shown import character, shown

API_VERSION = "stagectl/v1"
MAX_BATCH_MEMBERS = 2000  # exchange-facts §1: "a maximum of 2,000 rows"
MAX_BATCHES = 100  # exchange-facts §1: MaxNumberOfBatches
MAX_BATCH_NAME = 64
MIN_TTL, MAX_TTL = 30, 604800
MAX_LOW_TTL = 3600  # Microsoft: "3,600 seconds (one hour) or less" before the migration (exchange-facts §7)


class BatchState(StrEnum):
    """What the repository asks of a batch; states move forward only (contract §2)."""

    PLANNED = "planned"
    CREATED = "created"
    STARTED = "started"
    STOPPED = "stopped"
    COMPLETED = "completed"
    REMOVED = "removed"


class RecordType(StrEnum):
    MX = "MX"
    CNAME = "CNAME"
    TXT = "TXT"
    A = "A"
    AAAA = "AAAA"
    SRV = "SRV"


class DriftAction(StrEnum):
    WARN = "warn"
    CORRECT = "correct"


class Authentication(StrEnum):
    BASIC = "Basic"
    NTLM = "NTLM"


# --- scalar types ---------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+)([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> timedelta:
    """`48h`, `30m`, `2d`, `1h30m` -> timedelta; anything else is a clear error."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str) or not value or _DURATION.sub("", value) != "":
        raise ValueError(f"{shown(value)} is not a duration such as 30m, 48h or 2d")
    return timedelta(seconds=sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION.findall(value)))


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit in ("w", "d", "h", "m"):
        size = _DURATION_UNITS[unit]
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^(\d+[smhdw])+$", "examples": ["48h", "30m", "2d"]}),
]

# The last label of a name: letters, or the A-label of an IDN top-level domain such as xn--p1ai (.рф).
_TLD = r"([A-Za-z]{2,63}|[Xx][Nn]--[A-Za-z0-9-]{1,59})"

# A dot-atom address: no quoted local parts, no spaces or PowerShell metacharacters such as `;`.
# The apostrophe stays allowed: o'brien@contoso.com is a real, valid mailbox address. The local part
# is ASCII; the domain may be written in Unicode and is checked once converted to its A-labels.
_ADDRESS = re.compile(
    r"^(?=.{3,254}$)(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    rf"@([A-Za-z0-9]([A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+{_TLD}$"
)


# RFC 5322 allows these in a local part, but a real mailbox hardly has them and each is hostile somewhere an
# address goes: a leading `=`, `+`, `-` or `@` makes a spreadsheet read the CSV cell as a formula (CSV
# injection), and `$`, the backtick and `|` are PowerShell's expansion, escape and pipe characters.
_FORMULA_START = ("=", "+", "-", "@")
_POWERSHELL = ("$", "`", "|")


def smtp_address(value: str) -> str:
    """`value` with its domain as A-labels (IDNA 2008); raises ValueError unless a valid SMTP address."""
    if value.startswith(_FORMULA_START):
        raise ValueError(
            f"{shown(value)} is refused: an address starting with {value[0]!r} is read as a formula "
            "by spreadsheet programs (CSV injection)"
        )
    local, at, domain = value.rpartition("@")
    foreign = next((c for c in local if not c.isascii()), None)
    if foreign is not None:
        raise ValueError(
            f"{shown(value)} is not a valid SMTP address: its local part holds {character(foreign)}; "
            "only ASCII is accepted there"
        )
    if any(c in local for c in _POWERSHELL):
        raise ValueError(
            f"{shown(value)} is refused: $, ` and | are PowerShell's expansion, escape and pipe characters"
        )
    try:
        converted = f"{local}@{idn.to_ascii(domain)}" if at else value
    except ValueError as error:
        raise ValueError(f"{shown(value)} is not a valid SMTP address: {error}") from error
    if not _ADDRESS.match(converted):
        raise ValueError(f"{shown(value)} is not a valid SMTP address")
    return converted


Address = Annotated[
    str,
    AfterValidator(smtp_address),
    WithJsonSchema({"type": "string", "format": "idn-email", "maxLength": 254}),
]

_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$)([A-Za-z0-9]([A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+{_TLD}\.?$")
# The same for editors reading the JSON Schema, where a name may still be written in Unicode
# (`\u00a1-\uffff`: any letter beyond ASCII; the loader does the real IDNA check).
_LETTER = r"A-Za-z\u00a1-\uffff"
_HOSTNAME_SCHEMA = (
    rf"^(?=.{{1,253}}$)([{_LETTER}0-9]([{_LETTER}0-9-]{{0,61}}[{_LETTER}0-9])?\.)+"
    rf"([{_LETTER}]{{2,63}}|[Xx][Nn]--[A-Za-z0-9-]{{1,59}})\.?$"
)


def hostname(value: str) -> str:
    """`value` with its labels as A-labels (IDNA 2008); raises ValueError unless a fully qualified name."""
    converted = idn.to_ascii(value)
    if not _HOSTNAME.match(converted):
        raise ValueError(f"{shown(value)} is not a fully qualified host name")
    return converted


Hostname = Annotated[
    str,
    AfterValidator(hostname),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _HOSTNAME_SCHEMA,
            "description": "a fully qualified host name; Unicode labels become A-labels (IDNA 2008)",
        }
    ),
]

_BATCH_NAME = re.compile(rf"^[A-Za-z0-9-]{{1,{MAX_BATCH_NAME}}}$")


_NOT_IN_BATCH_NAME = re.compile(r"[^A-Za-z0-9-]")


def check_batch_name(value: str) -> str:
    if len(value) > MAX_BATCH_NAME:
        raise ValueError(f"batch name {shown(value)} is longer than {MAX_BATCH_NAME} characters")
    if not _BATCH_NAME.match(value):
        bad = _NOT_IN_BATCH_NAME.search(value)
        # A look-alike (Cyrillic 'а', a full-width 'Ｐ') or an invisible character is named by its code point.
        which = f", not {character(bad.group())}" if bad is not None and not bad.group().isascii() else ""
        raise ValueError(f"batch name {shown(value)} may hold only letters, digits and '-'{which}")
    return value


BatchName = Annotated[
    str,
    AfterValidator(check_batch_name),
    WithJsonSchema({"type": "string", "pattern": _BATCH_NAME.pattern, "maxLength": MAX_BATCH_NAME}),
]

SECRET_REF_PATTERN = r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:[^\s]+)$"
_SECRET_REF = re.compile(SECRET_REF_PATTERN)


def check_secret_ref(value: str) -> str:
    if not _SECRET_REF.match(value):
        # The value is not echoed: it may be the very secret that was meant to stay out of git.
        raise ValueError("not a reference: write env:NAME or file:PATH; secrets never belong in git")
    return value


SecretRef = Annotated[
    str,
    AfterValidator(check_secret_ref),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": SECRET_REF_PATTERN,
            "description": "env:NAME or file:PATH; never the secret",
        }
    ),
]


# --- documents ------------------------------------------------------------------------------


class Model(BaseModel):
    """YAML-facing model: camelCase keys, unknown fields rejected, immutable."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True, use_enum_values=False
    )


class Metadata(Model):
    name: str = Field(min_length=1, max_length=253)


class BatchMetadata(Model):
    name: BatchName = Field(description="the migration batch name: at most 64 letters, digits and '-'")


class ZoneMetadata(Model):
    name: Hostname = Field(
        description="the zone, e.g. contoso.com or пример.рф (loaded as lower-case A-labels, no final dot)"
    )


class Endpoint(Model):
    """The Outlook Anywhere migration endpoint (New-MigrationEndpoint -ExchangeOutlookAnywhere)."""

    name: BatchName
    autodiscover: bool = False
    exchange_server: Hostname | None = None
    rpc_proxy_server: Hostname | None = None
    email_address: Address
    authentication: Authentication = Authentication.BASIC
    # The cmdlet reference says the default is 100, the migration articles say 20 (exchange-facts §1);
    # we always send the value so the default never matters.
    max_concurrent_migrations: int = Field(default=20, ge=1, le=100)
    credentials_ref: SecretRef


class DriftPolicy(Model):
    exchange: DriftAction = DriftAction.WARN
    dns: DriftAction = DriftAction.CORRECT


class Policy(Model):
    low_ttl: int = Field(default=300, ge=MIN_TTL, le=MAX_LOW_TTL)
    ttl_lead_time: Duration = timedelta(hours=48)
    remove_after_cutover: Duration = timedelta(hours=72)
    rollback_window: Duration = Field(
        default=timedelta(hours=24),
        description="after the cutover swap the TTL stays low this long, then the desired TTL follows",
    )
    retry_failed: int = Field(default=3, ge=0, le=20)
    drift: DriftPolicy = DriftPolicy()


class MigrationSpec(Model):
    endpoint: Endpoint
    notification_emails: list[Address] = []
    target_delivery_domain: Hostname | None = None
    policy: Policy = Policy()


class MigrationDocument(Model):
    api_version: Literal["stagectl/v1"]
    kind: Literal["Migration"]
    metadata: Metadata
    spec: MigrationSpec


class BatchSpec(Model):
    state: BatchState
    members: list[Address] | None = None
    members_csv: str | None = Field(
        default=None, description="CSV with an EmailAddress column, relative to this file"
    )
    start_after: AwareDatetime | None = None
    complete_after: AwareDatetime | None = None
    retry: Annotated[str, Field(min_length=1, max_length=200)] | int | None = Field(
        default=None,
        description="change it to retry the failed users whose error needs a fix first, once the fix "
        "is made (any new value: a date, a ticket, a number); contract §4, fix-first",
    )
    force: bool = Field(
        default=False,
        description="create or start the batch although its preflight fails, and let the cutover count it "
        "complete although its post-flight fails; the plan names what is forced (contract §4)",
    )


class BatchDocument(Model):
    api_version: Literal["stagectl/v1"]
    kind: Literal["Batch"]
    metadata: BatchMetadata
    spec: BatchSpec


class RecordSpec(Model):
    name: str = Field(min_length=1, description='"@" for the zone apex, or a name relative to the zone')
    type: RecordType
    ttl: int = Field(ge=MIN_TTL, le=MAX_TTL)
    values: list[str] = []
    spf: str | None = Field(
        default=None, description="the one v=spf1 string of a TXT RRset; other TXT values are kept"
    )
    cutover: bool = False


class DnsZoneSpec(Model):
    records: list[RecordSpec]


class DnsZoneDocument(Model):
    api_version: Literal["stagectl/v1"]
    kind: Literal["DnsZone"]
    metadata: ZoneMetadata
    spec: DnsZoneSpec


DOCUMENT_KINDS: dict[str, type[Model]] = {
    "Migration": MigrationDocument,
    "Batch": BatchDocument,
    "DnsZone": DnsZoneDocument,
}


# --- the resolved desired state the planner reads ------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """A batch member: identity is the lower-cased address, output keeps the spelling of the repo."""

    address: str

    @property
    def key(self) -> str:
        return self.address.lower()


@dataclass(frozen=True, slots=True)
class Source:
    """Where an object was declared, for messages: `desired/batches/b1.yaml:3:1`."""

    path: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}" if self.line else self.path


@dataclass(frozen=True, slots=True)
class Batch:
    name: str
    state: BatchState
    members: tuple[Member, ...]
    start_after: datetime | None = None
    complete_after: datetime | None = None
    source: Source = Source("")
    retry: str | None = None  # spec.retry: a new value retries failures that needed a fix (contract §4)
    force: bool = False  # spec.force: past a failed preflight or post-flight (contract §4)
    # The member list in CSV order, digested once when the batch is made: what `memory.finished` holds
    # (contract §3.1); a reordered CSV reads the batch once more, no harm.
    members_digest: str = field(init=False, repr=False, compare=False)
    member_keys: frozenset[str] = field(init=False, repr=False, compare=False)  # lower-cased addresses

    def __post_init__(self) -> None:
        text = "\n".join([member.address for member in self.members]).lower()
        object.__setattr__(self, "members_digest", hashlib.sha256(text.encode()).hexdigest()[:24])
        object.__setattr__(self, "member_keys", frozenset(text.split("\n")) if self.members else frozenset())

    @property
    def key(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Record:
    """A managed RRset: identity (zone, name, type); `name` is relative, "@" for the apex."""

    zone: str
    name: str
    type: RecordType
    ttl: int
    values: tuple[str, ...] = ()
    spf: str | None = None
    cutover: bool = False
    source: Source = Source("")

    @property
    def key(self) -> str:
        return f"{self.zone}/{self.name}/{self.type.value}"


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    records: tuple[Record, ...]
    source: Source = Source("")


@dataclass(frozen=True, slots=True)
class DesiredState:
    """Everything the repository asks for at one revision, resolved (CSV members read, names checked)."""

    migration: MigrationSpec
    name: str
    batches: tuple[Batch, ...]
    zones: tuple[Zone, ...]
    revision: str = ""
    digest: str = ""  # sha256 of the files read, so a plan names exactly what it was made from
    files: tuple[str, ...] = field(default=())

    @property
    def policy(self) -> Policy:
        return self.migration.policy

    @property
    def records(self) -> tuple[Record, ...]:
        return tuple(record for zone in self.zones for record in zone.records)
