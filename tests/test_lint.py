"""`stagectl lint`: the runbook's rules as warnings at file:line (exit 0), an invalid desired state refused
(exit 1), and lint agreeing with what `init` planned."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.commands import cli
from controller.readiness import lint
from tests.support.inventory import DOMAIN, generate

HEADER = (
    "PrimarySmtpAddress,DisplayName,Department,Office,Manager,RecipientTypeDetails,TotalItemSize,ItemCount\n"
)
MIGRATION = f"""apiVersion: stagectl/v1
kind: Migration
metadata: {{name: contoso}}
spec:
  endpoint:
    name: StagedEndpoint
    exchangeServer: mail.{DOMAIN}
    rpcProxyServer: mail.{DOMAIN}
    emailAddress: admin@{DOMAIN}
    credentialsRef: env:ONPREM_MIGRATION_CREDENTIALS
"""


def batch(name: str, state: str, members: list[str], extra: str = "") -> str:
    listed = "".join(f"    - {member}@{DOMAIN}\n" for member in members)
    head = f"apiVersion: stagectl/v1\nkind: Batch\nmetadata:\n  name: {name}\nspec:\n  state: {state}\n"
    return f"{head}{extra}  members:\n{listed}"


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A desired state with one of each mistake, and the inventory it breaks the rules against."""
    inventory = tmp_path / "inventory.csv"
    inventory.write_text(
        HEADER
        + f"it1@{DOMAIN},It One,IT,Paris,,UserMailbox,10,1\n"
        + f"it2@{DOMAIN},It Two,IT,Paris,,UserMailbox,10,1\n"
        + f'boss@{DOMAIN},Boss,Sales,Paris,,UserMailbox,"1.5 GB (1,610,612,736 bytes)",1\n'
        + f"assistant@{DOMAIN},Assistant,Sales,Paris,boss@{DOMAIN},UserMailbox,10,1\n"
        + f"team@{DOMAIN},Team,,Paris,,SharedMailbox,10,1\n"
    )
    permissions = tmp_path / "permissions.csv"
    permissions.write_text(
        "Identity,User,AccessRights\n"
        f"boss@{DOMAIN},assistant@{DOMAIN},Delegate\n"
        f"team@{DOMAIN},boss@{DOMAIN},FullAccess\n"
        f"it1@{DOMAIN},it2@{DOMAIN},SendAs\n"
    )
    desired = tmp_path / "desired"
    (desired / "batches").mkdir(parents=True)
    (desired / "migration.yaml").write_text(MIGRATION)
    (desired / "batches" / "b1.yaml").write_text(batch("Batch1-Sales", "started", ["boss"]))
    (desired / "batches" / "b2.yaml").write_text(batch("Batch2-IT", "planned", ["it1", "it2", "ghost"]))
    (desired / "batches" / "b3.yaml").write_text(batch("Batch3-Rest", "planned", ["assistant", "team"]))
    return desired, inventory, permissions


def run_lint(desired: Path, inventory: Path, permissions: Path | None, *extra: str) -> int:
    args = ["lint", str(desired), "--inventory", str(inventory), *extra]
    return cli.main([*args, "--permissions", str(permissions)] if permissions else args)


