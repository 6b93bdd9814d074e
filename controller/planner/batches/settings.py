"""A batch's settings: what New-MigrationBatch sets, one Set-MigrationBatch for those that differ. Pure."""

from __future__ import annotations

from controller.desired.models import Batch, DesiredState
from controller.model.actions import ParameterValue
from controller.model.snapshot import ObservedBatch
from controller.planner.batches.context import Context, batch_object
from controller.planner.draft import Draft


def creation_settings(batch: Batch, desired: DesiredState) -> list[tuple[str, ParameterValue]]:
    settings: list[tuple[str, ParameterValue]] = []
    if desired.migration.notification_emails:
        settings.append(("NotificationEmails", tuple(desired.migration.notification_emails)))
    if batch.start_after is not None:
        settings.append(("StartAfter", batch.start_after))
    if batch.complete_after is not None:
        settings.append(("CompleteAfter", batch.complete_after))
    return settings


def plan_settings(draft: Draft, batch: Batch, found: ObservedBatch, context: Context) -> None:
    """One Set-MigrationBatch with only the settings that differ from what Exchange shows."""
    changes: list[tuple[str, ParameterValue]] = []
    emails = context.desired.migration.notification_emails
    if found.NotificationEmails is not None and {e.lower() for e in emails} != {
        e.lower() for e in found.NotificationEmails
    }:
        changes.append(("NotificationEmails", tuple(emails)))
    if batch.start_after is not None and found.StartAfterUTC != batch.start_after:
        changes.append(("StartAfter", batch.start_after))
    if batch.complete_after is not None and found.CompleteAfterUTC != batch.complete_after:
        changes.append(("CompleteAfter", batch.complete_after))
    draft.correct_settings(
        "Set-MigrationBatch", identity=batch.name, obj=batch_object(batch), changes=changes
    )
