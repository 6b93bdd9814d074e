"""`stagectl sim`: init seeds the desired members as mail users; advance, show, fail and stop-batch."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller import errors
from controller.commands import sim as sim_command
from controller.exchange import errors as errors_module
from controller.exchange.client import address_filter
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


def test_recipient_and_endpoint_check_set_the_preflight_cases(tmp_path: Path) -> None:
    """`sim recipient` makes a member cloud-only, unlicensed, another type or missing; `sim endpoint-check`
    makes Test-MigrationServerAvailability answer Result Failed with an ErrorDetail (exchange-facts §9.0,
    §9.2: it does not throw), then Success again."""
    state = tmp_path / "exchange.sqlite"
    assert stagectl_sim("init", "--state", str(state)) == 0
    assert stagectl_sim("recipient", "--state", str(state), "ann@contoso.com", "--cloud-only") == 0
    assert stagectl_sim("recipient", "--state", str(state), "bob@contoso.com", "--unlicensed") == 0
    assert stagectl_sim("recipient", "--state", str(state), "cy@contoso.com", "--type", "MailContact") == 0
    assert stagectl_sim("recipient", "--state", str(state), "dee@contoso.com") == 0
    assert stagectl_sim("recipient", "--state", str(state), "dee@contoso.com", "--missing") == 0
    runner = SimRunner(state)
    rows = runner.run(
        "Get-Recipient",
        {
            "Filter": address_filter(
                ["ann@contoso.com", "bob@contoso.com", "cy@contoso.com", "dee@contoso.com"]
            )
        },
        ["PrimarySmtpAddress", "RecipientTypeDetails", "IsDirSynced", "SKUAssigned"],
    )
    found = {
        r["PrimarySmtpAddress"]: (r["RecipientTypeDetails"], r["IsDirSynced"], r["SKUAssigned"]) for r in rows
    }
    assert found == {
        "ann@contoso.com": ("MailUser", False, True),
        "bob@contoso.com": ("MailUser", True, False),
        "cy@contoso.com": ("MailContact", True, True),
    }
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
    assert stagectl_sim("endpoint-check", "--state", str(state), "--fail", "") == 0
    [failed] = runner.run("Test-MigrationServerAvailability", {"Endpoint": "EP"})
    assert failed["Result"] == "Failed" and failed["IsValid"] is False
    assert failed["Message"] == "The connection to the server 'mail.contoso.com' could not be completed."
    assert "---> Microsoft.Exchange.Rpc.ServerUnavailableException" in str(failed["ErrorDetail"])
    assert stagectl_sim("endpoint-check", "--state", str(state), "--pass") == 0
    [passed] = runner.run("Test-MigrationServerAvailability", {"Endpoint": "EP"})
    assert passed["Result"] == "Success" and passed["ErrorDetail"] == ""
    with pytest.raises(errors_module.CmdletError):
        runner.run("Test-MigrationServerAvailability", {"Endpoint": "Nope"})