def test_each_planted_mistake_is_a_warning_at_its_line(
    planted: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    desired, inventory, permissions = planted
    assert run_lint(desired, inventory, permissions, "--max-batch-gb", "1") == 0
    out = capsys.readouterr().out.splitlines()
    b1, b2, b3 = (f"{desired}/batches/{name}.yaml" for name in ("b1", "b2", "b3"))
    assert out == [
        f"{b1}:4:9: warning: Batch1-Sales starts before the IT pilot Batch2-IT: IT migrates first and signs "
        "off before anyone else moves (batches start: past planned first, then by startAfter, by name)",
        f"{b1}:4:9: warning: batch Batch1-Sales holds 1.5 GB, over the size budget of 1.0 GB "
        "(--max-batch-gb)",
        f"{b1}:8:7: warning: boss@{DOMAIN} holds FullAccess on the shared mailbox team@{DOMAIN} but is in "
        "Batch1-Sales, it in Batch3-Rest: permissions do not work across premises in a staged migration; "
        "move them into one batch",
        f"{b2}:10:7: warning: ghost@{DOMAIN} in Batch2-IT is not in the inventory (a leaver, or a typo?): "
        "its size, department and permissions are unknown",
        f"{b3}:8:7: warning: delegate assistant@{DOMAIN} is in Batch3-Rest and their principal "
        f"boss@{DOMAIN} in Batch1-Sales: permissions do not work across premises in a staged migration; "
        "move them into one batch",
        "lint: 5 warnings about the batches (warnings never block)",
    ]


def test_a_desired_state_that_keeps_the_rules_has_no_warning(
    planted: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    desired, inventory, permissions = planted
    (desired / "batches" / "b1.yaml").write_text(
        batch("Batch1-Sales", "planned", ["boss", "assistant", "team"])
    )
    (desired / "batches" / "b2.yaml").write_text(batch("Batch0-IT", "started", ["it1", "it2"]))
    (desired / "batches" / "b3.yaml").unlink()
    assert run_lint(desired, inventory, permissions) == 0
    assert capsys.readouterr().out == "lint: 0 warnings about the batches (warnings never block)\n"


def test_start_order_past_planned_then_start_after_then_name_as_numbers() -> None:
    from datetime import UTC, datetime

    from controller.desired.models import Batch, BatchState

    later = Batch("Batch2-A", BatchState.PLANNED, (), start_after=datetime(2027, 1, 1, tzinfo=UTC))
    sooner = Batch("Batch10-B", BatchState.PLANNED, (), start_after=datetime(2026, 1, 1, tzinfo=UTC))
    unscheduled = [Batch("Batch10-C", BatchState.PLANNED, ()), Batch("Batch9-D", BatchState.PLANNED, ())]
    running = Batch("Batch99-E", BatchState.STARTED, ())
    ordered = lint.start_order([later, *unscheduled, sooner, running])
    assert [b.name for b in ordered] == ["Batch99-E", "Batch10-B", "Batch2-A", "Batch9-D", "Batch10-C"]


def test_no_pilot_at_all_is_a_warning(
    planted: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    desired, inventory, _ = planted
    (desired / "batches" / "b2.yaml").write_text(
        batch("Batch2-Mixed", "planned", ["it1", "assistant", "team"])
    )
    (desired / "batches" / "b3.yaml").unlink()
    assert run_lint(desired, inventory, None) == 0
    assert "warning: no IT pilot: no batch is mostly IT" in capsys.readouterr().out


def test_an_invalid_desired_state_is_exit_1(
    planted: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    desired, inventory, permissions = planted
    (desired / "batches" / "b3.yaml").write_text(batch("Batch3-Rest", "planned", ["boss"]))  # in two batches
    assert run_lint(desired, inventory, permissions) == 1
    assert "is a member of both" in capsys.readouterr().err


def test_a_malformed_inventory_is_exit_1(
    planted: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    desired, inventory, permissions = planted
    inventory.write_bytes(HEADER.encode() + b"it1@contoso.com,\xff\n")
    assert run_lint(desired, inventory, permissions) == 1
    assert f"{inventory}:2:1: not UTF-8 (byte 0xff)" in capsys.readouterr().err


def test_lint_finds_in_what_init_planned_only_the_grants_init_said_cross(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    org = generate(tmp_path / "inventory", mailboxes=3000, grants=7000, seed=7)
    repo = tmp_path / "repo"
    common = ["--mailboxes", str(org.mailboxes), "--permissions", str(org.permissions), "--no-dns"]
    assert cli.main(["init", "--domain", DOMAIN, "--out", str(repo), *common]) == 0
    crossings = len((repo / "crossing-grants.csv").read_text().splitlines()) - 1
    capsys.readouterr()
    assert run_lint(repo / "desired", org.mailboxes, org.permissions) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"lint: {crossings} warnings about the batches (warnings never block)"
    listed = [line for line in out if ": warning: " in line]
    assert listed and all("permissions do not work across premises" in line for line in listed)
