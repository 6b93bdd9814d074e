"""`stagectl sim`: init seeds the desired members as mail users; advance, show, fail and stop-batch."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller import errors
from controller.commands import sim as sim_command
from controller.secrets import Credential
from controller.sim.exchange.store import SimRunner, SimStore

DESIRED = Path(__file__).resolve().parent.parent / "desired"


def stagectl_sim(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="stagectl")
    sim_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sim", *argv])
    return int(args.func(args))


def test_init_advance_fail_stop_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "exchange.sqlite"
    assert (
        stagectl_sim(
            "init", "--state", str(state), "--mail-users-from", str(DESIRED), "--now", "2026-11-01T00:00:00Z"
        )
        == 0
    )
    tenant = SimStore(state).load()
    assert tenant.now == datetime(2026, 11, 1, tzinfo=UTC) and len(tenant.state.recipients) > 0
    member = next(iter(tenant.state.recipients.values())).address
    runner = SimRunner(state)
    runner.run(
        "New-MigrationEndpoint",
        {
            "ExchangeOutlookAnywhere": True,
            "Name": "EP",
            "Credentials": Credential("u", "p"),
            "ExchangeServer": "mail.contoso.com",
            "RpcProxyServer": "mail.contoso.com",
        },
    )
    assert (
        stagectl_sim(
            "fail", "--state", str(state), member, "--type", "MigrationPermanentException", "--message", "x"
        )
        == 0
    )
    runner.run(
        "New-MigrationBatch",
        {
            "Name": "B1",
            "SourceEndpoint": "EP",
            "CSVData": f"EmailAddress\n{member}\n".encode(),
            "AutoStart": True,
        },
    )
    assert stagectl_sim("advance", "--state", str(state), "6h") == 0
    assert SimStore(state).now() == datetime(2026, 11, 1, tzinfo=UTC) + timedelta(hours=6)
    assert (
        runner.run("Get-MigrationUser", {"Identity": member})[0]["ErrorSummary"]
        == "Error: MigrationPermanentException: x"
    )
    runner.run("Start-MigrationBatch", {"Identity": "B1"})
    calls_before = SimStore(state).load().calls()
    assert stagectl_sim("stop-batch", "--state", str(state), "B1") == 0
    assert SimStore(state).load().calls() == calls_before  # a hand-made change is not the controller's call
    capsys.readouterr()
    assert stagectl_sim("show", "--state", str(state)) == 0
    shown = capsys.readouterr().out
    assert "batch B1" in shown and "Stopping" in shown and "calls Start-MigrationBatch" in shown
    with pytest.raises(errors.Refused):
        stagectl_sim("stop-batch", "--state", str(state), "B1")


def test_missing_state_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidInput, match="sim init"):
        stagectl_sim("show", "--state", str(tmp_path / "none.sqlite"))
