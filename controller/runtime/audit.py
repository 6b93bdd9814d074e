"""The append-only JSONL audit log: hash-chained, fsynced records of what the controller did.

Each action leaves an `intent` record, written and fsynced before it is sent, and then a `result`
record; an intent the process died with in flight is closed by a `settled` record once an observation
has told whether its effect is there. The three are tied by the pass number and the action's key.
Records written before issue 14 have no `phase`: they are results."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from controller import errors, redact
from controller.model.snapshot import at

AUDIT_FILE = "audit.jsonl"
HEAD_SUFFIX = ".head"
GENESIS = "0" * 64
_TAIL_CHUNK = 64 * 1024


class Describable(Protocol):
    def as_data(self) -> dict[str, object]: ...


@dataclass(frozen=True, slots=True)
class Break:
    """Where the chain first fails: the record that was altered, removed or is unreadable, and how."""

    seq: int
    reason: str


def path_in(state_dir: Path) -> Path:
    return state_dir / AUDIT_FILE


def head_path(path: Path) -> Path:
    """Where the log's head is anchored: `audit.head` beside `audit.jsonl`."""
    return path.with_suffix(HEAD_SUFFIX)


@dataclass(frozen=True, slots=True)
class Head:
    """The newest record as the writer last recorded it, kept outside the log so the tail can be checked."""

    seq: int
    hash: str


def read_head(path: Path) -> Head | None:
    """The recorded head of the log at `path`, or None when there is none; unreadable raises ValueError."""
    try:
        raw = head_path(path).read_bytes()
    except FileNotFoundError:
        return None
    data = json.loads(raw)
    seq, digest = data["seq"], data["hash"]
    if not isinstance(seq, int) or seq < 0 or not isinstance(digest, str) or len(digest) != 64:
        raise ValueError("not a head record")
    return Head(seq, digest)


