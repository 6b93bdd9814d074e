"""The audit trail in git history (issue 15 item 7): after a pass that acted, `git log --notes=stagectl`
shows beside the commit what the controller did, each line naming its audit record's hash; the notes are
pushed to a remote source, a failed push is a warning; `stagectl audit verify --repo` checks notes and log
against each other; no note holds a secret."""

from __future__ import annotations

import json
import logging
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.runtime import audit, notes
from controller.runtime.audit import AuditLog
from tests.support.controller import CREDENTIALS, PILOT, Workspace, make_workspace
from tests.support.gitrepo import git_env

TRAILER = re.compile(r"\[audit (\d+) ([0-9a-f]{64})\]$")


def note_lines(git: list[str], env: dict[str, str], revision: str) -> list[str]:
    result = subprocess.run(
        [*git, "notes", "--ref=stagectl", "show", revision],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return [line for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else []


def records_by_hash(workspace: Workspace) -> dict[str, dict[str, object]]:
    path = audit.path_in(workspace.state_dir)
    found = {}
    for seq, raw in enumerate(path.read_bytes().splitlines(keepends=True), start=1):
        record = json.loads(raw)
        assert record["seq"] == seq
        found[audit.line_hash(raw)] = record
    return found


def test_git_log_shows_beside_each_commit_what_its_passes_did(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    first = ws.repo.head()
    assert ws.run_pass().plan.actions  # the endpoint, the MX TTL lowered
    assert not ws.run_pass().plan.actions  # converged: nothing more to note
    start = ws.commit_desired(pilot="started", message="Start the pilot")
    assert ws.run_pass().plan.actions

    git = ["git", "-C", str(ws.repo.path)]
    records = records_by_hash(ws)
    for revision in (first, start):
        lines = note_lines(git, ws.repo.env, revision)
        results = [r for r in records.values() if r["revision"] == revision and r["phase"] == "result"]
        assert len(lines) == len(results) > 0
        for line in lines:
            seq, digest = TRAILER.search(line).groups()  # type: ignore[union-attr]
            record = records[digest]
            assert record["seq"] == int(seq) and record["revision"] == revision
            assert line.endswith(f"-> {record['result']} [audit {seq} {digest}]")
    pilot = note_lines(git, ws.repo.env, start)
    assert any(f"New-MigrationBatch batch/{PILOT} -> ok" in line for line in pilot), pilot

    log = ws.repo.git("log", "--notes=stagectl", "--format=%H %s%n%N")
    beside = log.split(f"{start} Start the pilot\n", 1)[1].split("\n\n", 1)[0]
    assert "New-MigrationBatch batch/Pilot -> ok [audit" in beside
    assert "New-MigrationEndpoint endpoint/StagedEndpoint -> ok" in log.split(f"{first} ", 1)[1]
    every_note = ws.repo.git("log", "--notes=stagectl", "--format=%N")
    assert CREDENTIALS not in every_note and "Secret123" not in every_note

    verified = ws.stagectl("audit", "verify", "--state", str(ws.state_dir), "--repo", str(ws.repo.path))
    assert verified.returncode == 0, verified.stderr
    assert (
        f"{len(pilot) + len(note_lines(git, ws.repo.env, first))} lines, each one a record" in verified.stdout
    )


def test_a_pass_run_again_notes_nothing_twice(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    ws.run_pass()
    head = ws.repo.head()
    before = note_lines(["git", "-C", str(ws.repo.path)], ws.repo.env, head)
    (ws.state_dir / notes.MARKER_FILE).unlink()  # as if the process died between the note and the marker
    ws.run_pass()
    assert note_lines(["git", "-C", str(ws.repo.path)], ws.repo.env, head) == before


def test_verify_reports_a_line_the_log_does_not_hold_and_one_that_says_otherwise(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    ws.run_pass()
    head = ws.repo.head()
    lines = note_lines(["git", "-C", str(ws.repo.path)], ws.repo.env, head)
    edited = [
        lines[0].replace("-> ok", "-> error: refused"),
        *lines[1:],
        lines[0].replace(lines[0][-65:-1], "f" * 64),
    ]
    ws.repo.git("notes", "--ref=stagectl", "add", "-f", "-m", "\n".join(edited), head)
    verified = ws.stagectl("audit", "verify", "--state", str(ws.state_dir), "--repo", str(ws.repo.path))
    assert verified.returncode == 1
    assert f"the note on {head[:12]} line 1 does not say what audit record" in verified.stderr
    assert (
        f"line {len(edited)} names audit record" in verified.stderr
        and "which is not in the log" in verified.stderr
    )
    assert "2 do not match the audit log" in verified.stderr


def test_no_secret_reaches_a_note(tmp_path: Path) -> None:
    """A result whose text carries a secret (an error quoting a password, a parameter named Password):
    the audit record is redacted, and so is the line made from it."""
    ws = make_workspace(tmp_path)
    head = ws.repo.head()
    log = AuditLog(audit.path_in(ws.state_dir))
    action = {
        "system": "exchange",
        "cmdlet": "Set-MigrationEndpoint",
        "object": "endpoint/StagedEndpoint",
        "parameters": {"Password": "hunter2-secret", "Credentials": "CONTOSO\\migadmin:Secret123!"},
    }
    log.append(
        revision=head,
        author="Ada Admin <ada@example.com>",
        action=action,
        result="error: logon failed: password=hunter2-secret; Authorization: Basic Zm9vOmJhcg==",
        duration_ms=5,
        time=datetime(2026, 11, 24, 10, tzinfo=UTC),
        pass_id=1,
        key="k1",
    )
    with ws.reconciler() as reconciler:
        assert notes.sync(reconciler.source, log.path, ws.state_dir) == 1
    text = "\n".join(note_lines(["git", "-C", str(ws.repo.path)], ws.repo.env, head))
    assert "Set-MigrationEndpoint endpoint/StagedEndpoint -> error: logon failed" in text
    for secret in ("hunter2", "Secret123", "Zm9vOmJhcg=="):
        assert secret not in text


# --- a remote source: the controller's clone gets the notes and pushes them -------------------------------


def remote_workspace(tmp_path: Path) -> tuple[Workspace, Path]:
    ws = make_workspace(tmp_path)
    bare = tmp_path / "remote.git"
    subprocess.run(
        ["git", "clone", "--quiet", "--bare", str(ws.repo.path), str(bare)], env=ws.repo.env, check=True
    )
    ws.write_config()
    config = ws.config_path.read_text(encoding="utf-8").replace(str(ws.repo.path), f"file://{bare}")
    ws.config_path.write_text(config, encoding="utf-8")
    return ws, bare


def test_notes_are_pushed_to_a_remote_source(tmp_path: Path) -> None:
    ws, bare = remote_workspace(tmp_path)
    assert ws.run_pass().plan.actions
    pushed = note_lines(["git", f"--git-dir={bare}"], git_env(tmp_path), ws.repo.head())
    assert pushed and all(TRAILER.search(line) for line in pushed)
    # a clone of the remote shows them once it fetches the notes ref
    verified = ws.stagectl("audit", "verify", "--state", str(ws.state_dir), "--repo", str(bare))
    assert verified.returncode == 0, verified.stderr


def test_a_refused_push_is_a_warning_and_is_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ws, bare = remote_workspace(tmp_path)
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'read-only mirror' >&2\nexit 1\n", encoding="utf-8")
    hook.chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="stagectl.notes"):
        result = ws.run_pass()
    assert result.report.failed is None and result.plan.actions  # the pass stands
    assert any(
        "not pushed" in r.getMessage() and "read-only mirror" in r.getMessage() for r in caplog.records
    )
    assert note_lines(["git", f"--git-dir={bare}"], git_env(tmp_path), ws.repo.head()) == []
    assert json.loads((ws.state_dir / notes.MARKER_FILE).read_text())["unpushed"] is True

    hook.unlink()
    ws.run_pass()  # nothing new to note: the notes written before are pushed now
    assert note_lines(["git", f"--git-dir={bare}"], git_env(tmp_path), ws.repo.head())
    assert json.loads((ws.state_dir / notes.MARKER_FILE).read_text())["unpushed"] is False


def test_notes_another_writer_pushed_are_merged_not_overwritten(tmp_path: Path) -> None:
    ws, bare = remote_workspace(tmp_path)
    first = ws.repo.head()
    env = git_env(tmp_path)
    subprocess.run(
        ["git", f"--git-dir={bare}", "-c", "user.name=Other", "-c", "user.email=o@example.com",
         "notes", "--ref=stagectl", "add", "-m", "a note by hand", first],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    ws.run_pass()
    lines = note_lines(["git", f"--git-dir={bare}"], env, first)
    assert "a note by hand" in lines and any(TRAILER.search(line) for line in lines)


def test_verify_fails_when_a_noted_line_or_a_whole_note_was_removed(tmp_path: Path) -> None:
    """notes.json says how far the notes were written: a record up to there without its line was removed
    (to hide what a commit did), and verify names it; records of later passes are not required yet."""
    ws = make_workspace(tmp_path)
    first = ws.repo.head()
    ws.run_pass()
    start = ws.commit_desired(pilot="started", message="Start the pilot")
    ws.run_pass()
    git = ["git", "-C", str(ws.repo.path)]
    pilot = note_lines(git, ws.repo.env, start)
    hidden = next(line for line in pilot if f"New-MigrationBatch batch/{PILOT}" in line)
    seq = TRAILER.search(hidden).group(1)  # type: ignore[union-attr]
    kept = [line for line in pilot if line != hidden]
    ws.repo.git("notes", "--ref=stagectl", "add", "-f", "-m", "\n".join(kept), start)

    verified = ws.stagectl("audit", "verify", "--state", str(ws.state_dir), "--repo", str(ws.repo.path))
    assert verified.returncode == 1, verified.stdout
    assert (
        f"audit record {seq} (New-MigrationBatch batch/{PILOT} -> ok) has no line in the note on {start[:12]}"
        in verified.stderr
    ), verified.stderr

    ws.repo.git("notes", "--ref=stagectl", "add", "-f", "-m", "\n".join(pilot), start)  # put back
    ws.repo.git("notes", "--ref=stagectl", "remove", first)  # a whole note removed
    verified = ws.stagectl("audit", "verify", "--state", str(ws.state_dir), "--repo", str(ws.repo.path))
    assert verified.returncode == 1
    assert f"has no line in the note on {first[:12]}" in verified.stderr
    assert "New-MigrationEndpoint endpoint/StagedEndpoint -> ok" in verified.stderr

    ws.repo.git("update-ref", "-d", "refs/notes/stagectl")  # every note gone
    verified = ws.stagectl("audit", "verify", "--state", str(ws.state_dir), "--repo", str(ws.repo.path))
    assert verified.returncode == 1 and "the repository has no notes, yet" in verified.stderr


def test_a_repository_never_noted_passes_verify(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, notes={"enabled": False})
    assert ws.run_pass().plan.actions
    assert not (ws.state_dir / notes.MARKER_FILE).exists()
    verified = ws.stagectl("audit", "verify", "--state", str(ws.state_dir), "--repo", str(ws.repo.path))
    assert verified.returncode == 0, verified.stderr
    assert "0 lines" in verified.stdout and "have no note line" in verified.stdout
