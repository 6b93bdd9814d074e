"""The simulator's OPATH -Filter: the controller's address filter, quoting, and refusal of what it cannot
parse (a filter it does not understand must fail, never match everything)."""

from __future__ import annotations

import pytest

from controller.exchange.client import address_filter
from controller.exchange.errors import CmdletError
from controller.sim.exchange import opath
from controller.sim.exchange.simulator import ExchangeSimulator, LocalRunner
from controller.sim.exchange.state import RecipientType


def row(address: str, kind: str = "MailUser") -> dict[str, object]:
    return {"PrimarySmtpAddress": address, "RecipientTypeDetails": kind}


def test_the_controllers_address_filter_round_trips_quotes_and_case() -> None:
    text = address_filter(["o'brien@contoso.com", "Alice@Contoso.com"])
    assert (
        text
        == "(PrimarySmtpAddress -eq 'o''brien@contoso.com') -or (PrimarySmtpAddress -eq 'Alice@Contoso.com')"
    )
    assert opath.equal_values(text, "PrimarySmtpAddress") == {"o'brien@contoso.com", "alice@contoso.com"}
    match = opath.compile_filter(text)
    assert match(row("O'Brien@contoso.com")) and match(row("alice@contoso.com"))
    assert not match(row("obrien@contoso.com"))


def test_and_not_like_and_grouping() -> None:
    match = opath.compile_filter(
        "(PrimarySmtpAddress -like '*@contoso.com' -and -not (RecipientTypeDetails -eq 'UserMailbox'))"
    )
    assert match(row("a@contoso.com")) and not match(row("a@contoso.com", "UserMailbox"))
    assert not match(row("a@fabrikam.com"))
    assert opath.equal_values("PrimarySmtpAddress -like 'a*'", "PrimarySmtpAddress") is None


@pytest.mark.parametrize(
    "text", ["PrimarySmtpAddress -eq", "(PrimarySmtpAddress -eq 'a'", "$(Get-Process)", "a -gt 'b'", "'a'"]
)
def test_a_filter_it_cannot_parse_is_refused(text: str) -> None:
    with pytest.raises(opath.FilterError):
        opath.compile_filter(text)


def test_get_recipient_answers_the_filter_and_refuses_a_bad_one() -> None:
    simulator = ExchangeSimulator()
    simulator.add_recipient("alice@contoso.com")
    simulator.add_recipient("bob@contoso.com", RecipientType.USER_MAILBOX)
    simulator.add_recipient("carol@contoso.com")
    runner = LocalRunner(simulator)
    rows = runner.run(
        "Get-Recipient",
        {"Filter": address_filter(["BOB@contoso.com", "nobody@contoso.com", "alice@contoso.com"])},
        ["PrimarySmtpAddress", "RecipientTypeDetails"],
    )
    assert sorted(r["PrimarySmtpAddress"] for r in rows) == ["alice@contoso.com", "bob@contoso.com"]
    assert all(set(r) == {"PrimarySmtpAddress", "RecipientTypeDetails"} for r in rows)
    scanned = runner.run("Get-Recipient", {"Filter": "RecipientTypeDetails -eq 'MailUser'"})
    assert sorted(r["PrimarySmtpAddress"] for r in scanned) == ["alice@contoso.com", "carol@contoso.com"]
    with pytest.raises(CmdletError, match="Invalid filter"):
        runner.run("Get-Recipient", {"Filter": "PrimarySmtpAddress -eq alice"})
