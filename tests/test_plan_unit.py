"""What the table cases cannot say well: the plan checksum, and secrets and CSV bodies kept out of plans."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from controller.desired.models import DesiredState
from controller.model.actions import CredentialRef, CsvRows, ExchangeAction
from controller.model.snapshot import Snapshot
from controller.planner import checksum, plan, render
from tests import test_plan_cases as cases

NOW = datetime(2026, 11, 24, 10, tzinfo=UTC)
SECRET = "contoso\\migadmin:Hunter2-never-in-a-plan"


def _case(name: str) -> tuple[DesiredState, Snapshot]:
    desired, observed, _ = cases.load_case(name)
    return desired, observed


def _with_status(observed: Snapshot, status: str) -> Snapshot:
    batches = [b.model_copy(update={"Status": status}) for b in observed.exchange.batches or []]
    return observed.model_copy(update={"exchange": observed.exchange.model_copy(update={"batches": batches})})


def test_checksum_ignores_when_the_world_was_observed() -> None:
    desired, observed = _case("done-when-syncing-ttl-3600")
    later = observed.model_copy(update={"observedAt": observed.observedAt + timedelta(minutes=7)})
    assert plan.plan(desired, later, NOW).checksum == plan.plan(desired, observed, NOW).checksum


def test_checksum_changes_when_a_batch_status_changes_what_is_done() -> None:
    desired, observed = _case("completed-synced-complete")
    synced, syncing = (
        plan.plan(desired, observed, NOW),
        plan.plan(desired, _with_status(observed, "Syncing"), NOW),
    )
    assert [a.cmdlet for a in synced.actions if isinstance(a, ExchangeAction)] == ["Complete-MigrationBatch"]
    assert synced.checksum != syncing.checksum


def test_checksum_changes_with_the_revision() -> None:
    desired, observed = _case("done-when-syncing-ttl-3600")
    other_revision = dataclasses.replace(desired, revision="rev2")
    assert plan.plan(other_revision, observed, NOW).checksum != plan.plan(desired, observed, NOW).checksum


def test_a_moved_world_with_the_same_actions_is_the_same_plan() -> None:
    """Progress and memory that change no action leave the checksum: the reviewed actions still hold."""
    desired, observed = _case("done-when-syncing-ttl-3600")
    batches = [
        b.model_copy(update={"SyncedCount": b.SyncedCount + 1}) for b in observed.exchange.batches or []
    ]
    moved = observed.model_copy(
        update={
            "exchange": observed.exchange.model_copy(update={"batches": batches}),
            "memory": observed.memory.model_copy(update={"cutoverAt": NOW - timedelta(days=1)}),
        }
    )
    before, after = plan.plan(desired, observed, NOW), plan.plan(desired, moved, NOW)
    assert [w.reason for w in before.waiting] != [w.reason for w in after.waiting], "the wait moved"
    assert after.actions == before.actions
    assert after.checksum == before.checksum


def test_a_time_gate_that_opens_changes_the_checksum() -> None:
    """The snapshot is the same; the TTL lead passes between the two plans and the cutover appears."""
    desired, observed = _case("mx-cutover-after-lead")
    waiting, open_ = plan.plan(desired, observed, NOW - timedelta(hours=3)), plan.plan(desired, observed, NOW)
    assert not waiting.actions and [a.object for a in open_.actions] == ["dns/contoso.com/@/MX"]
    assert waiting.checksum != open_.checksum


def test_checksum_covers_every_csv_row_not_only_their_count() -> None:
    desired, _ = _case("converged-empty-plan")

    def start(*addresses: str) -> ExchangeAction:
        rows = CsvRows(addresses)
        return ExchangeAction("New-MigrationBatch", (("Name", "B"), ("CSVData", rows)), "batch/B", "new")

    assert render.describe(start("a@contoso.com")) == render.describe(start("b@contoso.com"))
    assert checksum.of(desired, [start("a@contoso.com")]) != checksum.of(desired, [start("b@contoso.com")])


def test_checksum_is_the_documented_sha256_form() -> None:
    desired, observed = _case("converged-empty-plan")
    digest = plan.plan(desired, observed, NOW).checksum
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64


@pytest.mark.parametrize("name", ["endpoint-absent-new", "ordering-endpoint-batches-dns"])
def test_credentials_appear_only_as_their_reference(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Even with the secret in the environment, planning must not resolve it: that happens at apply time.
    monkeypatch.setenv("ONPREM_MIGRATION_CREDENTIALS", SECRET)
    desired, observed = _case(name)
    result = plan.plan(desired, observed, NOW)
    creates = [
        a for a in result.actions if isinstance(a, ExchangeAction) and a.cmdlet == "New-MigrationEndpoint"
    ]
    assert len(creates) == 1
    credentials = creates[0].params["Credentials"]
    assert credentials == CredentialRef("env:ONPREM_MIGRATION_CREDENTIALS")
    for shown in (
        repr(result),
        render.to_json(result),
        render.to_text(result),
        render.to_markdown(result),
        json.dumps([a.as_data() for a in result.actions]),
    ):
        assert "Hunter2" not in shown
        assert SECRET not in shown


def test_batch_csv_is_shown_as_a_row_count_but_carries_every_row() -> None:
    desired, observed = _case("started-absent-new-autostart")
    (create,) = plan.plan(desired, observed, NOW).actions
    assert isinstance(create, ExchangeAction)
    rows = create.params["CSVData"]
    assert isinstance(rows, CsvRows)
    assert rows.to_bytes() == b"EmailAddress\r\nalice@contoso.com\r\nbob@contoso.com\r\n"
    assert create.as_data()["parameters"]["CSVData"] == "<2 rows>"  # type: ignore[index]
    assert "alice@contoso.com" not in json.dumps(create.as_data())


def test_planning_leaves_the_snapshot_and_its_memory_untouched() -> None:
    desired, observed = _case("started-failed-retry")
    before = observed.model_dump(mode="json")
    result = plan.plan(desired, observed, NOW)
    assert observed.model_dump(mode="json") == before
    assert result.memory.retries["batch1-it"].count == 1
    assert observed.memory.retries == {}


def test_applying_the_remembered_retry_counts_it_again() -> None:
    # The runtime stores plan.memory; the next pass with the batch still Failed counts the second retry.
    desired, observed = _case("started-failed-retry")
    first = plan.plan(desired, observed, NOW)
    second = plan.plan(desired, observed.model_copy(update={"memory": first.memory}), NOW)
    assert second.memory.retries["batch1-it"].count == 2
    assert [a.as_data()["cmdlet"] for a in second.actions] == ["Start-MigrationBatch"]


def test_ttl_lead_passes_exactly_at_the_lead_time() -> None:
    desired, observed = _case("mx-low-ttl-within-lead")
    since = observed.memory.lowTtlSince["contoso.com/@/MX"]
    just_before = plan.plan(desired, observed, since + timedelta(hours=48) - timedelta(seconds=1))
    at_lead = plan.plan(desired, observed, since + timedelta(hours=48))
    assert [b.gate for b in just_before.blocked] == ["ttl-lead"] and not just_before.actions
    assert not at_lead.blocked
    assert [a.as_data()["values"] for a in at_lead.actions] == [
        ["0 contoso-com.mail.protection.outlook.com."]
    ]


def test_remove_after_cutover_passes_exactly_at_the_delay() -> None:
    desired, observed = _case("removed-within-delay-after-cutover-blocked")
    cutover = observed.memory.cutoverAt
    assert cutover is not None
    assert plan.plan(desired, observed, cutover + timedelta(hours=72) - timedelta(seconds=1)).blocked
    removal = plan.plan(desired, observed, cutover + timedelta(hours=72))
    assert [a.as_data()["cmdlet"] for a in removal.actions] == ["Remove-MigrationBatch"]
