"""The audit chain of a tenant in etcd: one chain across leaders, each record naming the instance that
wrote it, and a local copy in the instance's state directory that `audit verify`, the git notes and the
migration page read.

Each record is appended in a transaction fenced by the leadership key and conditioned on the chain's head
in etcd being the one this instance last wrote or read: two writers can never fork the chain. The local
copy is caught up from etcd when an instance starts to lead (and after any write it missed); a copy kept
from the single-machine mode, before coordination was switched on, is carried into etcd by the first
leader, so the chain goes on unbroken."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from controller import errors
from controller.coordination.etcd import Compare, Etcd, Put
from controller.coordination.leadership import Leadership
from controller.runtime import audit
from controller.runtime.audit import AuditLog, Break, Head, line_hash

log = logging.getLogger("stagectl.coordination")

CHUNK = 60  # records per transaction when a local chain is carried into etcd


def records_prefix(tenant_prefix: str) -> str:
    return tenant_prefix + "audit/records/"


def head_key(tenant_prefix: str) -> str:
    return tenant_prefix + "audit/head"


def _record_key(tenant_prefix: str, seq: int) -> str:
    return f"{records_prefix(tenant_prefix)}{seq:012d}"


def _head_body(head: Head) -> bytes:
    return json.dumps({"seq": head.seq, "hash": head.hash}, separators=(",", ":")).encode()


def read_shared_head(etcd: Etcd, tenant_prefix: str) -> tuple[Head | None, bytes]:
    kv = etcd.get(head_key(tenant_prefix))
    if kv is None:
        return None, b""
    return _head_of(kv.value), kv.value


def _head_of(value: bytes) -> Head:
    data = json.loads(value)
    return Head(int(data["seq"]), str(data["hash"]))


def shared_lines(etcd: Etcd, tenant_prefix: str, after: int = 0, *, revision: int = 0) -> Iterator[bytes]:
    """The chain's records in etcd (each line with its newline), from record `after + 1` on (as of
    `revision`, or now)."""
    start = records_prefix(tenant_prefix)
    for kv in etcd.prefix(start, revision=revision):
        if int(kv.key.removeprefix(start)) > after:
            yield kv.value.rstrip(b"\n") + b"\n"


def verify_shared(etcd: Etcd, tenant_prefix: str) -> Break | None:
    """The first break of the tenant's chain in etcd, or None: every record links to the one before, the
    sequence has no gap, and the newest record is the recorded head."""
    kv, revision = etcd.read(head_key(tenant_prefix))  # the head and the records at one revision: the
    head = None if kv is None else _head_of(kv.value)  # leader may append while this reads
    walked = audit.walk(
        shared_lines(etcd, tenant_prefix, revision=revision), remember=head.seq if head else None
    )
    if walked.broken is not None:
        return walked.broken
    return audit.compare_head(
        head,
        "the audit head in etcd",
        walked.newest,
        walked.newest_hash,
        walked.newest_prev,
        walked.remembered,
    )


class SharedAudit(AuditLog):
    def __init__(self, path: Path, leadership: Leadership) -> None:
        self.leadership = leadership
        self.etcd = leadership.etcd
        self.tenant_prefix = leadership.prefix
        self._stale = False
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._head_value = self._sync(path)
        super().__init__(path, instance=leadership.session.instance)

    def refresh(self) -> None:
        if self._stale:
            with self._lock:
                self._head_value = self._sync(self.path)
                self._seq, self._prev = self._tail()
            self._stale = False

    def _write(self, line: bytes) -> None:
        """The record into etcd (fenced, on the head this instance knows), then into the local copy."""
        if self._stale:
            raise errors.ExternalFailure("the audit chain is being caught up from etcd; the next pass writes")
        seq, digest = self._seq + 1, line_hash(line)
        body = _head_body(Head(seq, digest))
        on_head = self._on_head(self._head_value)
        try:
            result = self.etcd.txn(
                [*self.leadership.fence(), on_head],
                [Put(_record_key(self.tenant_prefix, seq), line), Put(head_key(self.tenant_prefix), body)],
            )
        except errors.ExternalFailure:
            self._stale = True  # applied or not, unknown: the copy is caught up before the next write
            raise
        if not result.succeeded:
            self._stale = True
            raise self.leadership.refused()
        self._head_value = body
        try:
            super()._write(line)
        except OSError as error:  # etcd holds it; the copy is behind and caught up before the next pass
            self._stale = True
            log.error("the local copy of the audit chain %s missed record %d: %s", self.path, seq, error)

    def _on_head(self, value: bytes) -> Compare:
        """The chain's head in etcd is still `value` (the one this instance wrote or read), or absent."""
        key = head_key(self.tenant_prefix)
        return Compare(key, "VALUE", value=value) if value else Compare(key, "CREATE", 0)

    def _sync(self, path: Path) -> bytes:
        """Make the local copy the chain in etcd; returns the head's value in etcd."""
        shared, value = read_shared_head(self.etcd, self.tenant_prefix)
        mine = _local_tail(path)
        theirs = shared or Head(0, audit.GENESIS)
        if mine == theirs:
            return value
        if mine is not None and mine.seq > theirs.seq and _local_hash_at(path, theirs.seq) == theirs.hash:
            return self._carry(path, theirs, value)  # the single-machine log goes on in etcd
        if mine is not None and mine.seq < theirs.seq and _shared_hash_at(self, mine.seq) == mine.hash:
            lines = list(shared_lines(self.etcd, self.tenant_prefix, after=mine.seq))
            audit.append_lines(path, lines, theirs)
            log.info("audit copy %s caught up: records %d to %d from etcd", path, mine.seq + 1, theirs.seq)
            return value
        if path.exists() and path.stat().st_size:
            aside = path.with_name(f"{path.name}.replaced-{int(time.time())}")
            path.replace(aside)
            audit.head_path(path).unlink(missing_ok=True)
            log.error(
                "the local audit copy differs from the chain in etcd: kept as %s and copied anew", aside
            )
        if theirs.seq:
            audit.append_lines(path, shared_lines(self.etcd, self.tenant_prefix), theirs)
        return value

    def _carry(self, path: Path, theirs: Head, value: bytes) -> bytes:
        lines = [raw for seq, raw in enumerate(audit.iter_lines(path), start=1) if seq > theirs.seq]
        seq = theirs.seq
        for start in range(0, len(lines), CHUNK):
            chunk = lines[start : start + CHUNK]
            operations = [
                Put(_record_key(self.tenant_prefix, seq + i + 1), raw.rstrip(b"\n"))
                for i, raw in enumerate(chunk)
            ]
            seq += len(chunk)
            body = _head_body(Head(seq, line_hash(chunk[-1])))
            result = self.etcd.txn(
                [*self.leadership.fence(), self._on_head(value)],
                [*operations, Put(head_key(self.tenant_prefix), body)],
            )
            if not result.succeeded:
                raise self.leadership.refused()
            value = body
        log.info("the local audit chain %s (records %d to %d) now goes on in etcd", path, theirs.seq + 1, seq)
        return value


def _local_tail(path: Path) -> Head | None:
    """The local copy's newest record as its head says, None when the copy is unreadable or broken."""
    if not path.exists() or path.stat().st_size == 0:
        return Head(0, audit.GENESIS)
    if audit.find_break(path) is not None:
        return None
    # The newest line, not the recorded head: a crash between a record and its head leaves the copy one
    # record ahead of the head (which find_break accepts), and that record is the tail.
    walked = audit.walk(audit.iter_lines(path))
    return Head(walked.newest, walked.newest_hash)


def _local_hash_at(path: Path, seq: int) -> str:
    if seq == 0:
        return audit.GENESIS
    for number, raw in enumerate(audit.iter_lines(path), start=1):
        if number == seq:
            return line_hash(raw)
    return ""


def _shared_hash_at(log_: SharedAudit, seq: int) -> str:
    if seq == 0:
        return audit.GENESIS
    kv = log_.etcd.get(_record_key(log_.tenant_prefix, seq))
    return "" if kv is None else line_hash(kv.value)
