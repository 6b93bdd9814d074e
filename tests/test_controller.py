"""The controller end to end on real git repositories and the simulators: a commit drives exactly its
cmdlets and the audit names it; an invalid commit changes nothing; status shows progress and failures."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from controller.exchange.errors import CmdletError
from tests.support.controller import (
    PILOT,
    PILOT_MEMBERS,
    WAVE_MEMBERS,
    Workspace,
    batch_yaml,
    desired_files,
    make_workspace,
)
from tests.support.gateway import ENDPOINT_ROW, FakeRunner, controller_psrp, running_gateway
from tests.support.gateway import PASSWORD as GATEWAY_PASSWORD
from tests.support.gitrepo import ssh_keypair


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path / "ws")


def bootstrap(workspace: Workspace) -> str:
    """The first pass on the initial commit (endpoint, TTL lowered); returns that commit's sha."""
    result = workspace.run_pass()
    assert result.served.refused is None
    assert result.report.failed is None
    assert workspace.writes() == Counter({"New-MigrationEndpoint": 1})
    return result.served.commit.sha


def test_a_commit_that_starts_a_batch_applies_exactly_its_cmdlets(workspace: Workspace) -> None:
    bootstrap(workspace)
    before_writes, before_audit = workspace.writes(), len(workspace.audit_records())

    sha = workspace.repo.commit(
        desired_files(pilot="started"),
        message="Start the pilot",
        author="Grace Hopper",
        email="grace@contoso.com",
    )
    result = workspace.run_pass()

    assert result.served.commit.sha == sha
    # The first started batch brings the coexistence SPF string, written before the batch starts.
    assert [(o.action.object, o.ok) for o in result.report.outcomes] == [
        ("dns/contoso.com/@/TXT", True),
        (f"batch/{PILOT}", True),
    ]
    assert workspace.writes() - before_writes == Counter({"New-MigrationBatch": 1})
    assert workspace.exchange().batch_status(PILOT) is not None

    records = workspace.audit_records()
    assert len(records) == before_audit + 2
    assert workspace.audit_records(sha) == records[-2:]
    spf = records[-2]["action"]
    assert isinstance(spf, dict) and "include:spf.protection.outlook.com" in " ".join(spf["values"])
    record = records[-1]
    assert record["revision"] == sha
    assert record["author"] == "Grace Hopper <grace@contoso.com>"
    assert record["result"] == "ok"
    action = record["action"]
    assert isinstance(action, dict)
    assert action["cmdlet"] == "New-MigrationBatch"
    assert action["parameters"]["Name"] == PILOT
    assert action["parameters"]["AutoStart"] is True
    assert action["parameters"]["CSVData"] == "<2 rows>"  # member lists stay out of the audit trail

    # The same commit again: nothing left to do, nothing issued, nothing audited.
    again = workspace.run_pass()
    assert again.report.outcomes == []
    assert workspace.writes() - before_writes == Counter({"New-MigrationBatch": 1})
    assert len(workspace.audit_records()) == before_audit + 2

    shown = workspace.stagectl("audit", "show", "--state", str(workspace.state_dir), "--revision", sha[:12])
    assert shown.returncode == 0, shown.stderr
    assert "New-MigrationBatch" in shown.stdout
    assert "New-MigrationEndpoint" not in shown.stdout
    verified = workspace.stagectl("audit", "verify", "--state", str(workspace.state_dir))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_an_invalid_commit_applies_nothing_and_the_previous_revision_is_served(
    workspace: Workspace,
) -> None:
    good = bootstrap(workspace)
    before_writes, before_audit = workspace.writes(), len(workspace.audit_records())

    # Starting the pilot would issue a cmdlet, but the same commit breaks the other batch.
    invalid = {
        **desired_files(pilot="started"),
        "desired/batches/wave1.yaml": batch_yaml("Wave1", ("not-an-address",), state="sideways"),
    }
    bad = workspace.commit(invalid, message="Start the pilot (and break Wave1)")
    ran = workspace.stagectl("run", "--config", str(workspace.config_path), "--once")

    assert ran.returncode == 1, "the head was refused: --once says so (README exit codes)"
    assert f"refused: revision {bad[:12]} is invalid" in ran.stdout
    assert workspace.writes() == before_writes
    assert len(workspace.audit_records()) == before_audit
    status = workspace.status()
    revision = status["revision"]
    assert isinstance(revision, dict)
    assert revision["served"] == good
    assert str(revision["refused"]).startswith(f"revision {bad[:12]} is invalid")
    assert "wave1.yaml" in revision["refused"]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")  # type: ignore[union-attr]
    assert stalled["status"] is True and bad[:12] in stalled["message"]

    # The same bad head on the next pass: still refused, still nothing applied.
    result = workspace.run_pass()
    assert result.served.commit.sha == good
    assert result.served.refused is not None
    assert result.report.outcomes == []

    fixed = workspace.commit(desired_files(pilot="started"), message="Fix Wave1")
    result = workspace.run_pass()
    assert result.served.commit.sha == fixed
    assert result.served.refused is None
    assert workspace.writes() - before_writes == Counter({"New-MigrationBatch": 1})
    assert [r["revision"] for r in workspace.audit_records()[before_audit:]] == [fixed, fixed]  # SPF, batch
    assert workspace.status()["revision"]["refused"] is None  # type: ignore[index]


