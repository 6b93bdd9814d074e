"""Never "No changes" when stagectl could not look: a failed Exchange read over the real pypsrp path, or
the DNS primary down, is shown with why, and `plan --detailed-exitcode` and `apply` exit 3."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from controller.commands import cli
from controller.exchange import errors
from controller.model.snapshot import RRset
from controller.sim.bind import free_port
from controller.sim.dns import DnsSimBackend
from controller.sim.gateway.server import PsrpGateway
from tests.support.gateway import ENDPOINT_ROW, PASSWORD, FakeRunner, psrp_section, running_gateway

CASES = Path(__file__).parent / "cases"
MEMBERS = ("alice@contoso.com", "bob@contoso.com")
CUT_OVER_MX = RRset(name="@", type="MX", ttl=3600, values=["0 contoso-com.mail.protection.outlook.com."])
# What the gateway says when the batches cannot be read; the secret-looking part must never be shown.
BATCH_FAILURE = errors.CmdletError(
    "Get-MigrationBatch",
    "MigrationServiceUnavailableException",
    "The migration service is unavailable, try again later (password=hunter2-never-shown)",
)


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGECTL_TEST_GATEWAY_PASSWORD", PASSWORD)
    monkeypatch.setenv("ONPREM_MIGRATION_CREDENTIALS", "CONTOSO\\migadmin:correct-horse")


@pytest.fixture
def desired(tmp_path: Path) -> Path:
    """One completed batch and the MX cutover (the `mx-cutover-after-lead` case on the shared base)."""
    root = tmp_path / "desired"
    shutil.copytree(CASES / "_base" / "desired", root)
    shutil.copytree(CASES / "mx-cutover-after-lead" / "desired", root, dirs_exist_ok=True)
    return root


@pytest.fixture
def fake() -> FakeRunner:
    """A tenant where the endpoint exists and Batch1-IT has completed: nothing left to do in Exchange."""
    runner = FakeRunner()
    runner.rows["Get-MigrationEndpoint"] = [dict(ENDPOINT_ROW)]
    runner.rows["Get-MigrationBatch"] = [
        {
            "Identity": "Batch1-IT",
            "Status": "Completed",
            "TotalCount": 2,
            "SyncedCount": 2,
            "FailedCount": 0,
            "NotificationEmails": ["migration-team@contoso.com"],
        }
    ]
    runner.rows["Get-MigrationUser"] = [
        {"Identity": address, "BatchId": "Batch1-IT", "Status": "Completed"} for address in MEMBERS
    ]
    runner.rows["Get-Recipient"] = [
        {"PrimarySmtpAddress": address, "RecipientTypeDetails": "UserMailbox"} for address in MEMBERS
    ]
    return runner


@pytest.fixture
def gateway(fake: FakeRunner) -> Iterator[PsrpGateway]:
    with running_gateway(fake) as gateway:
        yield gateway


def write_config(tmp_path: Path, gateway: PsrpGateway, dns: dict[str, object]) -> Path:
    """Exchange through the gateway over real PSRP; DNS as given."""
    config = {
        "apiVersion": "stagectl/v1",
        "kind": "ControllerConfig",
        "stateDir": str(tmp_path / "state"),
        "exchange": {
            "backend": "psrp",
            "psrp": psrp_section(gateway),
        },
        "dns": dns,
    }
    path = tmp_path / "stagectl.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def sim_dns(tmp_path: Path) -> dict[str, object]:
    """The zone already cut over: DNS has nothing to do either."""
    path = tmp_path / "dns.json"
    DnsSimBackend(path).seed_zone("contoso.com", [CUT_OVER_MX])
    return {"backend": "sim", "state": str(path)}


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_failed_batch_read_is_unknown_with_why_and_exits_3(
    tmp_path: Path,
    desired: Path,
    fake: FakeRunner,
    gateway: PsrpGateway,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake.raises["Get-MigrationBatch"] = BATCH_FAILURE
    config = write_config(tmp_path, gateway, sim_dns(tmp_path))

    code, text, _ = _run(capsys, "plan", str(desired), "--config", str(config), "--detailed-exitcode")
    assert code == 3, text
    assert "No changes" not in text
    assert "Unknown" in text
    assert "exchange/batches" in text
    assert "MigrationServiceUnavailableException" in text
    assert "The migration service is unavailable" in text
    assert "hunter2" not in text

    code, out, _ = _run(capsys, "plan", str(desired), "--config", str(config), "--format", "json")
    assert code == 0, "without --detailed-exitcode plan only reports"
    unknown = json.loads(out)["unknown"]
    assert next(iter(unknown)) == "exchange/batches"
    assert unknown["exchange/batches"].startswith("CmdletError: Get-MigrationBatch failed: ")
    # Users and recipients are read for what the batch list says is unfinished: unknown with it, and why.
    assert set(unknown) == {"exchange/batches", "exchange/users", "exchange/mailUsers", "exchange/mailboxes"}
    assert "batch list, which could not be read" in unknown["exchange/users"]
    assert "hunter2" not in out

    code, markdown, _ = _run(capsys, "plan", str(desired), "--config", str(config), "--format", "markdown")
    assert "**Unknown**" in markdown and "exchange/batches" in markdown

    code, out, _ = _run(capsys, "apply", str(desired), "--config", str(config), "--yes")
    assert code == 3, out
    assert "No changes" not in out
    assert "exchange/batches" in out
    assert not [call for call, _ in fake.calls if not call.startswith("Get-")], "nothing was written"


def test_the_dns_primary_down_is_unknown_and_apply_exits_3(
    tmp_path: Path, desired: Path, fake: FakeRunner, gateway: PsrpGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens here: the primary is down
    dns = {
        "backend": "rfc2136",
        "rfc2136": {"zones": {"contoso.com": {"servers": [nowhere], "primary": nowhere, "timeout": 0.5}}},
    }
    config = write_config(tmp_path, gateway, dns)

    code, out, err = _run(capsys, "apply", str(desired), "--config", str(config), "--yes")
    assert code == 3, out + err
    assert "No changes" not in out
    assert "dns/contoso.com" in out
    assert "contoso.com" in err, "the DNS findings are printed even when there is nothing to apply"

    code, out, _ = _run(capsys, "plan", str(desired), "--config", str(config), "--detailed-exitcode")
    assert code == 3
    assert "dns/contoso.com" in out and "No changes" not in out
