"""The audit log's hash chain, redaction, and the `stagectl audit` command, on real files."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller import errors, redact
from controller.commands import audit as audit_command
from controller.model.actions import CredentialRef, CsvRows, ExchangeAction
from controller.runtime import audit

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
    assert set(records[0]) == {
        "seq",
        "time",
        "revision",
        "author",
        "phase",
        "pass",
        "key",
        "action",
        "result",
        "duration_ms",
        "prev",
    }
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
        "result",
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


# --- the head: the newest record, anchored outside the log --------------------------------------------------


def head_of(path: Path) -> dict[str, object]:
    return json.loads(audit.head_path(path).read_bytes())


def test_each_append_records_the_head_atomically(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    assert audit.head_path(path) == tmp_path / "audit.head"
    assert head_of(path) == {"seq": 4, "hash": audit.line_hash(lines(path)[3])}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.head", "audit.jsonl"]  # no temporary left
    assert audit.find_break(path) is None


def test_an_edited_newest_record_is_named(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    content = lines(path)
    content[3] = content[3].replace(b'"duration_ms":30', b'"duration_ms":3')
    path.write_bytes(b"".join(content))
    found = audit.find_break(path)
    assert found == audit.Break(
        4, "record 4 (the newest) does not match the recorded head: edited or removed"
    )
    assert audit.verify(path) == 4
    # A restarted controller must not chain new records onto the edited one, which would hide the edit.
    with pytest.raises(errors.ExternalFailure, match="record 4 \\(the newest\\) does not match"):
        audit.AuditLog(path)


def test_a_removed_newest_record_and_a_truncated_log_are_named(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    content = lines(path)
    path.write_bytes(b"".join(content[:3]))
    found = audit.find_break(path)
    assert found is not None and found.seq == 4
    assert "record 4 is missing: the log ends at record 3 but the recorded head is record 4" in found.reason
    with pytest.raises(errors.ExternalFailure, match="record 4 is missing"):
        audit.AuditLog(path)

    path.write_bytes(b"".join(content[:1]))
    assert audit.verify(path) == 2

    path.write_bytes(b"")
    found = audit.find_break(path)
    assert found is not None and found.seq == 1
    assert "the log has no records but the recorded head is record 4" in found.reason

    path.unlink()
    assert audit.verify(path) == 1


def test_a_missing_head_is_named_but_a_new_log_needs_none(tmp_path: Path) -> None:
    assert audit.find_break(audit.path_in(tmp_path)) is None  # neither log nor head
    path = write_log(tmp_path)
    audit.head_path(path).unlink()
    found = audit.find_break(path)
    assert found is not None and found.seq == 4
    assert found.reason.startswith("record 4 (the newest) has no recorded head (audit.head is missing)")
    with pytest.raises(errors.ExternalFailure, match="has no recorded head"):
        audit.AuditLog(path)

    # An intact log written before heads were kept is anchored once, deliberately; a broken one is refused.
    assert audit.anchor(path) == audit.Head(4, audit.line_hash(lines(path)[3]))
    assert audit.find_break(path) is None
    audit.AuditLog(path)
    content = lines(path)
    path.write_bytes(b"".join([content[0], content[2], content[3]]))
    with pytest.raises(errors.InvalidInput, match="not anchoring a broken chain"):
        audit.anchor(path)


def test_an_unreadable_head_is_named(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    audit.head_path(path).write_bytes(b"{not json")
    assert audit.find_break(path) == audit.Break(4, "the recorded head audit.head is unreadable")
    with pytest.raises(errors.ExternalFailure, match="unreadable"):
        audit.AuditLog(path)


def test_the_crash_window_is_no_alarm_and_the_next_append_repairs_the_head(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    audit.write_head(path, audit.Head(3, audit.line_hash(lines(path)[2])))  # record 4 fsynced, head not yet
    assert audit.find_break(path) is None
    log = audit.AuditLog(path)
    log.append(revision=REV_B, author="x", action={"event": "e"}, result="ok", duration_ms=0, time=NOW)
    assert head_of(path) == {"seq": 5, "hash": audit.line_hash(lines(path)[4])}
    assert audit.find_break(path) is None

    # The same window on the very first record: one record, no head yet.
    first = tmp_path / "first"
    write_log(first, records=1)
    audit.head_path(audit.path_in(first)).unlink()
    assert audit.find_break(audit.path_in(first)) is None
    audit.AuditLog(audit.path_in(first))


def test_a_head_that_disagrees_further_back_is_named(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    content = lines(path)
    # One record ahead, but the head's hash is not what record 3 hashes to: record 3 was rewritten along
    # with record 4's link to it, or the head is not this log's.
    audit.write_head(path, audit.Head(3, audit.line_hash(b"something else")))
    found = audit.find_break(path)
    assert found == audit.Break(
        3, "record 3 was changed after it was written (it does not match the recorded head)"
    )
    with pytest.raises(errors.ExternalFailure):
        audit.AuditLog(path)

    # Two records ahead of a head that does match: the head is stale.
    audit.write_head(path, audit.Head(2, audit.line_hash(content[1])))
    found = audit.find_break(path)
    assert found is not None and found.seq == 3
    assert "the recorded head is record 2 but the log goes on to record 4" in found.reason


def test_audit_verify_and_anchor_commands_check_the_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_log(tmp_path)
    path.write_bytes(b"".join(lines(path)[:3]))
    assert run(["audit", "verify", "--state", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "record 4 is missing" in err and "recorded head is record 4" in err

    audit.head_path(path).unlink()
    assert run(["audit", "verify", "--state", str(tmp_path)]) == 1
    assert "record 3 (the newest) has no recorded head" in capsys.readouterr().err
    assert run(["audit", "anchor", "--state", str(tmp_path)]) == 0
    assert "head recorded at record 3" in capsys.readouterr().out
    assert run(["audit", "verify", "--state", str(tmp_path)]) == 0
    assert "3 records, chain intact" in capsys.readouterr().out
