"""SPF strings as the coexistence phase derives and checks them (RFC 7208)."""

from __future__ import annotations

import pytest

from controller.planner import spf


@pytest.mark.parametrize(
    ("observed", "coexisting"),
    [
        ("v=spf1 mx -all", "v=spf1 mx include:spf.protection.outlook.com -all"),
        (
            "v=spf1 a:mail.contoso.com ~ALL",
            "v=spf1 a:mail.contoso.com include:spf.protection.outlook.com ~ALL",
        ),
        ("v=spf1 mx", "v=spf1 mx include:spf.protection.outlook.com"),
        (
            "v=spf1 mx redirect=_spf.contoso.com",
            "v=spf1 mx include:spf.protection.outlook.com redirect=_spf.contoso.com",
        ),
        (
            "v=spf1 mx include:SPF.protection.outlook.com -all",
            "v=spf1 mx include:SPF.protection.outlook.com -all",
        ),
    ],
)
def test_the_coexistence_string_adds_exchange_online_before_all(observed: str, coexisting: str) -> None:
    assert spf.coexistence(observed) == coexisting
    assert spf.coexistence(coexisting) == coexisting  # applied once, planned again: nothing more


def test_lookups_count_the_dns_querying_terms() -> None:
    text = (
        "v=spf1 ip4:192.0.2.0/24 mx a/24 ?include:a.example ptr exists:%{i}.x.example redirect=b.example -all"
    )
    assert spf.lookups(text) == 6  # mx, a, include, ptr, exists, redirect; ip4 and all query nothing


def test_only_a_v_spf1_version_section_is_spf() -> None:
    assert spf.spf_strings(["V=SPF1 mx -all", "v=spf10 x", "v=spf1", "MS=ms1"]) == [
        "V=SPF1 mx -all",
        "v=spf1",
    ]


@pytest.mark.parametrize(
    "observed",
    [
        "v=spf1 mx +include:spf.protection.outlook.com -all",
        "v=spf1 mx include:SPF.Protection.Outlook.com. -all",
    ],
)
def test_exchange_online_written_another_way_is_not_included_twice(observed: str) -> None:
    assert spf.coexistence(observed) == observed


def test_a_held_retry_is_not_spent() -> None:
    """A Start-MigrationBatch held (by the spf gate or by drift under warn) gives back its retry count."""
    from controller.model.actions import ExchangeAction
    from controller.model.snapshot import Memory, RetryCount
    from controller.planner import coexistence

    before = Memory(retries={"pilot": RetryCount(revision="r", count=1)})
    counted = Memory(
        retries={"pilot": RetryCount(revision="r", count=2), "wave1": RetryCount(revision="r", count=1)}
    )
    held = [ExchangeAction("Start-MigrationBatch", (("Identity", "Wave1"),), "batch/Wave1", "retry")]
    assert coexistence.uncounted(counted, held, before).retries == {
        "pilot": RetryCount(revision="r", count=2)
    }
