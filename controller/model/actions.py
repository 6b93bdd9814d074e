"""The plan's vocabulary: small frozen actions (an Exchange cmdlet call, a DNS RRset change) and the plan.

Actions carry data, never PowerShell text: a backend sends `cmdlet` and `parameters` as a cmdlet with
named parameters. Secrets appear only as references (`CredentialRef`), resolved at apply time; a batch
CSV is carried as its rows (`CsvRows`) and rendered as a row count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Literal

from controller.model.snapshot import Memory, at

JsonObject = dict[str, object]
"""Plain JSON-ready data, as actions render and drift compares. Named at module level because inside
the classes below the field `object` shadows the builtin."""


@dataclass(frozen=True, slots=True)
class CsvRows:
    """`-CSVData`: the member addresses of a batch. Bytes are built only when the cmdlet is sent."""

    addresses: tuple[str, ...]

    def to_bytes(self) -> bytes:
        return ("EmailAddress\r\n" + "".join(f"{address}\r\n" for address in self.addresses)).encode("utf-8")

    def __str__(self) -> str:
        return f"<{len(self.addresses)} rows>"


@dataclass(frozen=True, slots=True)
class CredentialRef:
    """`-Credentials`: a reference such as `env:ONPREM_MIGRATION_CREDENTIALS`, resolved at apply time."""

    ref: str

    def __str__(self) -> str:
        return f"<credentials from {self.ref}>"


ParameterValue = str | int | bool | datetime | tuple[str, ...] | CsvRows | CredentialRef
RenderedValue = str | int | bool | list[str]


def render_value(value: ParameterValue) -> RenderedValue:
    """A parameter as plain JSON data, with secrets and CSV bodies replaced by their description."""
    if isinstance(value, CsvRows | CredentialRef):
        return str(value)
    if isinstance(value, datetime):
        return at(value)
    if isinstance(value, tuple):
        return list(value)
    return value


@dataclass(frozen=True, slots=True)
class ExchangeAction:
    """One cmdlet call. A switch such as `-AutoStart` is a parameter whose value is True."""

    system: ClassVar[str] = "exchange"
    cmdlet: str
    parameters: tuple[tuple[str, ParameterValue], ...]
    object: str  # "endpoint/<name>", "batch/<name>", "user/<address>"
    reason: str

    @property
    def params(self) -> Mapping[str, ParameterValue]:
        return dict(self.parameters)

    def as_data(self) -> JsonObject:
        return {
            "system": self.system,
            "cmdlet": self.cmdlet,
            "parameters": {name: render_value(value) for name, value in self.parameters},
            "object": self.object,
            "reason": self.reason,
        }


DnsChangeKind = Literal["create", "update", "ttl"]
"""Create an absent RRset, replace its values, or change only its TTL."""


@dataclass(frozen=True, slots=True)
class DnsAction:
    """Make one RRset hold exactly `values` at `ttl`; `previous` is what was observed (None: absent).

    A TXT RRset managed through `spf` carries its full new value list (the other TXT strings kept), so
    a backend can send the difference: delete what left, add what came, re-add all for a TTL change.
    """

    system: ClassVar[str] = "dns"
    zone: str
    name: str
    type: str
    ttl: int
    values: tuple[str, ...]
    previous_ttl: int | None
    previous_values: tuple[str, ...] | None
    object: str  # "dns/<zone>/<name>/<TYPE>"
    reason: str
    kind: DnsChangeKind = "update"

    def as_data(self) -> JsonObject:
        return {
            "system": self.system,
            "zone": self.zone,
            "name": self.name,
            "type": self.type,
            "ttl": self.ttl,
            "values": list(self.values),
            "previous": None
            if self.previous_values is None
            else {"ttl": self.previous_ttl, "values": list(self.previous_values)},
            "object": self.object,
            "reason": self.reason,
        }


Action = ExchangeAction | DnsAction


@dataclass(frozen=True, slots=True)
class Waiting:
    """Nothing to do yet: on time or on Exchange progress."""

    object: str
    reason: str


@dataclass(frozen=True, slots=True)
class Blocked:
    """Held back by a safety gate (contract §4) or an impossible transition."""

    object: str
    gate: str
    reason: str


@dataclass(frozen=True, slots=True)
class Drift:
    """Observed differs from what the controller had converged."""

    object: str
    desired: JsonObject  # the facets the controller had converged
    observed: JsonObject
    reason: str


@dataclass(frozen=True, slots=True)
class Note:
    """Something the operator should know that is neither an action nor a wait (readiness, unknowns)."""

    object: str
    reason: str


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed member, its error matched to the catalogue (exchange-facts §9), and what the plan does.

    `error` is the ErrorSummary on one line, cut to 300 characters (the renderings escape it);
    `catalogue` the row id ("1.4"), None when the catalogue does not know the error.
    """

    batch: str
    address: str
    status: str
    error: str
    catalogue: str | None
    fix: str
    retry: str  # the catalogue's retry rule as a short label
    handling: str  # what this plan does about it: retried, held until fixed, not retried

    def as_data(self) -> JsonObject:
        return {
            "batch": self.batch,
            "address": self.address,
            "status": self.status,
            "error": self.error,
            "catalogue": self.catalogue,
            "fix": self.fix,
            "retry": self.retry,
            "handling": self.handling,
        }


@dataclass(frozen=True, slots=True)
class Check:
    """One check of a batch's preflight or post-flight (contract §4).

    `result`: `pass`; `fail` (holds the batch); `unknown` (could not be checked: holds it too); `warn`
    (reported, never holds: licences); `skip` (does not apply now, `detail` says why). `members` names the
    members it concerns, each with why (`carol@contoso.com: missing`), at most 20.
    """

    name: str
    result: str
    detail: str
    members: tuple[str, ...] = ()

    def as_data(self) -> JsonObject:
        return {
            "check": self.name,
            "result": self.result,
            "detail": self.detail,
            "members": list(self.members),
        }


@dataclass(frozen=True, slots=True)
class Readiness:
    """A batch's preflight (before it is created or started) or post-flight (after it completed), with its
    checks in order and the verdict: `passed`, `held`, `forced` (held, but force lets it go) or `unknown`
    (something could not be read: held)."""

    batch: str
    phase: str  # "preflight" | "post-flight"
    verdict: str
    checks: tuple[Check, ...] = ()

    def as_data(self) -> JsonObject:
        return {
            "batch": self.batch,
            "phase": self.phase,
            "verdict": self.verdict,
            "checks": [check.as_data() for check in self.checks],
        }


@dataclass(frozen=True, slots=True)
class Plan:
    revision: str
    checksum: str
    actions: tuple[Action, ...] = ()
    waiting: tuple[Waiting, ...] = ()
    blocked: tuple[Blocked, ...] = ()
    drift: tuple[Drift, ...] = ()
    notes: tuple[Note, ...] = ()
    failures: tuple[Failure, ...] = ()  # failed members with the catalogue's fix (exchange-facts §9)
    readiness: tuple[Readiness, ...] = ()  # preflight and post-flight per batch (contract §4)
    memory: Memory = field(default_factory=Memory)  # what the runtime stores once the plan is applied

    @property
    def has_changes(self) -> bool:
        return bool(self.actions)
