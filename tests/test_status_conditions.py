"""The status conditions `stagectl status` reports: what could not be read comes before everything else."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from controller.desired import loader
from controller.model.actions import Blocked, Plan
from controller.runtime import status
from controller.runtime.applier import ApplyReport
from controller.runtime.serving import Served
from controller.runtime.source import CommitInfo

BASE = Path(__file__).parent / "cases" / "_base" / "desired"
COMMIT = CommitInfo(
    sha="a" * 40,
    author_name="Ada",
    author_email="ada@contoso.com",
    date=datetime(2026, 11, 24, tzinfo=UTC),
    subject="s",
)


def test_a_zone_that_could_not_be_read_is_unknown_even_though_it_blocks_its_records() -> None:
    """The DNS primary is down: the planner blocks the zone's records (gate unknown); the reason
    automation reads is Unknown, not Stalled, and the message says what could not be read."""
    served = Served(loader.load_directory(BASE), COMMIT)
    planned = Plan(
        revision="r",
        checksum="sha256:x",
        blocked=(Blocked("dns/contoso.com/@/MX", "unknown", "zone contoso.com could not be read"),),
    )
    unread = {"dns/contoso.com": "no server answered (timed out)"}
    conditions = {c["type"]: c for c in status._conditions(served, planned, ApplyReport(), unread)}
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == (False, "Unknown")
    assert "dns/contoso.com: no server answered" in str(conditions["Ready"]["message"])
    assert conditions["Stalled"]["status"] is True  # it does need a person: the block is still shown
