"""SPF drift end to end (simulated DNS): a TXT string added by hand beside the SPF string is never drift,
and a hand-changed SPF string held under `dns: warn` holds the batch start that needed the coexistence
string, so migrated users never send from Exchange Online unauthorised."""

from __future__ import annotations

from pathlib import Path

from controller.runtime.reconciler import PassResult
from tests.support.controller import PILOT, Workspace, desired_files, make_workspace, migration_yaml

TXT = "dns/contoso.com/@/TXT"
COEXISTENCE = "v=spf1 mx include:spf.protection.outlook.com -all"


def settled_under_warn(root: Path) -> Workspace:
    """The on-premises phase under `dns: warn`, baselined: the endpoint made, the MX TTL lowered."""
    workspace = make_workspace(root)
    workspace.commit({"desired/migration.yaml": migration_yaml(dns_drift="warn")}, message="dns drift: warn")
    workspace.run_pass()
    settled = workspace.run_pass()
    assert settled.plan.drift == ()
    return workspace


def start_pilot(workspace: Workspace) -> PassResult:
    files = {**desired_files(pilot="started"), "desired/migration.yaml": migration_yaml(dns_drift="warn")}
    workspace.commit(files, message="start the pilot")
    return workspace.run_pass()


def txt_values(workspace: Workspace) -> list[str]:
    rrsets = workspace.dns().rrsets("contoso.com") or []
    return next(r.values for r in rrsets if r.name == "@" and r.type == "TXT")


def test_a_verification_token_added_by_hand_is_not_drift_and_the_coexistence_spf_is_written(
    tmp_path: Path,
) -> None:
    workspace = settled_under_warn(tmp_path)
    workspace.dns().edit(
        "contoso.com", "@", "TXT", values=["v=spf1 mx -all", "MS=ms12345678", "MS=ms99999999"]
    )

    result = start_pilot(workspace)

    assert result.plan.drift == ()
    sent = [o.action.object for o in result.report.outcomes if o.ok]
    assert TXT in sent and f"batch/{PILOT}" in sent
    assert sorted(txt_values(workspace)) == sorted([COEXISTENCE, "MS=ms12345678", "MS=ms99999999"])


def test_an_spf_string_changed_by_hand_under_warn_holds_the_batch_start(tmp_path: Path) -> None:
    workspace = settled_under_warn(tmp_path)
    workspace.dns().edit("contoso.com", "@", "TXT", values=["v=spf1 mx a -all", "MS=ms12345678"])

    result = start_pilot(workspace)

    [found] = [d for d in result.plan.drift if d.object == TXT]
    assert found.desired == {"spf": ["v=spf1 mx -all"]}
    assert found.observed == {"spf": ["v=spf1 mx a -all"]}  # what the server serves, not what we want
    assert "reported only" in found.reason
    assert [o.action.object for o in result.report.outcomes] == []
    assert workspace.writes()["New-MigrationBatch"] == 0
    held = [b for b in result.plan.blocked if b.object == f"batch/{PILOT}"]
    assert [b.gate for b in held] == ["spf"]
    assert TXT in held[0].reason
    assert sorted(txt_values(workspace)) == sorted(["v=spf1 mx a -all", "MS=ms12345678"])
