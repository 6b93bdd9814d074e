"""`stagectl observe / plan / apply` end to end on the example, against the simulators' state files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.commands import cli
from controller.model.snapshot import RRset
from controller.sim.dns import DnsSimBackend
from controller.sim.exchange.store import SimStore

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "desired"

# The "done when": one batch Syncing, the MX TTL still 3600.
SYNCING_SNAPSHOT = {
    "observedAt": "2026-11-24T10:00:00Z",
    "exchange": {
        "endpoints": [
            {
                "Identity": "StagedEndpoint",
                "EndpointType": "ExchangeOutlookAnywhere",
                "ExchangeServer": "mail.contoso.com",
                "RpcProxyServer": "mail.contoso.com",
                "Authentication": "Basic",
                "MaxConcurrentMigrations": 20,
            }
        ],
        "batches": [
            {
                "Identity": "Batch0-IT",
                "Status": "Syncing",
                "TotalCount": 15,
                "SyncedCount": 6,
                "NotificationEmails": ["migration-team@contoso.com"],
            }
        ],
        "users": None,
        "mailUsers": [],
    },
    "dns": {
        "contoso.com": [
            {"name": "@", "type": "MX", "ttl": 3600, "values": ["10 mail.contoso.com."]},
            {"name": "@", "type": "TXT", "ttl": 3600, "values": ["v=spf1 mx -all"]},
        ]
    },
}


@pytest.fixture
def tenant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("ONPREM_MIGRATION_CREDENTIALS", "CONTOSO\\migadmin:correct-horse")
    exchange = tmp_path / "exchange.sqlite"
    assert (
        cli.main(
            [
                "sim",
                "init",
                "--state",
                str(exchange),
                "--mail-users-from",
                str(EXAMPLE),
                "--now",
                "2026-11-24T09:00:00Z",
            ]
        )
        == 0
    )
    dns = tmp_path / "dns.json"
    DnsSimBackend(dns).seed_zone(
        "contoso.com",
        [
            RRset(name="@", type="MX", ttl=3600, values=["10 mail.contoso.com."]),
            RRset(name="@", type="TXT", ttl=3600, values=["v=spf1 mx -all", "MS=ms12345678"]),
        ],
    )
    return exchange, dns


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_on_a_syncing_batch_lowers_the_ttl_waits_and_blocks_the_mx(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(json.dumps(SYNCING_SNAPSHOT))
    code, out, _ = _run(
        capsys, "plan", str(EXAMPLE), "--observed", str(snapshot), "--format", "json", "--detailed-exitcode"
    )
    plan = json.loads(out)
    assert code == 3, "changes present, but users and mailboxes are null (unknown): unknown wins"
    assert list(plan["unknown"]) == ["exchange/users", "exchange/mailboxes"]
    mx = [a for a in plan["actions"] if a.get("object") == "dns/contoso.com/@/MX"]
    assert mx == [{**mx[0], "ttl": 300, "values": ["10 mail.contoso.com."]}], (
        "the TTL is lowered, values kept"
    )
    assert {"object": "batch/Batch0-IT", "reason": "Syncing (6/15 synced); started"} in plan["waiting"]
    gates = {(b["object"], b["gate"]) for b in plan["blocked"]}
    assert ("dns/contoso.com/@/MX", "batches-completed") in gates
    assert ("dns/contoso.com/@/MX", "ttl-lead") in gates
    assert plan["checksum"].startswith("sha256:")


def test_text_and_markdown_renderings_say_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(json.dumps(SYNCING_SNAPSHOT))
    _, text, _ = _run(capsys, "plan", str(EXAMPLE), "--observed", str(snapshot))
    _, markdown, _ = _run(capsys, "plan", str(EXAMPLE), "--observed", str(snapshot), "--format", "markdown")
    assert "lower TTL 3600 -> 300 ahead of cutover" in text
    assert "Syncing (6/15 synced)" in text
    assert "| 1 | dns/contoso.com/@/MX | set TTL contoso.com MX 300" in markdown
    assert "**Blocked**" in markdown


def test_apply_then_plan_again_gives_no_actions(
    tenant: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    exchange, dns = tenant
    backends = ("--exchange", f"sim:{exchange}", "--dns", f"sim:{dns}")
    code, out, err = _run(capsys, "apply", str(EXAMPLE), *backends, "--yes")
    assert code == 0, err
    assert "applied 5 actions" in out  # with the coexistence SPF string before the first batch starts
    with SimStore(exchange).transaction() as sim:
        assert sim.calls("New-MigrationEndpoint") == 1
        assert sim.calls("New-MigrationBatch") == 2  # Batch0-IT and Batch1-EarlyAdopters are started
    code, out, _ = _run(capsys, "plan", str(EXAMPLE), *backends, "--detailed-exitcode")
    assert code == 0, out
    assert "No changes" in out


def test_apply_refuses_a_stale_checksum_and_applies_nothing(
    tenant: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    exchange, dns = tenant
    backends = ("--exchange", f"sim:{exchange}", "--dns", f"sim:{dns}")
    code, out, _ = _run(capsys, "plan", str(EXAMPLE), *backends, "--format", "json")
    checksum = json.loads(out)["checksum"]
    DnsSimBackend(dns).edit("contoso.com", "@", "MX", ttl=1800, values=["10 mail.contoso.com."])
    code, _, err = _run(capsys, "apply", str(EXAMPLE), *backends, "--yes", "--checksum", checksum)
    assert code == 1
    assert "the plan changed since checksum" in err
    with SimStore(exchange).transaction() as sim:
        assert sim.calls("New-MigrationEndpoint") == 0


def test_apply_without_yes_and_without_a_terminal_applies_nothing(
    tenant: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    exchange, dns = tenant
    code, _, err = _run(capsys, "apply", str(EXAMPLE), "--exchange", f"sim:{exchange}", "--dns", f"sim:{dns}")
    assert code == 1
    assert "pass --yes" in err
    with SimStore(exchange).transaction() as sim:
        assert sim.calls("New-MigrationEndpoint") == 0


def test_a_failed_action_stops_apply_with_an_account(
    tenant: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    exchange, dns = tenant
    monkeypatch.delenv("ONPREM_MIGRATION_CREDENTIALS")
    code, _out, err = _run(
        capsys, "apply", str(EXAMPLE), "--exchange", f"sim:{exchange}", "--dns", f"sim:{dns}", "--yes"
    )
    assert code == 1
    assert "stopped at endpoint/StagedEndpoint" in err
    assert "environment variable ONPREM_MIGRATION_CREDENTIALS is not set" in err
    assert "0 actions were applied before it; 4 were not attempted" in err  # the coexistence SPF too
    assert "not done: batch/Batch0-IT" in err
    with SimStore(exchange).transaction() as sim:
        assert sim.calls("New-MigrationBatch") == 0


def test_observe_prints_a_snapshot_that_plan_reads_back(
    tenant: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exchange, dns = tenant
    code, out, _ = _run(
        capsys, "observe", str(EXAMPLE), "--exchange", f"sim:{exchange}", "--dns", f"sim:{dns}"
    )
    assert code == 0
    snapshot = json.loads(out)
    assert snapshot["exchange"]["batches"] == []
    assert len(snapshot["exchange"]["mailUsers"]) == 525
    assert snapshot["dns"]["contoso.com"][0]["ttl"] == 3600
    path = tmp_path / "snapshot.json"
    path.write_text(out)
    code, out, _ = _run(capsys, "plan", str(EXAMPLE), "--observed", str(path), "--detailed-exitcode")
    assert code == 2
    assert "New-MigrationEndpoint" in out


def test_a_bad_snapshot_is_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "snapshot.json"
    path.write_text('{"observedAt": "yesterday"}')
    code, _out, err = _run(capsys, "plan", str(EXAMPLE), "--observed", str(path))
    assert code == 1
    assert err.startswith(f"{path}: snapshot observedAt:")
    assert "Traceback" not in err
