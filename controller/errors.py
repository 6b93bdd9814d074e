"""Errors the CLI turns into one sentence and an exit code (contract §6)."""

from __future__ import annotations


class StagectlError(Exception):
    """A failure the operator can act on; its message is one sentence naming the object."""

    exit_code = 1


class InvalidInput(StagectlError):
    """Bad desired state, configuration or arguments (exit 1). `problems` lists every one found."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class Refused(StagectlError):
    """A safety check refused to act, e.g. a stale plan checksum (exit 1)."""


class ExternalFailure(StagectlError):
    """Exchange, DNS or git failed (exit 3)."""

    exit_code = 3
