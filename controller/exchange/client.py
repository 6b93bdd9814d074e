"""The Exchange client over a `runner.CmdletRunner`: bulk observation into the snapshot, actions applied
with their references resolved, transient failures retried with exponential backoff and full jitter."""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from controller import fence, secrets
from controller.exchange.errors import (
    AuthenticationError,
    CmdletError,
    ExchangeError,
    IndeterminateError,
    TransientError,
    truncate,
)
from controller.exchange.runner import CmdletRunner
from controller.model.actions import CredentialRef, CsvRows, ExchangeAction, ParameterValue
from controller.model.snapshot import (
    EndpointCheck,
    ExchangeObserved,
    ObservedBatch,
    ObservedEndpoint,
    ObservedRecipient,
    ObservedUser,
)
from controller.redact import redact_text

log = logging.getLogger(__name__)

UNLIMITED = "Unlimited"  # without it Get-MigrationBatch/-User/Get-Recipient stop at 1,000 objects
MAIL_USER_TYPES = ["MailUser", "UserMailbox"]
# Each read carries only what the planner uses (`| Select-Object -Property ...`, contract §3.1).
ENDPOINT_PROPERTIES = tuple(ObservedEndpoint.model_fields)
BATCH_PROPERTIES = tuple(ObservedBatch.model_fields)
USER_PROPERTIES = tuple(ObservedUser.model_fields)
# IsDirSynced and SKUAssigned are properties of Get-Recipient (the filter-properties reference; exchange-facts
# §6): the preflight's "synced from on-premises" and its licence warning come from the same read.
RECIPIENT_PROPERTIES = tuple(ObservedRecipient.model_fields)
# Test-MigrationServerAvailability's output (exchange-facts §9.0); ConnectionSettings is not used.
ENDPOINT_CHECK_PROPERTIES = ("Result", "Message", "ErrorDetail", "IsValid", "SupportsCutover")
# Recipients are read by address with an OPATH -Filter (exchange-facts §10), FILTER_CHUNK addresses a
# call; past FILTERED_MAX addresses one read of the whole directory costs fewer calls than the chunks.
FILTER_CHUNK = 100
FILTERED_MAX = 1000
REASON_LIMIT = 300  # why a read failed goes into plans and status: long enough to act on, never a dump
Model = TypeVar("Model", bound=BaseModel)


