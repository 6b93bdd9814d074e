"""The Exchange client over a `runner.CmdletRunner`: bulk observation into the snapshot, actions applied
with their references resolved, transient failures retried with exponential backoff and full jitter."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from controller import secrets
from controller.exchange.errors import (
    AuthenticationError,
    CmdletError,
    ExchangeError,
    TransientError,
    truncate,
)
from controller.exchange.runner import CmdletRunner
from controller.model.actions import CredentialRef, CsvRows, ExchangeAction, ParameterValue
from controller.model.snapshot import ExchangeObserved, ObservedBatch, ObservedEndpoint, ObservedUser
from controller.redact import redact_text

log = logging.getLogger(__name__)

UNLIMITED = "Unlimited"  # without it Get-MigrationBatch/-User/Get-Recipient stop at 1,000 objects
MAIL_USER_TYPES = ["MailUser", "UserMailbox"]
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
        self.unreadable: dict[str, str] = {}  # "exchange/batches" -> why the last observe() could not read it
        self.warnings: list[str] = []  # warnings Exchange wrote (e.g. "Micro delay applied")

    def observe(self) -> ExchangeObserved:
        """One bulk read per kind; a kind that could not be read is None (unknown, never absent)."""
        self.unreadable = {}
        endpoints = self._read(("endpoints",), "Get-MigrationEndpoint", {}, ObservedEndpoint)
        batches = self._read(("batches",), "Get-MigrationBatch", {"ResultSize": UNLIMITED}, ObservedBatch)
        users = self._read(("users",), "Get-MigrationUser", {"ResultSize": UNLIMITED}, ObservedUser)
        recipients = self._read(
            ("mailUsers", "mailboxes"),
            "Get-Recipient",
            {"RecipientTypeDetails": MAIL_USER_TYPES, "ResultSize": UNLIMITED},
            None,
        )
        mail_users = mailboxes = None
        if recipients is not None:
            mail_users = sorted({_address(r) for r in recipients} - {""})
            mailboxes = sorted(
                {_address(r) for r in recipients if r.get("RecipientTypeDetails") == "UserMailbox"} - {""}
            )
        return ExchangeObserved(
            endpoints=endpoints, batches=batches, users=users, mailUsers=mail_users, mailboxes=mailboxes
        )

    def apply(self, action: ExchangeAction) -> list[dict[str, object]]:
        """Run the action's cmdlet; permanent errors (CmdletError, AuthenticationError) propagate."""
        parameters = {name: self._value(value) for name, value in action.parameters}
        return self.call(action.cmdlet, parameters)

    def call(self, cmdlet: str, parameters: Mapping[str, object]) -> list[dict[str, object]]:
        """One cmdlet, retried on TransientError up to `max_attempts` times with full-jitter backoff."""
        for attempt in range(self.max_attempts):
            try:
                output = self.runner.run(cmdlet, parameters)
            except TransientError as error:
                if attempt + 1 >= self.max_attempts:
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
        self, kinds: tuple[str, ...], cmdlet: str, parameters: dict[str, object], model: type[Model] | None
    ) -> list[Any] | None:
        """The objects, or None (unknown) with why remembered under each snapshot kind it leaves unknown."""
        try:
            objects = self.call(cmdlet, parameters)
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
            return [model.model_validate(item) for item in objects]
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


def _address(recipient: Mapping[str, object]) -> str:
    return str(recipient.get("PrimarySmtpAddress", "")).lower()
