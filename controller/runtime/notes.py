"""The audit trail in git history (issue 15 item 7): what each pass did, as git notes under
`refs/notes/stagectl` on the commits that asked for it, so `git log --notes=stagectl` shows it beside each
merge; and the check of those notes against the audit log (`stagectl audit verify --repo`).

A note line is one result or settlement of the audit log, rendered from the record alone:

    2026-11-24T10:00:00Z pass 3: New-MigrationBatch batch/Pilot -> ok [audit 7 <sha256 of the record>]

so that `verify` renders the record the hash names again and compares. Intents are not noted (their
result or settlement is). Records are redacted when written; each line is redacted once more. After a
pass, the records appended since the last one noted (`notes.json` in the state directory: the seq and
byte offset reached) are appended to the notes of their revisions, skipping any line already there (a
crash between the note and the marker repeats nothing). A remote source's clone gets the notes and they
are pushed; a push that fails is a warning and is tried again after the next pass. A revision that is not
a commit of the repository (`stagectl apply` on a working tree) is not noted.

The marker also says how far the notes reached the repository (`pushed`: the seq through which every
noted record is in the notes of the repository, local or remote) and which revisions were passed over
as no commit of it (`skipped`). `verify` holds them to it: a result or settlement up to `pushed` whose
revision is a commit of the repository and was not skipped must have its line, so a deleted note is
found. Without a marker (notes never written, or disabled) no line is required.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from controller import errors, redact
from controller.runtime import audit
from controller.runtime.config import ControllerConfig
from controller.runtime.publish import write_atomic
from controller.runtime.source import GitSource

log = logging.getLogger("stagectl.notes")

NOTES_REF = "refs/notes/stagectl"
MARKER_FILE = "notes.json"
NOTED_PHASES = frozenset({"result", "settled"})  # a record without a phase (before issue 14) is a result
_SHA = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")
_TRAILER = re.compile(r"\[audit (\d+) ([0-9a-f]{64})\]$")
SKIPPED_KEPT = 1000  # revisions remembered as passed over (not commits of the repository)
MISSING_NAMED = 20  # missing note lines named one by one; the rest are counted


@dataclass(frozen=True, slots=True)
class Entry:
    """One audit record with its line hash (the chain link) and the byte offset just past it."""

    seq: int
    hash: str
    record: Mapping[str, object]
    end: int


def line(seq: int, digest: str, record: Mapping[str, object]) -> str:
    """The note line of an audit record: when, which pass, what, the result, and the record's hash."""
    action = record.get("action")
    what = audit.summary(action) if isinstance(action, Mapping) else str(action)
    text = f"{record.get('time')} pass {record.get('pass')}: {what} -> {record.get('result')}"
    return f"{_one_line(redact.redact_text(text))} [audit {seq} {digest}]"


def noted(record: Mapping[str, object]) -> bool:
    return str(record.get("phase") or "result") in NOTED_PHASES and bool(
        _SHA.match(str(record.get("revision", "")))
    )


# --- after a pass --------------------------------------------------------------------------------------


def after_pass(config: ControllerConfig, source: GitSource, audit_path: Path) -> int:
    """Note what was recorded since the last pass; returns the lines added. Never fails the pass."""
    if not config.notes.enabled:
        return 0
    try:
        return sync(source, audit_path, config.path(config.state_dir), push=config.notes.push)
    except (OSError, errors.StagectlError) as error:
        log.warning("git notes (%s) were not written: %s", NOTES_REF, error)
        return 0


def sync(source: GitSource, audit_path: Path, state_dir: Path, *, push: bool = True) -> int:
    marker = _read_marker(state_dir)
    entries = list(_entries(audit_path, after=marker))
    added = 0
    skipped = _skipped(marker)
    by_revision: dict[str, list[Entry]] = {}
    for entry in entries:
        if noted(entry.record):
            by_revision.setdefault(str(entry.record["revision"]), []).append(entry)
    for revision, items in by_revision.items():
        if not source.has_commit(revision):
            log.warning(
                "revision %s is not a commit of %s: its audit records are not noted", revision, source.name
            )
            if revision not in skipped:
                skipped.append(revision)
            continue
        existing = source.note(NOTES_REF, revision)
        lines = [line(e.seq, e.hash, e.record) for e in items if e.hash not in existing]
        if lines:
            source.append_note(NOTES_REF, revision, "\n".join(lines))
            added += len(lines)
    unpushed = bool(marker.get("unpushed")) or (added > 0 and not source.is_local)
    pushed = marker.get("pushed") if isinstance(marker.get("pushed"), int) else _pushed(marker)
    if entries:
        marker = {"seq": entries[-1].seq, "offset": entries[-1].end}
    marker |= {"unpushed": unpushed, "skipped": skipped[-SKIPPED_KEPT:]}
    marker["pushed"] = pushed if unpushed else marker.get("seq", 0)
    _write_marker(state_dir, marker)
    if unpushed and push:
        try:
            source.push_notes(NOTES_REF)
        except errors.ExternalFailure as error:
            log.warning(
                "the git notes were written but not pushed (tried again after the next pass): %s", error
            )
        else:
            _write_marker(state_dir, marker | {"unpushed": False, "pushed": marker.get("seq", 0)})
    return added


def _pushed(marker: Mapping[str, object]) -> int | None:
    """How far a marker written before `pushed` was kept says the notes reached the repository."""
    seq = marker.get("seq")
    return seq if isinstance(seq, int) and not marker.get("unpushed") else None


@dataclass(frozen=True, slots=True)
class Written:
    """What `sync` says it wrote: every noted record through `through` has its line, but those of the
    revisions in `skipped` (not commits of the repository then)."""

    through: int
    skipped: frozenset[str]