class ExchangeClient:
    """`observe()` and `apply(action)` over one runner; the seam the reconciler and the CLI use."""

    def __init__(
        self,
        runner: CmdletRunner,
        *,
        resolve_secret: Callable[[str], str] = secrets.resolve,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.runner = runner
        self._resolve_secret = resolve_secret
        self._sleep = sleep
        self.max_attempts = max(1, max_attempts)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._rng = rng or random.Random()
        self.unreadable: dict[str, str] = {}  # "exchange/batches" -> why this pass could not read it
        self.warnings: list[str] = []  # warnings Exchange wrote (e.g. "Micro delay applied")

    # --- observation proportional to unfinished work (contract §3.1): the runtime calls these in turn ---

    def read_endpoints(self) -> list[ObservedEndpoint] | None:
        self.unreadable = {}
        return self._read(
            ("endpoints",), "Get-MigrationEndpoint", {}, ObservedEndpoint, select=ENDPOINT_PROPERTIES
        )

    def read_batches(self) -> list[ObservedBatch] | None:
        return self._read(
            ("batches",),
            "Get-MigrationBatch",
            {"ResultSize": UNLIMITED},
            ObservedBatch,
            select=BATCH_PROPERTIES,
        )

    def read_users(
        self, batches: Sequence[ObservedBatch], *, whole: bool = False
    ) -> list[ObservedUser] | None:
        """The migration users of these batches, one read each (or, with `whole`, one read of every
        batch's users, `batches` being all of them); a batch whose users read disagree with its TotalCount
        (a short or interrupted read, or a batch changing under it) makes users unknown."""
        if whole:
            rows = self._read(
                ("users",),
                "Get-MigrationUser",
                {"ResultSize": UNLIMITED},
                ObservedUser,
                select=USER_PROPERTIES,
            )
            if rows is None:
                return None
            counts = Counter(user.BatchId.lower() for user in rows)
            return rows if self._complete(batches, counts, "Get-MigrationUser") else None
        users: list[ObservedUser] = []
        for batch in batches:
            rows = self._read(
                ("users",),
                "Get-MigrationUser",
                {"BatchId": batch.Identity, "ResultSize": UNLIMITED},
                ObservedUser,
                select=USER_PROPERTIES,
            )
            read = f"Get-MigrationUser -BatchId {batch.Identity}"
            if rows is None or not self._complete([batch], {batch.Identity.lower(): len(rows)}, read):
                return None
            users.extend(rows)
        return users

    def _complete(self, batches: Sequence[ObservedBatch], counts: Mapping[str, int], read: str) -> bool:
        """Each batch's users (`counts` by lower-cased name) as many as its TotalCount says; else why users
        are unknown is kept."""
        for batch in batches:
            found = counts.get(batch.Identity.lower(), 0)
            if found != batch.TotalCount:
                self._unreadable(
                    ("users",),
                    f"IncompleteRead: {read} returned {found} users of {batch.Identity} but the batch "
                    f"counts {batch.TotalCount}; read again next pass",
                )
                return False
        return True

    def read_recipients(self, addresses: Sequence[str]) -> Recipients | None:
        """Which of these addresses are mail users or mailboxes: by OPATH filter in chunks, or one read of
        the whole directory when there are many; no call when there are none."""
        if not addresses:
            return Recipients([], [], [])
        if len(addresses) > FILTERED_MAX:
            rows = self._read(
                ("mailUsers", "mailboxes"),
                "Get-Recipient",
                {"RecipientTypeDetails": MAIL_USER_TYPES, "ResultSize": UNLIMITED},
                None,
                select=RECIPIENT_PROPERTIES,
            )
            return None if rows is None else Recipients.of(rows, covered=None)
        found: list[dict[str, object]] = []
        for start in range(0, len(addresses), FILTER_CHUNK):
            rows = self._read(
                ("mailUsers", "mailboxes"),
                "Get-Recipient",
                {
                    # No -RecipientTypeDetails: the address filter bounds the rows, and a member who is
                    # some other type (a MailContact, a plain User) is then named as such, not "missing".
                    "Filter": address_filter(addresses[start : start + FILTER_CHUNK]),
                    "ResultSize": UNLIMITED,
                },
                None,
                select=RECIPIENT_PROPERTIES,
            )
            if rows is None:
                return None
            found.extend(rows)
        return Recipients.of(found, covered=[a.lower() for a in addresses])

    def read_endpoint_check(self, endpoint: str) -> EndpointCheck | None:
        """`Test-MigrationServerAvailability -Endpoint <name>` (the cmdlet reference's TestEndpoint set,
        Example 4: the settings stored in the endpoint, no credential sent): one call, in a pass where a
        batch is about to start. It does not throw on a failed connection (exchange-facts §9.0): the
        answer says Result Failed with Message and ErrorDetail. None (with why) when it could not run."""
        rows = self._read(
            ("endpointCheck",),
            "Test-MigrationServerAvailability",
            {"Endpoint": endpoint},
            None,
            select=ENDPOINT_CHECK_PROPERTIES,
        )
        if rows is None:
            return None
        if not rows:
            self._unreadable(
                ("endpointCheck",), f"Test-MigrationServerAvailability: no answer for {endpoint}"
            )
            return None
        row = {k: v for k, v in rows[0].items() if v is not None}
        try:
            return EndpointCheck.model_validate(
                {**row, "Endpoint": endpoint, "Result": str(row.get("Result", ""))}
            )
        except ValidationError as error:
            self._unreadable(
                ("endpointCheck",),
                f"ValidationError: Test-MigrationServerAvailability: {error.errors()[0]['msg']}",
            )
            return None

    def observe(self) -> ExchangeObserved:
        """Every object of every kind, whole objects, one bulk read each: the unscoped read, kept for the
        client's own tests; a pass reads through the scoped `read_*` methods. A kind that could not be
        read is None (unknown, never absent)."""
        self.unreadable = {}
        endpoints = self._read(("endpoints",), "Get-MigrationEndpoint", {}, ObservedEndpoint)
        batches = self._read(("batches",), "Get-MigrationBatch", {"ResultSize": UNLIMITED}, ObservedBatch)
        users = self._read(("users",), "Get-MigrationUser", {"ResultSize": UNLIMITED}, ObservedUser)
        rows = self._read(
            ("mailUsers", "mailboxes"),
            "Get-Recipient",
            {"RecipientTypeDetails": MAIL_USER_TYPES, "ResultSize": UNLIMITED},
            None,
        )
        recipients = None if rows is None else Recipients.of(rows, covered=None)
        return ExchangeObserved(
            endpoints=endpoints,
            batches=batches,
            users=users,
            mailUsers=None if recipients is None else recipients.mail_users,
            mailboxes=None if recipients is None else recipients.mailboxes,
            recipients=None if recipients is None else recipients.details,
        )

    def apply(self, action: ExchangeAction) -> list[dict[str, object]]:
        """Run the action's cmdlet; permanent errors (CmdletError, AuthenticationError) propagate, and so
        does an IndeterminateError: a write whose answer was lost is never sent again blindly."""
        parameters = {name: self._value(value) for name, value in action.parameters}
        # -Confirm:$false: a destructive cmdlet (Remove-*) pauses for a confirmation no one can give through
        # remoting, and on the others it only says "do not pause" (the Exchange cmdlet reference, -Confirm).
        parameters["Confirm"] = False
        return self.call(action.cmdlet, parameters, write=True)

    def call(
        self,
        cmdlet: str,
        parameters: Mapping[str, object],
        select: Sequence[str] = (),
        *,
        write: bool = False,
    ) -> list[dict[str, object]]:
        """One cmdlet, retried on TransientError up to `max_attempts` times with full-jitter backoff; a
        `write` is not retried after an IndeterminateError (it may have run: the next pass observes)."""
        for attempt in range(self.max_attempts):
            if write:  # every attempt: a retry after a backoff must still be ours to send
                fence.check()
            try:
                output = self.runner.run(cmdlet, parameters, select)
            except TransientError as error:
                if attempt + 1 >= self.max_attempts or (write and isinstance(error, IndeterminateError)):
                    raise
                delay = self._backoff(attempt, hint=error.delay)
                log.warning("%s: %s; retrying in %.1f s", cmdlet, error, delay)
                self._sleep(delay)
                continue
            warned = list(getattr(output, "warnings", []) or [])
            if warned:
                # "Micro delay applied" is by design: the call worked; slow down before the next one.
                self.warnings.extend(warned)
                self._sleep(self._backoff(0, hint=None))
            return list(output)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def close(self) -> None:
        self.runner.close()

    def _backoff(self, attempt: int, *, hint: float | None) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2**attempt)], at least the server's hint."""
        ceiling = min(self.max_delay, self.base_delay * (2**attempt))
        return max(self._rng.uniform(0, ceiling), min(hint or 0.0, self.max_delay))

    def _value(self, value: ParameterValue) -> Any:
        if isinstance(value, CsvRows):
            return value.to_bytes()
        if isinstance(value, CredentialRef):
            return secrets.credential(value.ref, resolve_secret=self._resolve_secret)
        if isinstance(value, tuple):
            return list(value)
        return value

    def _read(
        self,
        kinds: tuple[str, ...],
        cmdlet: str,
        parameters: dict[str, object],
        model: type[Model] | None,
        *,
        select: Sequence[str] = (),
    ) -> list[Any] | None:
        """The objects, or None (unknown) with why remembered under each snapshot kind it leaves unknown."""
        try:
            objects = self.call(cmdlet, parameters, select)
        except AuthenticationError:
            raise
        except CmdletError as error:
            if error.not_found:  # nothing of this kind exists
                return []
            self._unreadable(kinds, f"{type(error).__name__}: {error}")
            return None
        except ExchangeError as error:
            self._unreadable(kinds, f"{type(error).__name__}: {cmdlet}: {error}")
            return None
        if model is None:
            return objects
        try:
            # A selected property the object lacks comes back null: the model's default stands for it.
            return [
                model.model_validate({k: v for k, v in item.items() if v is not None}) for item in objects
            ]
        except ValidationError as error:
            self._unreadable(
                kinds, f"ValidationError: {cmdlet}: unexpected output: {error.errors()[0]['msg']}"
            )
            return None

    def _unreadable(self, kinds: tuple[str, ...], why: str) -> None:
        """Remote text is bounded and scrubbed: it reaches plans, status and logs."""
        reason = truncate(redact_text(why), REASON_LIMIT)
        for kind in kinds:
            self.unreadable[f"exchange/{kind}"] = reason


