"""Failed members with their fixes (issue 15 item 5): the retry rule of the error catalogue across passes
(fix first, then spec.retry; never a loop on a permanent error), and the failures in every rendering."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

from markdown_it import MarkdownIt

from controller.desired.models import Batch, BatchState, DesiredState, Member
from controller.model.actions import ExchangeAction, Failure, Plan
from controller.model.snapshot import (
    ExchangeObserved,
    Memory,
    ObservedBatch,
    ObservedEndpoint,
    ObservedUser,
    Snapshot,
)
from controller.planner import plan, render
from controller.runtime import status
from tests.test_plan_cases import load_case

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
SIGN_IN = (
    "Error: MigrationPermanentException: Microsoft Exchange couldn't sign in to the user's on-premises "
    "account."
)
TRANSIENT = "Error: MigrationTransientException: The source server did not respond."


def _desired(
    retry: str | None = None, revision: str = "rev1", state: BatchState = BatchState.STARTED
) -> DesiredState:
    desired, _, _ = load_case("started-failed-fix-first-held")
    batch = Batch(
        name="Batch1-IT",
        state=state,
        members=(Member("alice@contoso.com"), Member("bob@contoso.com")),
        retry=retry,
    )
    return replace(desired, batches=(batch,), revision=revision)


def _observed(memory: Memory, *, bob: str, error: str = SIGN_IN) -> Snapshot:
    failed = int(bob == "Failed")
    status = "SyncedWithErrors" if failed else ("Syncing" if bob in ("Queued", "Syncing") else "Synced")
    return Snapshot(
        observedAt=NOW,
        exchange=ExchangeObserved(
            endpoints=[
                ObservedEndpoint.model_validate(
                    {
                        "Identity": "StagedEndpoint",
                        "EndpointType": "ExchangeOutlookAnywhere",
                        "ExchangeServer": "mail.contoso.com",
                        "RpcProxyServer": "mail.contoso.com",
                        "Authentication": "Basic",
                        "MaxConcurrentMigrations": 20,
                    }
                )
            ],
            batches=[
                ObservedBatch.model_validate(
                    {
                        "Identity": "Batch1-IT",
                        "Status": status,
                        "TotalCount": 2,
                        "SyncedCount": 2 - failed - int(status == "Syncing"),
                        "FailedCount": failed,
                        "NotificationEmails": ["migration-team@contoso.com"],
                    }
                )
            ],
            users=[
                ObservedUser(Identity="alice@contoso.com", BatchId="Batch1-IT", Status="Synced"),
                ObservedUser(
                    Identity="bob@contoso.com",
                    BatchId="Batch1-IT",
                    Status=bob,
                    ErrorSummary=error if bob == "Failed" else "",
                ),
            ],
            mailUsers=["alice@contoso.com", "bob@contoso.com"],
        ),
        memory=memory,
    )


def _cmdlets(result: Plan) -> list[str]:
    return [a.cmdlet for a in result.actions if isinstance(a, ExchangeAction)]


def test_a_fix_first_failure_is_held_until_spec_retry_changes_then_retried_once_per_value() -> None:
    memory = Memory()
    # 1. bob fails on permissions (row 1.4): held, not retried, however many passes and revisions.
    for revision in ("rev1", "rev1", "rev2"):
        result = plan.plan(_desired(revision=revision), _observed(memory, bob="Failed"), NOW)
        assert _cmdlets(result) == [] and [b.gate for b in result.blocked] == ["fix-first"]
        memory = result.memory
    assert memory.retries["batch1-it"].fixFirst == ""
    (failure,) = result.failures
    assert (failure.catalogue, failure.retry) == ("1.4", "fix first, then retry")
    assert "Receive-As" in failure.fix and "spec.retry" in failure.handling
    # 2. The administrator grants the rights and writes retry: granted-1: one retry.
    result = plan.plan(_desired("granted-1", "rev3"), _observed(memory, bob="Failed"), NOW)
    assert _cmdlets(result) == ["Start-MigrationBatch"]
    assert result.failures[0].handling == "Start-MigrationBatch retries it in this plan"
    memory = result.memory
    # 3. The answer still shows the old failure (or it failed again): held, not a second retry.
    result = plan.plan(_desired("granted-1", "rev3"), _observed(memory, bob="Failed"), NOW)
    assert _cmdlets(result) == [] and [b.gate for b in result.blocked] == ["fix-first"]
    # 4. Another value retries again; once bob syncs the fix-first memory is forgotten.
    result = plan.plan(_desired("granted-2", "rev4"), _observed(memory, bob="Failed"), NOW)
    assert _cmdlets(result) == ["Start-MigrationBatch"]
    memory = result.memory
    result = plan.plan(_desired("granted-2", "rev4"), _observed(memory, bob="Syncing"), NOW)
    assert result.memory.retries["batch1-it"].fixFirst is None and result.failures == ()
    # 5. A new failure at the same value is held again (it was noted afresh), not retried.
    memory = result.memory
    result = plan.plan(_desired("granted-2", "rev4"), _observed(memory, bob="Failed"), NOW)
    assert _cmdlets(result) == [] and [b.gate for b in result.blocked] == ["fix-first"]


def test_a_spec_retry_written_before_the_failure_does_not_retry_it() -> None:
    result = plan.plan(_desired("already-there"), _observed(Memory(), bob="Failed"), NOW)
    assert _cmdlets(result) == [] and result.memory.retries["batch1-it"].fixFirst == "already-there"


def test_a_transient_failure_is_retried_within_retry_failed_then_held() -> None:
    memory = Memory()
    sent = 0
    for _ in range(6):
        result = plan.plan(_desired(), _observed(memory, bob="Failed", error=TRANSIENT), NOW)
        sent += len(_cmdlets(result))
        memory = result.memory
    assert sent == 3 and [b.gate for b in result.blocked] == ["retry-limit"]
    (failure,) = result.failures
    assert (failure.catalogue, failure.retry, failure.handling) == (
        "1.16",
        "transient: retried",
        "retries spent (3/3 at this revision)",
    )


def _failure(error: str, address: str = "bob@contoso.com") -> Failure:
    return Failure(
        batch="Batch1-IT",
        address=address,
        status="Failed",
        error=error,
        catalogue=None,
        fix="not in the catalogue; read the error in Exchange",
        retry="unknown: retried up to 3 times",
        handling="retried",
    )


def test_failures_render_in_text_json_and_escaped_markdown() -> None:
    hostile = "Error: X: `rm` | <script>alert(1)</script> *bold*"
    result = Plan(revision="r", checksum="sha256:0", failures=(_failure(hostile, "a|b`c@contoso.com"),))
    text = render.to_text(result)
    assert "Failed members (the documented fix" in text and "[not in the catalogue]" in text
    assert json.loads(render.to_json(result))["failures"][0]["address"] == "a|b`c@contoso.com"
    markdown = render.to_markdown(result)
    html = MarkdownIt("commonmark").enable("table").render(markdown)
    html = html[html.index("<table>") : html.index("</table>")]
    assert "<script>" not in html and "<code>" not in html and "<em>" not in html
    rows = [line for line in html.splitlines() if line.startswith("<td>")]
    assert "<td>a|b`c@contoso.com</td>" in rows
    assert "<td>Error: X: `rm` | &lt;script&gt;alert(1)&lt;/script&gt; *bold*</td>" in rows


def test_status_shows_the_plans_failures() -> None:
    result = plan.plan(_desired(), _observed(Memory(), bob="Failed"), NOW)
    rows = status.failures(result)
    assert rows[0]["catalogue"] == "1.4" and rows[0]["address"] == "bob@contoso.com"
    lines = status.failures_text({"failures": rows})
    assert lines[1].startswith("failed members")
    assert "failed bob@contoso.com in Batch1-IT [1.4]: Error: MigrationPermanentException" in lines[2]
    assert lines[3].startswith("      fix: Assign the migration administrator Receive-As")
    assert status.failures_text({}) == []


def test_a_long_error_is_cut_and_kept_on_one_line() -> None:
    long = "Error: MigrationTransientException: " + "word\n" * 200
    result = plan.plan(_desired(), _observed(Memory(), bob="Failed", error=long), NOW)
    (failure,) = result.failures
    assert len(failure.error) == 300 and failure.error.endswith("…") and "\n" not in failure.error
