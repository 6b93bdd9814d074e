"""The append-only JSONL audit log: one hash-chained, fsynced record per action the controller took."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from controller import errors, redact
from controller.snapshot import at

AUDIT_FILE = "audit.jsonl"
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


def line_hash(line: bytes) -> str:
    """The chain link: sha256 of a record's line as written, without its newline."""
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


class AuditLog:
    """Appends records; one writer per state directory (the state lock), serialised across threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._seq, self._prev = self._tail()

    def _tail(self) -> tuple[int, str]:
        """The last record's seq and line hash, read from the end so a long log opens quickly."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return 0, GENESIS
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
            seq = int(json.loads(last)["seq"])
        except (ValueError, KeyError, TypeError) as error:
            raise errors.ExternalFailure(
                f"the audit log {self.path} ends with an unreadable record; run `stagectl audit verify`"
            ) from error
        return seq, line_hash(last)

    def append(
        self,
        *,
        revision: str,
        author: str,
        action: Describable | Mapping[str, object],
        result: str,
        duration_ms: int,
        time: datetime,
    ) -> dict[str, object]:
        """Write one record, flushed and fsynced before returning; the action is recorded redacted.

        `result` is "ok" or "error: <one sentence>".
        """
        data = dict(action) if isinstance(action, Mapping) else action.as_data()
        with self._lock:
            record: dict[str, object] = {
                "seq": self._seq + 1,
                "time": at(time),
                "revision": revision,
                "author": redact.redact_text(author),
                "action": redact.redact_data(data),
                "result": redact.redact_text(result),
                "duration_ms": int(duration_ms),
                "prev": self._prev,
            }
            line = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, line + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            self._seq, self._prev = self._seq + 1, line_hash(line)
        return record


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _lines(path: Path) -> Iterator[bytes]:
    if not path.exists():
        return
    with path.open("rb") as handle:
        yield from handle


def find_break(path: Path) -> Break | None:
    """The first record where the chain fails, or None when every record links to the one before."""
    prev_line: bytes | None = None
    expected_prev = GENESIS
    for seq, raw in enumerate(_lines(path), start=1):
        if not raw.endswith(b"\n"):
            return Break(seq, f"record {seq} is incomplete (the write was interrupted)")
        line = raw.rstrip(b"\n")
        try:
            record = json.loads(line)
            recorded_seq, recorded_prev = record["seq"], record["prev"]
        except (ValueError, KeyError, TypeError):
            return Break(seq, f"record {seq} is not a readable audit record")
        if recorded_seq != seq:
            return Break(seq, f"record {seq} is missing or out of place (found seq {recorded_seq} there)")
        if recorded_prev != expected_prev:
            if prev_line is None:
                return Break(seq, f"record {seq} does not start the chain")
            # The hash this record holds no longer matches the line before it: that line was changed.
            return Break(
                seq - 1, f"record {seq - 1} was changed after it was written (record {seq} does not match it)"
            )
        prev_line, expected_prev = line, line_hash(line)
    return None


def verify(path: Path) -> int | None:
    """The seq of the first broken record, or None when the chain is intact."""
    found = find_break(path)
    return None if found is None else found.seq


def count(path: Path) -> int:
    return sum(1 for _ in _lines(path))


def show(path: Path, revision: str | None = None) -> list[dict[str, object]]:
    """The records, or only those of one revision (a full sha or an unambiguous prefix of at least 4)."""
    if revision is not None and len(revision) < 4:
        raise errors.InvalidInput("give at least 4 characters of the revision")
    records: list[dict[str, object]] = []
    for seq, raw in enumerate(_lines(path), start=1):
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