def write_head(path: Path, head: Head) -> None:
    """Replace the head atomically: a temporary file, fsynced, renamed over the old one, directory fsynced."""
    target = head_path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    body = json.dumps({"seq": head.seq, "hash": head.hash}, separators=(",", ":")).encode() + b"\n"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        try:
            _write_all(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except OSError:
        temporary.unlink(missing_ok=True)  # a full disk leaves no stray file behind
        raise
    directory = os.open(target.parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def check_head(
    path: Path, newest: int, newest_hash: str, newest_prev: str, hash_at_head: str | None = None
) -> Break | None:
    """Whether the log's newest record (seq, line hash, its `prev`) agrees with the recorded head.

    The writer fsyncs a record before it records the head, so a crash between the two leaves the log exactly
    one record ahead of a head that this record chains to: that is accepted (the next append repairs the
    head). `hash_at_head` is the line hash of the record at the head's seq when the caller has read it.
    """
    try:
        head = read_head(path)
    except (OSError, ValueError, KeyError, TypeError):
        return Break(max(newest, 1), f"the recorded head {head_path(path).name} is unreadable")
    return compare_head(head, head_path(path).name, newest, newest_hash, newest_prev, hash_at_head)


def compare_head(
    head: Head | None,
    name: str,
    newest: int,
    newest_hash: str,
    newest_prev: str,
    hash_at_head: str | None = None,
) -> Break | None:
    """`check_head` against a head already read (`name` says where it is kept)."""
    if head is None:
        if newest == 0 or (newest == 1 and newest_prev == GENESIS):
            return None
        return Break(
            newest,
            f"record {newest} (the newest) has no recorded head ({name} is missing): "
            "an edit or removal of the newest records cannot be ruled out",
        )
    if newest == head.seq and newest_hash == head.hash:
        return None
    if newest == head.seq + 1 and newest_prev == head.hash:
        return None  # the crash window: the record was written, its head not yet
    if newest < head.seq:
        ends = f"ends at record {newest}" if newest else "has no records"
        return Break(
            newest + 1,
            f"record {newest + 1} is missing: the log {ends} but the recorded head is record {head.seq} "
            "(the newest records were removed or the log was truncated)",
        )
    if newest == head.seq:
        return Break(
            newest, f"record {newest} (the newest) does not match the recorded head: edited or removed"
        )
    if hash_at_head is not None and hash_at_head != head.hash:
        return Break(
            head.seq,
            f"record {head.seq} was changed after it was written (it does not match the recorded head)",
        )
    return Break(
        head.seq + 1,
        f"the recorded head is record {head.seq} but the log goes on to record {newest}: "
        "the head is stale (restored from an older copy?) or records were added by another writer",
    )


def line_hash(line: bytes) -> str:
    """The chain link: sha256 of a record's line as written, without its newline."""
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


class AuditLog:
    """Appends records; one writer per state directory (the state lock), serialised across threads."""

    def __init__(self, path: Path, *, instance: str | None = None) -> None:
        self.path = path
        self.instance = instance  # coordinated mode: each record names the instance that wrote it
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._last: dict[str, object] | None = None
        self._seq, self._prev = self._tail()

    def _tail(self) -> tuple[int, str]:
        """The last record's seq and line hash, read from the end so a long log opens quickly.

        Refuses a log whose newest record disagrees with the recorded head: appending to it would chain
        new records onto an edited one and hide the edit.
        """
        seq, digest, prev = self._read_tail()
        found = check_head(self.path, seq, digest, prev)
        if found is not None:
            raise errors.ExternalFailure(
                f"the audit log {self.path}: {found.reason}; run `stagectl audit verify` before the "
                "controller writes to it again (`stagectl audit anchor` records the head of an intact log "
                "that has none)"
            )
        return seq, digest

    def _read_tail(self) -> tuple[int, str, str]:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return 0, GENESIS, GENESIS
        with self.path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            data = b""
            position = size
            while position > 0 and data.count(b"\n") < 2:
                step = min(_TAIL_CHUNK, position)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
        if not data.endswith(b"\n"):
            raise errors.ExternalFailure(
                f"the audit log {self.path} ends with an incomplete record; run `stagectl audit verify` "
                "and move the log aside before the controller writes to it again"
            )
        last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        try:
            record = json.loads(last)
            seq, prev = int(record["seq"]), str(record["prev"])
            self._last = record if isinstance(record, dict) else None
        except (ValueError, KeyError, TypeError) as error:
            raise errors.ExternalFailure(
                f"the audit log {self.path} ends with an unreadable record; run `stagectl audit verify`"
            ) from error
        return seq, line_hash(last), prev

    def append(
        self,
        *,
        revision: str,
        author: str,
        action: Describable | Mapping[str, object],
        result: str,
        duration_ms: int,
        time: datetime,
        phase: str = "result",
        pass_id: int | None = None,
        key: str | None = None,
    ) -> dict[str, object]:
        """Write one record, flushed and fsynced before returning, then record it as the head; the action
        is recorded redacted.

        `phase` is "intent" (before the action is sent; `result` "sending"), "result" ("ok" or
        "error: <one sentence>") or "settled" ("settled: applied|not applied: <what was observed>").
        """
        data = dict(action) if isinstance(action, Mapping) else action.as_data()
        with self._lock:
            record: dict[str, object] = {
                "seq": self._seq + 1,
                "time": at(time),
                "revision": revision,
                "author": redact.redact_text(author),
                **({"instance": self.instance} if self.instance else {}),
                "phase": phase,
                "pass": pass_id,
                "key": key,
                "action": redact.redact_data(data),
                "result": redact.redact_text(result),
                "duration_ms": int(duration_ms),
                "prev": self._prev,
            }
            line = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            try:
                self._write(line)
            except OSError as error:
                raise errors.ExternalFailure(
                    f"the audit log {self.path} cannot be written: {error.strerror or error}"
                ) from None
            self._seq, self._prev = self._seq + 1, line_hash(line)
            self._last = record
        return record

    def _write(self, line: bytes) -> None:
        """Append the line and record it as the head, or leave the log as it was: a full disk may take
        half a line, or the line and not the new head (the log would then be ahead of its head and, at the
        second time, refused as written by another hand); either is cut back before the error is raised."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fd).st_size
            try:
                _write_all(fd, line + b"\n")
                os.fsync(fd)
                write_head(self.path, Head(self._seq + 1, line_hash(line)))
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                    os.fsync(fd)
                raise
        finally:
            os.close(fd)

    def refresh(self) -> None:
        """Before each pass; a log kept elsewhere too (coordination) catches its local copy up here."""

    @property
    def head(self) -> Head:
        with self._lock:
            return Head(self._seq, self._prev)

    def recorded_result(self, pass_id: int, key: str) -> str | None:
        """The result of this action when it is the newest record: the process died after recording it
        in the log and before closing its journal row (the log is written first)."""
        last = self._last or {}
        newest = (last.get("phase"), last.get("pass"), last.get("key"))
        result = str(last.get("result"))
        if newest != ("result", pass_id, key) or result.startswith("unknown:"):
            return None  # an unknown result (the answer lost) is settled by observation
        return result


def append_lines(path: Path, lines: Iterable[bytes], head: Head) -> None:
    """Append records already chained elsewhere (a copy caught up), fsynced, then record `head`."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, b"".join(line.rstrip(b"\n") + b"\n" for line in lines))
        os.fsync(fd)
    finally:
        os.close(fd)
    write_head(path, head)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def iter_lines(path: Path) -> Iterator[bytes]:
    if not path.exists():
        return
    with path.open("rb") as handle:
        yield from handle


def find_break(path: Path) -> Break | None:
    """The first record where the chain fails, or None when every record links to the one before and the
    newest record matches the recorded head."""
    try:
        head = read_head(path)
    except (OSError, ValueError, KeyError, TypeError):
        head = None  # check_head names it
    walked = walk(iter_lines(path), remember=head.seq if head is not None else None)
    if walked.broken is not None:
        return walked.broken
    return check_head(path, walked.newest, walked.newest_hash, walked.newest_prev, walked.remembered)


@dataclass(frozen=True, slots=True)
class Walk:
    broken: Break | None
    newest: int = 0
    newest_hash: str = GENESIS
    newest_prev: str = GENESIS
    remembered: str | None = None


def walk(lines: Iterable[bytes], remember: int | None = None) -> Walk:
    """The chain's first break over `lines` (each as written, newline included); else the newest record's
    seq, line hash and `prev`, and the line hash of record `remember`."""
    prev_line: bytes | None = None
    expected_prev = GENESIS
    newest, newest_prev, remembered = 0, GENESIS, None
    for seq, raw in enumerate(lines, start=1):
        if not raw.endswith(b"\n"):
            return Walk(Break(seq, f"record {seq} is incomplete (the write was interrupted)"))
        line = raw.rstrip(b"\n")
        try:
            record = json.loads(line)
            recorded_seq, recorded_prev = record["seq"], record["prev"]
        except (ValueError, KeyError, TypeError):
            return Walk(Break(seq, f"record {seq} is not a readable audit record"))
        if recorded_seq != seq:
            return Walk(
                Break(seq, f"record {seq} is missing or out of place (found seq {recorded_seq} there)")
            )
        if recorded_prev != expected_prev:
            if prev_line is None:
                return Walk(Break(seq, f"record {seq} does not start the chain"))
            # The hash this record holds no longer matches the line before it: that line was changed.
            return Walk(
                Break(
                    seq - 1,
                    f"record {seq - 1} was changed after it was written (record {seq} does not match it)",
                )
            )
        prev_line, expected_prev = line, line_hash(line)
        newest, newest_prev = seq, recorded_prev
        if seq == remember:
            remembered = expected_prev
    return Walk(None, newest, expected_prev, newest_prev, remembered)


def verify(path: Path) -> int | None:
    """The seq of the first broken record, or None when the chain is intact."""
    found = find_break(path)
    return None if found is None else found.seq


def anchor(path: Path) -> Head:
    """Record the head of a log whose chain is intact (one written before the head was kept, or whose head
    was lost); refuses a broken chain. Returns the head recorded."""
    walked = walk(iter_lines(path))
    if walked.broken is not None:
        raise errors.InvalidInput(
            f"the audit log {path}: {walked.broken.reason}; not anchoring a broken chain"
        )
    head = Head(walked.newest, walked.newest_hash)
    write_head(path, head)
    return head


def count(path: Path) -> int:
    return sum(1 for _ in iter_lines(path))


def show(path: Path, revision: str | None = None) -> list[dict[str, object]]:
    """The records, or only those of one revision (a full sha or an unambiguous prefix of at least 4)."""
    if revision is not None and len(revision) < 4:
        raise errors.InvalidInput("give at least 4 characters of the revision")
    records: list[dict[str, object]] = []
    for seq, raw in enumerate(iter_lines(path), start=1):
        try:
            record = json.loads(raw)
        except ValueError as error:
            raise errors.InvalidInput(
                f"audit record {seq} of {path} is unreadable; run `stagectl audit verify`"
            ) from error
        if revision is None or str(record.get("revision", "")).startswith(revision.lower()):
            records.append(record)
    return records


def summary(action: Mapping[str, object]) -> str:
    """One line for people: the cmdlet or the DNS change, and the object."""
    if action.get("cmdlet"):
        return f"{action['cmdlet']} {action.get('object', '')}".strip()
    if action.get("system") == "dns":
        return f"dns {action.get('object', '')} ttl {action.get('ttl')} {action.get('values')}"
    return str(action.get("event") or action.get("object") or json.dumps(action, sort_keys=True))
