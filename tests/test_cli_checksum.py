"""`apply --checksum` applies exactly the reviewed plan: a time gate that opens between `plan` and `apply`
changes the checksum and apply names the action nobody reviewed; time alone that moves only waits does not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from controller.commands import cli
from controller.model.snapshot import RRset
from controller.sim.dns import DnsSimBackend
from controller.sim.exchange.store import SimStore

CASES = Path(__file__).parent / "cases"
T0 = "2026-11-02T09:00:00Z"
MX = "dns/contoso.com/@/MX"


class Migration:
    """One completed batch and the MX cutover, on the simulators, with a state directory."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.desired = root / "desired"
        shutil.copytree(CASES / "_base" / "desired", self.desired)
        shutil.copytree(CASES / "mx-cutover-after-lead" / "desired", self.desired, dirs_exist_ok=True)
        self.exchange = root / "exchange.sqlite"
        self.dns = root / "dns.json"
        self.state = root / "state"
        code, _, err = self.run(
            "sim", "init", "--state", str(self.exchange), "--mail-users-from", str(self.desired), "--now", T0
        )
        assert code == 0, err
        DnsSimBackend(self.dns).seed_zone(
            "contoso.com", [RRset(name="@", type="MX", ttl=3600, values=["10 mail.contoso.com."])]
        )

    def run(self, *argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err

    def stagectl(self, command: str, *argv: str) -> tuple[int, str, str]:
        backends = (
            "--exchange",
            f"sim:{self.exchange}",
            "--dns",
            f"sim:{self.dns}",
            "--state",
            str(self.state),
        )
        return self.run(command, str(self.desired), *backends, *argv)

    def advance(self, duration: str) -> None:
        code, _, err = self.run("sim", "advance", "--state", str(self.exchange), duration)
        assert code == 0, err

    def reviewed_checksum(self) -> tuple[str, dict[str, object]]:
        code, out, err = self.stagectl("plan", "--format", "json")
        assert code == 0, err
        plan: dict[str, object] = json.loads(out)
        return str(plan["checksum"]), plan


@pytest.fixture
def migration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Migration:
    monkeypatch.setenv("ONPREM_MIGRATION_CREDENTIALS", "CONTOSO\\migadmin:correct-horse")
    return Migration(tmp_path, capsys)


def complete_the_batch_with_the_ttl_low(migration: Migration) -> None:
    """Endpoint, batch and TTL lowering at T0; Complete once Synced; Completed an hour after T0."""
    code, out, err = migration.stagectl("apply", "--yes")
    assert code == 0, out + err
    migration.advance("30m")  # each member syncs in 20 minutes
    code, out, err = migration.stagectl("apply", "--yes")
    assert code == 0, out + err
    assert "Complete-MigrationBatch" in out
    migration.advance("30m")
    with SimStore(migration.exchange).transaction() as sim:
        assert sim.batch_status("Batch1-IT") == "Completed"


def test_a_time_gate_that_opens_after_review_refuses_and_names_the_cutover(migration: Migration) -> None:
    complete_the_batch_with_the_ttl_low(migration)
    checksum, reviewed = migration.reviewed_checksum()
    assert reviewed["actions"] == [], "the MX waits for the TTL lead"
    assert [b["gate"] for b in reviewed["blocked"] if b["object"] == MX] == ["ttl-lead"]  # type: ignore[union-attr,index]

    migration.advance("48h")  # the lead (48 h from the lowering, seen at T0+30m) has passed
    code, out, err = migration.stagectl("apply", "--yes", "--checksum", checksum)

    assert code == 1, out + err
    assert f"the plan changed since checksum {checksum} was reviewed" in err
    added = [
        line for line in err.splitlines() if line.startswith(f"  added    {MX}: replace contoso.com MX ")
    ]
    assert len(added) == 1 and added[0].endswith(" 0 contoso-com.mail.protection.outlook.com."), err
    assert DnsSimBackend(migration.dns).rrsets("contoso.com") == [
        RRset(name="@", type="MX", ttl=300, values=["10 mail.contoso.com."])
    ], "the cutover nobody reviewed was not applied"


def test_time_that_moves_only_the_waits_keeps_the_checksum(migration: Migration) -> None:
    checksum, reviewed = migration.reviewed_checksum()
    assert len(reviewed["actions"]) == 3  # type: ignore[arg-type]

    migration.advance("1m")
    code, out, err = migration.stagectl("apply", "--yes", "--checksum", checksum)

    assert code == 0, out + err
    assert "applied 3 actions" in out


def test_a_changed_action_is_named_with_what_was_reviewed(migration: Migration) -> None:
    checksum, _ = migration.reviewed_checksum()
    DnsSimBackend(migration.dns).edit("contoso.com", "@", "MX", ttl=1800, values=["10 mail.contoso.com."])

    code, out, err = migration.stagectl("apply", "--yes", "--checksum", checksum)

    assert code == 1, out + err
    assert f"  changed  {MX}: set TTL contoso.com MX 300 10 mail.contoso.com." in err
    assert "previous" in err and "3600" in err and "1800" in err
    with SimStore(migration.exchange).transaction() as sim:
        assert sim.calls("New-MigrationEndpoint") == 0


@pytest.mark.parametrize("spelling", ["bare hex", "upper case"])
def test_the_reviewed_checksum_is_accepted_however_it_was_pasted(migration: Migration, spelling: str) -> None:
    checksum, _ = migration.reviewed_checksum()
    pasted = checksum.removeprefix("sha256:") if spelling == "bare hex" else checksum.upper()
    code, out, err = migration.stagectl("apply", "--yes", "--checksum", pasted)
    assert code == 0, out + err
    assert "applied 3 actions" in out


def test_a_plan_reviewed_in_ci_names_what_changed_from_its_comment(
    migration: Migration, tmp_path: Path
) -> None:
    """CI plans without a state directory: nothing is kept, so the comment itself carries the reviewed
    actions (a hidden block) and `apply --reviewed plan.md` names each difference from it."""
    backends = ("--exchange", f"sim:{migration.exchange}", "--dns", f"sim:{migration.dns}")
    code, comment, err = migration.run("plan", str(migration.desired), *backends, "--format", "markdown")
    assert code == 0, err
    code, as_json, err = migration.run("plan", str(migration.desired), *backends, "--format", "json")
    assert code == 0, err
    checksum = json.loads(as_json)["checksum"]
    assert f"checksum {checksum}" in comment and "Secret" not in comment and "correct-horse" not in comment
    (tmp_path / "plan.md").write_text(comment, encoding="utf-8")
    (tmp_path / "plan.json").write_text(as_json, encoding="utf-8")
    DnsSimBackend(migration.dns).edit("contoso.com", "@", "MX", ttl=1800, values=["10 mail.contoso.com."])

    for reviewed in ("plan.md", "plan.json"):
        code, out, err = migration.stagectl(
            "apply", "--yes", "--checksum", checksum, "--reviewed", str(tmp_path / reviewed)
        )
        assert code == 1, out + err
        assert f"  changed  {MX}: set TTL contoso.com MX 300 10 mail.contoso.com." in err, err
        assert "3600" in err and "1800" in err
        assert "not on record" not in err
    # Without it: not on record, and the new plan's blocks and waits say why it is what it is.
    code, out, err = migration.stagectl("apply", "--yes", "--checksum", checksum)
    assert code == 1 and "the reviewed plan is not on record" in err
    assert f"  blocked  {MX} (" in err, err
    # A file holding another plan is refused, not compared.
    code, out, err = migration.stagectl(
        "apply", "--yes", "--checksum", "sha256:" + "0" * 64, "--reviewed", str(tmp_path / "plan.md")
    )
    assert code == 1 and f"holds the plan of checksum {checksum}" in err
    with SimStore(migration.exchange).transaction() as sim:
        assert sim.calls("New-MigrationEndpoint") == 0
