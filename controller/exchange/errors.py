"""The Exchange layer's exceptions: transient (retry with backoff) apart from permanent (report, stop)."""

from __future__ import annotations

import re

MAX_REMOTE_TEXT = 500

# Exception types and FailureCategory values that mean "the object does not exist" (exchange-facts §9.4).
NOT_FOUND_TYPES = frozenset(
    {"ManagementObjectNotFoundException", "MigrationBatchNotFoundException", "ObjectNotFoundException"}
)


def truncate(text: str, limit: int = MAX_REMOTE_TEXT) -> str:
    """Remote text goes into logs and plans: bound it so it can neither flood nor carry a whole dump."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ExchangeError(Exception):
    """Base of every Exchange failure."""


class TransientError(ExchangeError):
    """Worth retrying after a delay: throttling, a busy server, a dropped connection."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(truncate(message))
        self.delay = delay


class ThrottledError(TransientError):
    """Exchange asked us to slow down ("Micro delay applied", server busy)."""


class UnavailableError(TransientError):
    """The gateway could not be reached or the session broke."""


class IndeterminateError(UnavailableError):
    """The call reached the gateway and may have run, but its answer was lost (the connection dropped, the
    reply came later than the read timeout, the output arrived in part). A read is simply read again; a
    write is never sent again blindly: whether it took effect is for the next observation to decide."""


class PermanentError(ExchangeError):
    """Retrying will not help without a change by a person."""


class AuthenticationError(PermanentError):
    """The gateway refused our credentials."""


class CmdletError(PermanentError):
    """A cmdlet reported an error record (terminating or not)."""

    def __init__(
        self,
        cmdlet: str,
        exception_type: str,
        message: str,
        *,
        category: str = "",
        error_id: str = "",
        details: tuple[str, ...] = (),
    ) -> None:
        self.cmdlet = cmdlet
        self.exception_type = exception_type
        self.category = category  # the FailureCategory, e.g. "Cmdlet-ManagementObjectNotFoundException"
        self.remote_message = truncate(message)
        self.error_id = truncate(error_id)  # the record's FullyQualifiedErrorId, as received
        # The record's other texts (ErrorDetails, the exception's other string properties and its inner
        # exceptions): matched for resource keys (`names`), never shown.
        self.details = tuple(truncate(text) for text in details)
        super().__init__(f"{cmdlet} failed: {exception_type}: {self.remote_message}")

    def names(self, key: str) -> bool:
        """Whether an Exchange resource key (exchange-facts §9, a C item such as
        `CompleteMigrationBatchNotSupported`) appears, as a whole word, anywhere the record carries text:
        the message, the FullyQualifiedErrorId (its FailureCategory included) or the other details."""
        word = re.compile(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])")
        return any(word.search(text) for text in (self.remote_message, self.error_id, *self.details))

    @property
    def not_found(self) -> bool:
        category_type = self.category.removeprefix("Cmdlet-")
        return self.exception_type in NOT_FOUND_TYPES or category_type in NOT_FOUND_TYPES