def test_status_json_shows_batch_progress_and_failed_users_with_a_fix(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path / "ws", pilot="started")
    failing = PILOT_MEMBERS[1]
    state = str(workspace.exo_path)
    failed = workspace.stagectl(
        "sim",
        "fail",
        "--state",
        state,
        failing,
        "--type",
        "TooManyLargeItemsPermanentException",
        "--message",
        "The mailbox has 3 items larger than the 150 MB limit.",
    )
    assert failed.returncode == 0, failed.stderr
    first = workspace.stagectl("run", "--config", str(workspace.config_path), "--once")
    assert first.returncode == 0, first.stderr
    advanced = workspace.stagectl("sim", "advance", "--state", state, "3h")
    assert advanced.returncode == 0, advanced.stderr
    second = workspace.stagectl("run", "--config", str(workspace.config_path), "--once")
    assert second.returncode == 0, second.stderr

    shown = workspace.stagectl("status", "--config", str(workspace.config_path), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    batches = {b["name"]: b for b in data["batches"]}
    pilot = batches[PILOT]
    assert pilot["desired"] == "started"
    assert (pilot["synced"], pilot["total"], pilot["failed"]) == (1, 2, 1)
    assert [u["address"].lower() for u in pilot["failedUsers"]] == [failing.lower()]
    user = pilot["failedUsers"][0]
    assert "TooManyLargeItemsPermanentException" in user["error"]
    assert user["fix"].startswith("Remove the items over 150 MB")  # the catalogue's row 1.9, as everywhere
    wave = batches["Wave1"]
    assert (wave["desired"], wave["status"], wave["synced"], wave["total"]) == ("planned", "absent", 0, 3)
    assert data["revision"]["served"] == workspace.repo.head()

    text = workspace.stagectl("status", "--config", str(workspace.config_path))
    assert text.returncode == 0, text.stderr
    assert f"failed {user['address']}" in text.stdout
    assert "fix: Remove the items over 150 MB" in text.stdout  # the error catalogue's row 1.9


def test_an_ssh_signed_commit_is_served_and_an_unsigned_one_on_top_is_refused(tmp_path: Path) -> None:
    assert shutil.which("ssh-keygen"), "ssh-keygen (openssh-client) is required"
    key, public = ssh_keypair(tmp_path / "keys")
    signers = tmp_path / "allowed_signers"
    signers.write_text(f'ada@example.com namespaces="git" {public}\n', encoding="utf-8")
    workspace = make_workspace(tmp_path / "ws", signing_key=key, verify={"allowedSigners": str(signers)})
    signed = workspace.repo.head()

    first = workspace.run_pass()
    assert first.served.commit.sha == signed
    assert first.served.refused is None
    before = workspace.writes()

    unsigned = workspace.commit(desired_files(pilot="started"), message="Start the pilot, unsigned")
    refused = workspace.run_pass()
    assert refused.served.commit.sha == signed
    assert refused.served.refused is not None
    assert refused.served.refused.startswith(f"revision {unsigned[:12]} refused")
    assert "not signed" in refused.served.refused
    assert refused.report.outcomes == []
    assert workspace.writes() == before
    assert workspace.status()["revision"]["served"] == signed  # type: ignore[index]
    assert workspace.audit_records(unsigned) == []

    resigned = workspace.commit(desired_files(pilot="started"), message="Start the pilot, signed", sign=True)
    served = workspace.run_pass()
    assert served.served.commit.sha == resigned
    assert served.served.refused is None
    assert workspace.writes() - before == Counter({"New-MigrationBatch": 1})


def test_status_is_never_converged_while_a_kind_could_not_be_read(tmp_path: Path) -> None:
    """Over real PSRP: Get-MigrationUser fails, everything else is as the repository says; the empty plan
    is not a converged one, and status says what could not be read and why."""
    fake = FakeRunner()
    fake.rows["Get-MigrationEndpoint"] = [dict(ENDPOINT_ROW)]
    # The pilot exists, created and not started, as the repository wants it: its users are read.
    fake.rows["Get-MigrationBatch"] = [{"Identity": PILOT, "Status": "Created", "TotalCount": 2}]
    fake.rows["Get-Recipient"] = [
        {"PrimarySmtpAddress": address, "RecipientTypeDetails": "MailUser"}
        for address in (*PILOT_MEMBERS, *WAVE_MEMBERS)
    ]
    fake.raises["Get-MigrationUser"] = CmdletError(
        "Get-MigrationUser", "MigrationPermanentException", "The migration service did not answer."
    )
    with running_gateway(fake) as gateway:
        psrp = controller_psrp(gateway)
        workspace = make_workspace(
            tmp_path / "ws", exchange={"backend": "psrp", "psrp": psrp}, clock="system", pilot="created"
        )
        workspace.env["STAGECTL_TEST_GATEWAY_PASSWORD"] = GATEWAY_PASSWORD
        (workspace.repo.path / "desired" / "dns" / "contoso.com.yaml").unlink()  # no time gate in the way
        workspace.commit(message="Exchange only")
        result = workspace.run_pass()
        assert result.plan.actions == () and result.plan.blocked == ()

    ready = workspace.status()["conditions"][0]  # type: ignore[index]
    assert ready["type"] == "Ready"
    assert (ready["status"], ready["reason"]) == (False, "Unknown"), ready
    assert (
        "exchange/users: CmdletError: Get-MigrationUser failed: MigrationPermanentException"
        in ready["message"]
    )
    text = workspace.stagectl("status", "--config", str(workspace.config_path))
    assert "Converged" not in text.stdout
    assert "unknown     exchange/users: CmdletError: Get-MigrationUser failed" in text.stdout


def test_a_member_who_never_arrives_stalls_the_cutover_and_status_says_so(tmp_path: Path) -> None:
    """Every batch finished but one mailbox failed for good: the cutover is held, and that waits on a
    person (migrate, remove from the batch, or force), so status says Stalled and names the member."""
    workspace = make_workspace(tmp_path / "ws", pilot="started", wave="started")
    failed = WAVE_MEMBERS[0]
    with workspace.tenant() as tenant:
        tenant.fail_user(failed, exception_type="MigrationPermanentException", message="mailbox is corrupt")
    workspace.run_pass()
    workspace.commit_desired(pilot="completed", wave="completed", message="complete both")
    for _ in range(20):  # the failed member is retried retryFailed times, then the batch ends with errors
        with workspace.tenant() as tenant:
            tenant.advance(timedelta(hours=6))
        result = workspace.run_pass()
        if any(b.gate == "members-arrived" for b in result.plan.blocked):
            break
    held = [b for b in result.plan.blocked if b.gate == "members-arrived"]
    assert held and failed.lower() in held[0].reason.lower()
    assert any(
        b.gate == "batches-completed" and failed.lower() in b.reason.lower() for b in result.plan.blocked
    )
    conditions = {c["type"]: c for c in workspace.status()["conditions"]}  # type: ignore[union-attr]
    assert conditions["Ready"]["status"] is False
    assert conditions["Stalled"]["status"] is True
    assert "members-arrived" in str(conditions["Stalled"]["message"])