@dataclass(frozen=True, slots=True)
class Recipients:
    """What a recipient read found: mail users (or mailboxes), mailboxes, the addresses it covered (None:
    the whole directory was read) and every entry found with its type, IsDirSynced and SKUAssigned."""

    mail_users: list[str]
    mailboxes: list[str]
    covered: list[str] | None
    details: list[ObservedRecipient] = field(default_factory=list)

    @classmethod
    def of(cls, rows: list[dict[str, object]], *, covered: list[str] | None) -> Recipients:
        typed = [r for r in rows if r.get("RecipientTypeDetails") in (None, *MAIL_USER_TYPES)]
        mail_users = sorted({_address(r) for r in typed} - {""})
        mailboxes = sorted(
            {_address(r) for r in rows if r.get("RecipientTypeDetails") == "UserMailbox"} - {""}
        )
        details: dict[str, ObservedRecipient] = {}
        for row in rows:
            address = _address(row)
            if not address:
                continue
            values = {k: v for k, v in row.items() if v is not None and k in RECIPIENT_PROPERTIES}
            try:
                details[address] = ObservedRecipient.model_validate({**values, "PrimarySmtpAddress": address})
            except ValidationError:
                continue  # an odd value in an optional property: the entry stays a plain address
        return cls(mail_users, mailboxes, covered, [details[a] for a in sorted(details)])


def address_filter(addresses: Sequence[str]) -> str:
    """An OPATH filter matching these primary SMTP addresses (exchange-facts §10): a value of the -Filter
    parameter, never script text; a single quote in an address is doubled, as OPATH escapes it."""
    return " -or ".join(f"(PrimarySmtpAddress -eq '{a.replace(chr(39), chr(39) * 2)}')" for a in addresses)


def _address(recipient: Mapping[str, object]) -> str:
    return str(recipient.get("PrimarySmtpAddress", "")).lower()
