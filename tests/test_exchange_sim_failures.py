"""The simulator's per-user failures use the error catalogue's texts (exchange-facts §9.0, §9.1), and a
failure whose cause was fixed clears when Start-MigrationBatch retries the user; an unfixed one fails
again. `stagectl sim fail --row` and `stagectl sim fix` drive the same from the command line."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from controller.model.catalogue import match
from controller.sim.exchange.engine import DOCUMENTED_FAILURES, documented_failure
from controller.sim.exchange.simulator import ExchangeSimulator
from controller.sim.exchange.store import SimRunner, SimStore
from tests.test_exchange_sim import batch, new_batch, sim, user  # noqa: F401  (sim is a fixture)
from tests.test_exchange_sim_cli import DESIRED, stagectl_sim


@pytest.mark.parametrize("row", sorted(DOCUMENTED_FAILURES))
def test_each_injected_text_is_recognised_as_its_row(row: str) -> None:
    kind, _, summary = documented_failure(row, "ann@contoso.com")
    entry = match(summary)
    assert entry is not None and entry.id == row, summary
    assert kind in summary or row == "1.9"  # 1.9: its FailureType is apart from the Message


def test_the_formats_of_rows_1_1_1_4_1_8_1_16(sim: ExchangeSimulator) -> None:  # noqa: F811
    shown = {row: documented_failure(row, "ann@contoso.com")[2] for row in ("1.1", "1.4", "1.8", "1.16")}
    assert shown["1.1"] == (
        'Error: MigrationRecipientNotFoundException: A recipient wasn\'t found for "ann@contoso.com" on the '
        "target. Create a recipient of the appropriate type for this migration on the target and try again."
    )
    assert shown["1.4"] == (
        "Error: MigrationPermanentException: Microsoft Exchange couldn't sign in to the user's on-premises "
        "account."
    )
    assert shown["1.8"].startswith("Error: TooManyBadItemsPermanentException: ")
    assert shown["1.16"].startswith("Error: MigrationTransientException: ")


def test_a_fix_first_failure_fails_again_until_fixed_then_the_retry_syncs(
    sim: ExchangeSimulator,  # noqa: F811
) -> None:
    summary = sim.fail_documented("user0@contoso.com", "1.4")
    new_batch(sim, "B1", ["user0@contoso.com", "user1@contoso.com"], AutoStart=True)
    sim.advance(timedelta(hours=2))
    assert batch(sim, "B1")["Status"] == "SyncedWithErrors"
    assert user(sim, "user0@contoso.com")["ErrorSummary"] == summary
    # A retry without the fix: queued, synced again, failed again with the same text.
    sim.call("Start-MigrationBatch", {"Identity": "B1"})
    assert user(sim, "user0@contoso.com")["Status"] in ("Queued", "Syncing")
    sim.advance(timedelta(hours=2))
    assert user(sim, "user0@contoso.com")["ErrorSummary"] == summary
    # Fixed on premises (Full Access granted), then retried: it syncs and the error is gone.
    sim.clear_failure("user0@contoso.com")
    assert batch(sim, "B1")["Status"] == "SyncedWithErrors"  # fixing does not retry by itself
    sim.call("Start-MigrationBatch", {"Identity": "B1"})
    sim.advance(timedelta(hours=2))
    assert batch(sim, "B1")["Status"] == "Synced"
    assert user(sim, "user0@contoso.com")["ErrorSummary"] == ""


def test_sim_fail_row_and_fix_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "exchange.sqlite"
    assert stagectl_sim("init", "--state", str(state), "--mail-users-from", str(DESIRED)) == 0
    member = "Jakob.Carter@contoso.com"
    assert stagectl_sim("fail", "--state", str(state), member, "--row", "1.4") == 0
    assert "couldn't sign in to the user's on-premises account" in capsys.readouterr().out
    failure = SimStore(state).load().state.failures[member.lower()]
    assert failure.summary is not None and match(failure.summary) is not None
    assert stagectl_sim("fix", "--state", str(state), member) == 0
    assert member.lower() not in SimStore(state).load().state.failures
    with pytest.raises(SystemExit):  # --row and --type exclude each other; one is required
        stagectl_sim("fail", "--state", str(state), member)
    SimRunner(state).close()
