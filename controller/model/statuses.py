"""Exchange's migration status values (exchange-facts §3) and how the planner groups them."""

from __future__ import annotations

from enum import StrEnum


class BatchStatus(StrEnum):
    CREATED = "Created"
    STARTING = "Starting"
    SYNCING = "Syncing"
    INCREMENTAL_SYNCING = "IncrementalSyncing"
    SYNCED = "Synced"
    SYNCED_WITH_ERRORS = "SyncedWithErrors"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    COMPLETING = "Completing"
    COMPLETED = "Completed"
    COMPLETED_WITH_ERRORS = "CompletedWithErrors"
    FAILED = "Failed"
    CORRUPTED = "Corrupted"
    REMOVING = "Removing"
    WAITING = "Waiting"

    @classmethod
    def parse(cls, text: str) -> BatchStatus | None:
        """The docs also spell it "SyncedwithErrors": match case-insensitively; None when unknown."""
        return _BY_LOWER.get(text.lower())


_BY_LOWER = {status.value.lower(): status for status in BatchStatus}

MOVING = frozenset({BatchStatus.STARTING, BatchStatus.SYNCING, BatchStatus.INCREMENTAL_SYNCING})
"""Mailboxes are being copied: Stop-MigrationBatch works, -AddUsers is refused."""

IN_FLIGHT = frozenset(
    {BatchStatus.STARTING, BatchStatus.STOPPING, BatchStatus.COMPLETING, BatchStatus.WAITING}
)
"""Exchange is carrying out a transition: the next step, and -AddUsers, wait until it settles."""

SYNCED = frozenset({BatchStatus.SYNCED, BatchStatus.SYNCED_WITH_ERRORS})
"""Complete-MigrationBatch is accepted only from these."""

COMPLETED = frozenset({BatchStatus.COMPLETED, BatchStatus.COMPLETED_WITH_ERRORS})

RETRYABLE = frozenset({BatchStatus.FAILED, BatchStatus.SYNCED_WITH_ERRORS, BatchStatus.COMPLETED_WITH_ERRORS})
"""Start-MigrationBatch retries the failed users of these (exchange-facts §2)."""

FAILED_USER_STATUSES = frozenset({"failed", "incrementalfailed", "completionfailed", "corrupted"})

# The error a member gets when no mail user exists for it (exchange-facts §9 row 1.1): retrying
# cannot help until directory sync creates the mail user.
RECIPIENT_NOT_FOUND = "MigrationRecipientNotFoundException"

ARRIVED_USER_STATUSES = frozenset(
    {"synced", "incrementalsynced", "completionsynced", "completed", "completedwithwarnings"}
)
"""A member whose migration user shows one of these has its mailbox in Exchange Online (exchange-facts §3):
the batches-completed gate counts it as arrived, as it does an address that has a mailbox."""