def written(state_dir: Path) -> Written | None:
    """How far the notes were written and reached the repository; None: never (notes disabled)."""
    marker = _read_marker(state_dir)
    through = marker.get("pushed") if "pushed" in marker else _pushed(marker)
    if not isinstance(through, int):
        return None
    return Written(through, frozenset(_skipped(marker)))


def _skipped(marker: Mapping[str, object]) -> list[str]:
    found = marker.get("skipped")
    return [r for r in found if isinstance(r, str)] if isinstance(found, list) else []


def _entries(path: Path, *, after: Mapping[str, object]) -> Iterator[Entry]:
    """The records past the marker (all of them when the marker does not fit the log: a new log)."""
    seq, offset = after.get("seq"), after.get("offset")
    start_seq, start = (seq, offset) if isinstance(seq, int) and isinstance(offset, int) else (0, 0)
    if not path.exists():
        return
    if start > path.stat().st_size:
        start_seq, start = 0, 0
    with path.open("rb") as handle:
        handle.seek(start)
        position, expected = start, start_seq + 1
        for raw in handle:
            position += len(raw)
            if not raw.endswith(b"\n"):
                return  # a record being written: noted after the next pass
            try:
                record = json.loads(raw)
            except ValueError:
                return  # `stagectl audit verify` names it; nothing past it is noted
            if not isinstance(record, dict) or record.get("seq") != expected:
                if start:  # the marker is off (a log moved aside): start again from the top
                    yield from _entries(path, after={})
                return
            yield Entry(expected, audit.line_hash(raw), record, position)
            expected += 1


def _read_marker(state_dir: Path) -> dict[str, object]:
    try:
        data = json.loads((state_dir / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_marker(state_dir: Path, marker: Mapping[str, object]) -> None:
    write_atomic(state_dir / MARKER_FILE, json.dumps(dict(marker)).encode() + b"\n", mode=0o600)


def _one_line(text: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text)


# --- verify: the notes against the log ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    lines: int  # note lines checked
    problems: tuple[str, ...]  # each one sentence
    unnoted: int  # results and settlements of commits that have no note line


def check(
    audit_path: Path,
    notes: Mapping[str, str],
    *,
    noted_through: Written | None = None,
    is_commit: Callable[[str], bool] = lambda revision: True,
) -> Check:
    """Every note line's hash must be a record of the log, of the same revision, rendering to the same
    line (the same action and result); a line naming a hash the log does not hold is reported. With
    `noted_through` (the marker of the state directory), every result and settlement up to it whose
    revision is a commit of the repository must have its line: a missing one is reported."""
    records = {e.hash: e for e in _entries(audit_path, after={})}
    problems: list[str] = []
    seen: set[str] = set()
    count = 0
    for revision, text in sorted(notes.items()):
        for number, written in enumerate(text.splitlines(), start=1):
            if not written.strip():
                continue
            where = f"the note on {revision[:12]} line {number}"
            found = _TRAILER.search(written)
            if found is None:
                problems.append(f"{where} is not a stagectl note line: {_one_line(written)[:120]}")
                continue
            count += 1
            seq, digest = int(found.group(1)), found.group(2)
            entry = records.get(digest)
            if entry is None:
                problems.append(f"{where} names audit record {seq} ({digest[:12]}…), which is not in the log")
                continue
            seen.add(digest)
            if str(entry.record.get("revision")) != revision:
                problems.append(
                    f"{where} names audit record {entry.seq}, which belongs to revision "
                    f"{str(entry.record.get('revision'))[:12]}"
                )
            elif line(entry.seq, entry.hash, entry.record) != written:
                problems.append(
                    f"{where} does not say what audit record {entry.seq} says: "
                    f"{_one_line(written)[:160]!r} but the log has "
                    f"{line(entry.seq, entry.hash, entry.record)[:160]!r}"
                )
    unnoted = [e for h, e in records.items() if noted(e.record) and h not in seen]
    if noted_through is not None:
        problems += _missing(unnoted, noted_through, is_commit, noted_anywhere=bool(notes))
    return Check(count, tuple(problems), len(unnoted))


def _missing(
    unnoted: list[Entry], written: Written, is_commit: Callable[[str], bool], *, noted_anywhere: bool
) -> list[str]:
    """The records the marker says were noted and pushed whose line is not in the repository's notes."""
    commits: dict[str, bool] = {}
    missing = []
    for entry in sorted(unnoted, key=lambda e: e.seq):
        revision = str(entry.record.get("revision"))
        if entry.seq > written.through or revision in written.skipped:
            continue
        if revision not in commits:
            commits[revision] = is_commit(revision)
        if commits[revision]:
            missing.append(entry)
    if not missing:
        return []
    if not noted_anywhere:
        return [
            f"the repository has no notes, yet {len(missing)} results and settlements through audit record "
            f"{written.through} were noted: fetch them (git fetch origin {NOTES_REF}:{NOTES_REF}), or they "
            "were deleted"
        ]
    out = []
    for entry in missing[:MISSING_NAMED]:
        action = entry.record.get("action")
        what = audit.summary(action) if isinstance(action, Mapping) else str(action)
        revision = str(entry.record.get("revision"))
        out.append(
            f"audit record {entry.seq} ({_one_line(redact.redact_text(what))[:120]} -> "
            f"{_one_line(str(entry.record.get('result')))[:60]}) has no line in the note on {revision[:12]}, "
            f"though the notes were written through record {written.through}: the line was removed"
        )
    if len(missing) > MISSING_NAMED:
        out.append(f"{len(missing) - MISSING_NAMED} more records have no note line")
    return out
