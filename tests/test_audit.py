"""The audit log's hash chain, redaction, and the `stagectl audit` command, on real files."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller import audit, errors, redact
from controller.actions import CredentialRef, CsvRows, ExchangeAction
from controller.commands import audit as audit_command

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
REV_A = "a" * 40
REV_B = "b" * 40

START = ExchangeAction(
    cmdlet="New-MigrationBatch",
    parameters=(
        ("Name", "pilot"),
        ("CSVData", CsvRows(("a@example.com",))),
        ("Credentials", CredentialRef("env:ONPREM")),
    ),
    object="batch/pilot",
    reason="start the pilot",
)


def write_log(state: Path, records: int = 4) -> Path:
    log = audit.AuditLog(audit.path_in(state))
    for index in range(records):
        log.append(
            revision=REV_A if index < 2 else REV_B,
            author="Ada Admin <ada@example.com>",
            action=START,
            result="ok" if index != 1 else "error: the gateway refused password=hunter2",
            duration_ms=10 * index,
            time=NOW,
        )
    return audit.path_in(state)


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_records_chain_and_verify(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    records = [json.loads(line) for line in lines(path)]

    assert [record["seq"] for record in records] == [1, 2, 3, 4]
    assert records[0]["prev"] == audit.GENESIS
    for before, record in zip(lines(path), records[1:], strict=False):
        assert record["prev"] == audit.line_hash(before)
    assert records[0]["action"]["parameters"]["CSVData"] == "<1 rows>"
    assert records[0]["author"] == "Ada Admin <ada@example.com>"
    assert records[0]["time"] == "2024-05-01T12:00:00Z"
    assert records[1]["result"] == "error: the gateway refused password=<redacted>"
    assert set(records[0]) == {"seq", "time", "revision", "author", "action", "result", "duration_ms", "prev"}
    assert audit.verify(path) is None
    assert audit.verify(tmp_path / "absent.jsonl") is None


def test_a_reopened_log_continues_the_chain(tmp_path: Path) -> None:
    path = write_log(tmp_path, records=2)
    log = audit.AuditLog(path)  # a restarted controller
    record = log.append(
        revision=REV_B, author="x", action={"event": "revision refused"}, result="ok", duration_ms=0, time=NOW
    )
    assert record["seq"] == 3
    assert record["prev"] == audit.line_hash(lines(path)[1])
    assert audit.verify(path) is None


def test_a_changed_record_is_named(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    content = lines(path)
    content[1] = content[1].replace(b'"duration_ms":10', b'"duration_ms":11')
    path.write_bytes(b"".join(content))
    assert audit.verify(path) == 2
    assert "record 2 was changed" in audit.find_break(path).reason  # type: ignore[union-attr]


def test_a_removed_record_is_named(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    content = lines(path)
    del content[2]
    path.write_bytes(b"".join(content))
    assert audit.verify(path) == 3


def test_garbage_and_a_torn_last_record_are_named(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    content = lines(path)
    path.write_bytes(b"".join([*content[:3], b"not json\n"]))
    assert audit.verify(path) == 4
    path.write_bytes(b"".join([*content[:3], content[3][:20]]))
    assert audit.verify(path) == 4
    with pytest.raises(errors.ExternalFailure, match="incomplete record"):
        audit.AuditLog(path)


def test_secrets_never_reach_the_log(tmp_path: Path) -> None:
    log = audit.AuditLog(audit.path_in(tmp_path))
    log.append(
        revision=REV_A,
        author="Ada",
        action={
            "event": "sink",
            "webhook": {"secret": "s3cr3t-value", "Authorization": "Bearer abcdefghijkl"},
        },
        result="error: Authorization: Bearer abcdefghijkl",
        duration_ms=1,
        time=NOW,
    )
    text = audit.path_in(tmp_path).read_text(encoding="utf-8")
    assert "s3cr3t-value" not in text and "abcdefghijkl" not in text
    assert text.count(redact.REDACTED) == 3


def test_show_filters_by_revision_prefix(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    assert [record["seq"] for record in audit.show(path, REV_B[:7])] == [3, 4]
    assert len(audit.show(path)) == 4
    assert audit.show(path, "cccc") == []
    with pytest.raises(errors.InvalidInput):
        audit.show(path, "ab")


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    audit_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_audit_verify_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_log(tmp_path)
    assert run(["audit", "verify", "--state", str(tmp_path)]) == 0
    assert "4 records, chain intact" in capsys.readouterr().out

    content = lines(path)
    content[0] = content[0].replace(b"pilot", b"pil0t", 1)
    path.write_bytes(b"".join(content))
    assert run(["audit", "verify", "--state", str(tmp_path)]) == 1
    assert "record 1 was changed after it was written" in capsys.readouterr().err

    with pytest.raises(errors.InvalidInput, match="does not exist"):
        run(["audit", "verify", "--state", str(tmp_path / "nowhere")])


def test_audit_show_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_log(tmp_path)
    assert run(["audit", "show", "--state", str(tmp_path), "--revision", REV_A]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].split() == [
        "1",
        "2024-05-01T12:00:00Z",
        REV_A[:12],
        "Ada",
        "Admin",
        "<ada@example.com>:",
        "New-MigrationBatch",
        "batch/pilot",
        "->",
        "ok",
        "(0",
        "ms)",
    ]
    assert "error: the gateway refused password=<redacted>" in out[1]

    assert run(["audit", "show", "--state", str(tmp_path), "--format", "json"]) == 0
    assert [record["seq"] for record in json.loads(capsys.readouterr().out)] == [1, 2, 3, 4]

    assert run(["audit", "show", "--state", str(tmp_path), "--revision", "cccc"]) == 0
    assert capsys.readouterr().out.strip() == "no audit records for revision cccc"
