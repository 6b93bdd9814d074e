"""The state directory's SQLite database: memory, revisions, per-object status, open drift, action journal."""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller import errors, redact
from controller.model.actions import Action
from controller.model.snapshot import Memory, at

DATABASE_FILE = "state.sqlite"
SCHEMA_VERSION = 2  # 2: the `progress` table. Every statement below is IF NOT EXISTS: an older database
# gains the new tables when it is opened (`_migrate`), and keeps what it holds.
# Progress samples are thinned, not dropped (record_progress): every sample of the newest PROGRESS_ALL, one
# an hour (the first of each clock hour) up to PROGRESS_HOURLY, one a day beyond; the first sample of each
# status and member count is always kept (the page's "since", the forecast's runs). PROGRESS_HOURLY is
# longer than the forecast's 24 h window, so the window always has its span; PROGRESS_KEPT bounds the rows
# of a batch (at a minute: 60 + 47 + one a day, over a year).
PROGRESS_ALL = timedelta(hours=1)
PROGRESS_HOURLY = timedelta(hours=48)
PROGRESS_KEPT = 500

_ALERT_COLUMNS = "fingerprint, object, desired, observed, opened_at"
_ACTION_COLUMNS = "revision, pass_id, action_key, action, started_at, finished_at, result"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS object_status (
    object     TEXT PRIMARY KEY,
    desired    TEXT,
    observed   TEXT,
    phase      TEXT NOT NULL,
    message    TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS open_alerts (
    fingerprint TEXT PRIMARY KEY,
    object      TEXT NOT NULL,
    desired     TEXT,
    observed    TEXT,
    opened_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS actions (
    revision    TEXT NOT NULL,
    pass_id     INTEGER NOT NULL,
    action_key  TEXT NOT NULL,
    action      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    result      TEXT,
    PRIMARY KEY (revision, pass_id, action_key)
);
CREATE TABLE IF NOT EXISTS progress (
    batch       TEXT NOT NULL,
    observed_at REAL NOT NULL,
    status      TEXT NOT NULL,
    synced      INTEGER NOT NULL,
    failed      INTEGER NOT NULL,
    total       INTEGER NOT NULL,
    PRIMARY KEY (batch, observed_at)
);
"""


@dataclass(frozen=True, slots=True)
class Revisions:
    attempted: str | None = None  # the newest revision a pass started on
    applied: str | None = None  # the newest revision whose pass finished without error
    good: str | None = None  # the newest valid revision: served while a newer one is invalid
    refused: str | None = None  # the newest invalid or refused revision…
    refused_reason: str | None = None  # …and why, one sentence


# `object` is the column's name; inside these classes it hides the builtin type, hence `builtins.object`.


@dataclass(frozen=True, slots=True)
class ObjectStatus:
    object: str
    desired: builtins.object
    observed: builtins.object
    phase: str
    message: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class OpenAlert:
    fingerprint: str
    object: str
    desired: builtins.object
    observed: builtins.object
    opened_at: datetime


@dataclass(frozen=True, slots=True)
class ActionRecord:
    revision: str
    pass_id: int
    action_key: str
    action: dict[str, object]  # redacted `as_data()`
    started_at: datetime
    finished_at: datetime | None
    result: str | None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


@dataclass(frozen=True, slots=True)
class ProgressSample:
    """One batch's counts as one pass observed them: the forecast's throughput is measured on these."""

    batch: str  # the batch's name, lower-cased
    observed_at: datetime
    status: str
    synced: int  # synced and finalized users
    failed: int
    total: int


# What another instance may have written: a new leader takes these from the shared copy (coordination).
SHARED_SETTINGS = (
    "memory",
    "pass",
    "revision.attempted",
    "revision.applied",
    "revision.good",
    "revision.refused",
    "revision.refused_reason",
)
StatusRow = tuple[str, str | None, str | None, str, str, str]  # object, desired, observed, phase, message, at
AlertRow = tuple[str, str, str | None, str | None, str]  # fingerprint, object, desired, observed, opened at
IntentRow = tuple[str, int, str, str, str]  # revision, pass, action key, action, started at


@dataclass(frozen=True, slots=True)
class SharedRows:
    """The shared part of the state, as stored text: settings, object statuses, open alerts, open intents."""

    settings: Mapping[str, str]
    statuses: list[StatusRow]
    alerts: list[AlertRow]
    intents: list[IntentRow]


def status_row(
    object: str, desired: object, observed: object, *, phase: str, message: str, now: datetime
) -> StatusRow:
    return (object, _data(desired), _data(observed), phase, redact.redact_text(message), at(now))


def alert_row(fingerprint: str, object: str, desired: object, observed: object, now: datetime) -> AlertRow:
    return (fingerprint, object, _data(desired), _data(observed), at(now))


def intent_row(revision: str, pass_id: int, key: str, action: Action, now: datetime) -> IntentRow:
    return (revision, pass_id, key, _data(action.as_data()) or "{}", at(now))


def action_key(action: Action) -> str:
    """A stable identity for an action: sha256 of its canonical data (secrets are references there)."""
    return hashlib.sha256(_canonical(action.as_data()).encode()).hexdigest()


class Store:
    """One connection per process, shared by its threads under a lock; every write is a transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(path, timeout=10.0, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: an action recorded as started survives a power cut, so it is never silently issued twice.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as error:
            raise errors.ExternalFailure(f"the state database {path} cannot be opened: {error}") from error

    @classmethod
    def open(cls, state_dir: Path) -> Store:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(state_dir / DATABASE_FILE)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def refresh(self) -> None:
        """Before each pass; a store kept elsewhere too (coordination) re-reads what it may have missed."""

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise errors.InvalidInput(
                f"the state database {self.path} was written by a newer stagectl (schema {version})"
            )
        if version == SCHEMA_VERSION:
            return
        with self._transaction() as db:
            # Statement by statement: executescript() would commit the surrounding transaction.
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. A database that cannot be written (locked past the timeout by another
        process, a full disk, an I/O error) is the state directory failing: one clear error, the
        transaction rolled back, nothing half-written."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise self._failure("written", error) from None
            try:
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                self._rollback()
                raise self._failure("written", error) from None
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def _failure(self, doing: str, error: sqlite3.Error) -> errors.ExternalFailure:
        return errors.ExternalFailure(f"the state database {self.path} cannot be {doing}: {error}")

    def _query(self, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, parameters).fetchall()
            except sqlite3.Error as error:
                raise self._failure("read", error) from None

    # --- settings: memory and revisions ----------------------------------------------------------

    def _get(self, name: str) -> str | None:
        rows = self._query("SELECT value FROM settings WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def _set(self, db: sqlite3.Connection, name: str, value: str | None) -> None:
        if value is None:
            db.execute("DELETE FROM settings WHERE name = ?", (name,))
        else:
            db.execute(
                "INSERT INTO settings (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, value),
            )

    def load_memory(self) -> Memory:
        text = self._get("memory")
        return Memory() if text is None else Memory.model_validate_json(text)

    def save_memory(self, memory: Memory) -> None:
        with self._transaction() as db:
            self._set(db, "memory", memory.model_dump_json())

    def revisions(self) -> Revisions:
        return Revisions(
            attempted=self._get("revision.attempted"),
            applied=self._get("revision.applied"),
            good=self._get("revision.good"),
            refused=self._get("revision.refused"),
            refused_reason=self._get("revision.refused_reason"),
        )

    def record_attempted(self, revision: str) -> None:
        with self._transaction() as db:
            self._set(db, "revision.attempted", revision)

    def record_good(self, revision: str) -> None:
        """`revision` loaded and validated: it becomes the one served; an older refusal is forgotten."""
        with self._transaction() as db:
            self._set(db, "revision.good", revision)
            self._set(db, "revision.refused", None)
            self._set(db, "revision.refused_reason", None)

    def record_refused(self, revision: str, reason: str) -> None:
        """`revision` is invalid or its signature refused; the last good revision keeps being served."""
        with self._transaction() as db:
            self._set(db, "revision.refused", revision)
            self._set(db, "revision.refused_reason", redact.redact_text(reason))

    def record_applied(self, revision: str, memory: Memory | None = None) -> None:
        """A pass on `revision` finished; the plan's memory is saved in the same transaction."""
        with self._transaction() as db:
            self._set(db, "revision.applied", revision)
            if memory is not None:
                self._set(db, "memory", memory.model_dump_json())

    def next_pass(self) -> int:
        """A new pass number, strictly increasing across restarts."""
        with self._transaction() as db:
            current = int(self._get("pass") or 0) + 1
            self._set(db, "pass", str(current))
        return current

    def pass_number(self) -> int:
        """The number of the newest pass (0 before the first)."""
        return int(self._get("pass") or 0)

    def has_action(self, *, revision: str, pass_id: int, key: str) -> bool:
        rows = self._query(
            "SELECT 1 FROM actions WHERE revision = ? AND pass_id = ? AND action_key = ?",
            (revision, pass_id, key),
        )
        return bool(rows)

    def has_alert(self, fingerprint: str) -> bool:
        return bool(self._query("SELECT 1 FROM open_alerts WHERE fingerprint = ?", (fingerprint,)))

    def shared_rows(self) -> SharedRows:
        """The shared part of the state as stored (what `adopt` takes): carried into etcd when coordination
        is switched on for a tenant this database served alone."""
        names = ", ".join("?" * len(SHARED_SETTINGS))
        settings = self._query(f"SELECT name, value FROM settings WHERE name IN ({names})", SHARED_SETTINGS)
        statuses = self._query(
            "SELECT object, desired, observed, phase, message, updated_at FROM object_status"
        )
        alerts = self._query(f"SELECT {_ALERT_COLUMNS} FROM open_alerts")
        intents = self._query(
            "SELECT revision, pass_id, action_key, action, started_at FROM actions WHERE finished_at IS NULL"
        )
        return SharedRows(
            settings={str(name): str(value) for name, value in settings},
            statuses=[_row(row) for row in statuses],  # type: ignore[misc]
            alerts=[_row(row) for row in alerts],  # type: ignore[misc]
            intents=[(str(r), int(str(p)), str(k), str(a), str(s)) for r, p, k, a, s in intents],
        )

    def adopt(self, rows: SharedRows, *, now: datetime, closed: str) -> None:
        """Replace the shared part of the state with `rows` in one transaction (a new leader takes what
        the one before left). An intent open here and not in `rows` was settled by another instance: it is
        closed with `closed`; the rest of this database (the progress samples, finished actions) stays."""
        with self._transaction() as db:
            db.executemany("DELETE FROM settings WHERE name = ?", [(name,) for name in SHARED_SETTINGS])
            db.executemany(
                "INSERT INTO settings (name, value) VALUES (?, ?)",
                [(name, value) for name, value in rows.settings.items() if name in SHARED_SETTINGS],
            )
            db.execute("DELETE FROM object_status")
            db.executemany(
                "INSERT INTO object_status (object, desired, observed, phase, message, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows.statuses,
            )
            db.execute("DELETE FROM open_alerts")
            db.executemany(f"INSERT INTO open_alerts ({_ALERT_COLUMNS}) VALUES (?, ?, ?, ?, ?)", rows.alerts)
            still_open = {(revision, pass_id, key) for revision, pass_id, key, _, _ in rows.intents}
            for revision, pass_id, key in db.execute(
                "SELECT revision, pass_id, action_key FROM actions WHERE finished_at IS NULL"
            ).fetchall():
                if (revision, pass_id, key) not in still_open:
                    db.execute(
                        "UPDATE actions SET finished_at = ?, result = ? "
                        "WHERE revision = ? AND pass_id = ? AND action_key = ?",
                        (at(now), closed, revision, pass_id, key),
                    )
            db.executemany(
                "INSERT INTO actions (revision, pass_id, action_key, action, started_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(revision, pass_id, action_key) "
                "DO UPDATE SET finished_at = NULL, result = NULL",
                rows.intents,
            )

    # --- per-object status -----------------------------------------------------------------------

    def set_status(
        self, object: str, *, desired: object, observed: object, phase: str, message: str, now: datetime
    ) -> None:
        self.set_statuses([(object, desired, observed)], phase=phase, message=message, now=now)

    def set_statuses(
        self, rows: Iterable[tuple[str, object, object]], *, phase: str, message: str, now: datetime
    ) -> None:
        """(object, desired, observed) rows in one transaction: one fsync a pass, not one per object."""
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO object_status (object, desired, observed, phase, message, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(object) DO UPDATE SET desired = excluded.desired, "
                "observed = excluded.observed, phase = excluded.phase, message = excluded.message, "
                "updated_at = excluded.updated_at",
                [
                    status_row(obj, desired, observed, phase=phase, message=message, now=now)
                    for obj, desired, observed in rows
                ],
            )

    def remove_status(self, object: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM object_status WHERE object = ?", (object,))

    def statuses(
        self, *, objects: Collection[str] | None = None, phase: str | None = None
    ) -> list[ObjectStatus]:
        """Every object's row, or only those of `objects` and/or in `phase` (a pass loads the rows it
        compares, not the baselines of finished work)."""
        sql = "SELECT object, desired, observed, phase, message, updated_at FROM object_status"
        where: list[str] = []
        parameters: list[object] = []
        if objects is not None:
            wanted = sorted(objects)
            if not wanted:
                return []
            where.append(f"object IN ({', '.join('?' * len(wanted))})")
            parameters += wanted
        if phase is not None:
            where.append("phase = ?")
            parameters.append(phase)
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._query(sql + " ORDER BY object", tuple(parameters))
        return [
            ObjectStatus(
                object=str(obj),
                desired=_load(desired),
                observed=_load(observed),
                phase=str(phase),
                message=str(message),
                updated_at=_time(updated),
            )
            for obj, desired, observed, phase, message, updated in rows
        ]

    def fingerprints(self, objects: Collection[str]) -> dict[str, str]:
        """The desired fingerprint each of these objects' drift baseline was taken with (none: absent),
        without loading the baselines themselves."""
        wanted = sorted(objects)
        if not wanted:
            return {}
        rows = self._query(
            f"SELECT object, desired FROM object_status WHERE object IN ({', '.join('?' * len(wanted))}) "
            "AND phase = 'baseline'",
            tuple(wanted),
        )
        return {str(obj): str(_load(desired)) for obj, desired in rows}

    # --- drift alerts ----------------------------------------------------------------------------

    def open_alert(
        self, fingerprint: str, *, object: str, desired: object = None, observed: object = None, now: datetime
    ) -> bool:
        """Record an open drift; True only the first time, so its alert is sent once (across restarts)."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO open_alerts (fingerprint, object, desired, observed, opened_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(fingerprint) DO NOTHING",
                alert_row(fingerprint, object, desired, observed, now),
            )
            return cursor.rowcount == 1

    def close_alert(self, fingerprint: str) -> OpenAlert | None:
        """Forget a drift that cleared; returns it when it was open (send the "cleared" alert), else None."""
        with self._transaction() as db:
            row = db.execute(
                f"SELECT {_ALERT_COLUMNS} FROM open_alerts WHERE fingerprint = ?",
                (fingerprint,),
            ).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM open_alerts WHERE fingerprint = ?", (fingerprint,))
            return _alert(row)

    def open_alerts(self) -> list[OpenAlert]:
        rows = self._query(f"SELECT {_ALERT_COLUMNS} FROM open_alerts ORDER BY opened_at, object")
        return [_alert(row) for row in rows]

    # --- the action journal ----------------------------------------------------------------------

    def record_action_started(
        self, *, revision: str, pass_id: int, key: str, action: Action, now: datetime
    ) -> bool:
        """Journal an action's intent before it is sent (one transaction, fsynced); False if this pass
        already started it (do not send again).

        The object is marked `acted` in the same transaction: should the process die with the action in
        flight, what it changed is ours, and the next pass re-takes the drift baseline instead of
        reporting it as drift."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO actions (revision, pass_id, action_key, action, started_at) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(revision, pass_id, action_key) DO NOTHING",
                intent_row(revision, pass_id, key, action, now),
            )
            if cursor.rowcount != 1:
                return False
            db.execute(
                "INSERT INTO object_status (object, desired, observed, phase, message, updated_at) "
                "VALUES (?, ?, ?, 'acted', 'sent', ?) ON CONFLICT(object) DO UPDATE SET "
                "desired = excluded.desired, observed = excluded.observed, phase = excluded.phase, "
                "message = excluded.message, updated_at = excluded.updated_at",
                (action.object, _data(""), _data({}), at(now)),
            )
            return True

    def record_action_finished(
        self,
        *,
        revision: str,
        pass_id: int,
        key: str,
        result: str,
        now: datetime,
        memory: Memory | None = None,
    ) -> None:
        """Close the action's journal row; `memory` its outcome taught is saved in the same transaction."""
        with self._transaction() as db:
            if memory is not None:
                self._set(db, "memory", memory.model_dump_json())
            cursor = db.execute(
                "UPDATE actions SET finished_at = ?, result = ? "
                "WHERE revision = ? AND pass_id = ? AND action_key = ?",
                (at(now), redact.redact_text(result), revision, pass_id, key),
            )
            if cursor.rowcount != 1:
                raise ValueError(f"action {key[:12]} of pass {pass_id} was never recorded as started")

    def actions(self, *, revision: str | None = None, pass_id: int | None = None) -> list[ActionRecord]:
        sql = f"SELECT {_ACTION_COLUMNS} FROM actions"
        clauses: list[str] = []
        parameters: list[object] = []
        if revision is not None:
            clauses.append("revision = ?")
            parameters.append(revision)
        if pass_id is not None:
            clauses.append("pass_id = ?")
            parameters.append(pass_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(sql + where + " ORDER BY pass_id, started_at, rowid", tuple(parameters))
        return [_action(row) for row in rows]

    def unfinished_actions(self) -> list[ActionRecord]:
        """Actions started but never finished: the process died while they were in flight."""
        rows = self._query(
            f"SELECT {_ACTION_COLUMNS} FROM actions WHERE finished_at IS NULL "
            "ORDER BY pass_id, started_at, rowid"
        )
        return [_action(row) for row in rows]

    # --- progress samples: per pass, the counts of each batch (the forecast's throughput) ---------

    def record_progress(self, samples: Iterable[ProgressSample]) -> None:
        """Add the samples of one pass in one transaction, and thin the older samples of each batch."""
        rows = [
            (s.batch.lower(), s.observed_at.timestamp(), s.status, s.synced, s.failed, s.total)
            for s in samples
        ]
        if not rows:
            return
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO progress (batch, observed_at, status, synced, failed, total) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(batch, observed_at) DO UPDATE SET "
                "status = excluded.status, synced = excluded.synced, failed = excluded.failed, "
                "total = excluded.total",
                rows,
            )
            for batch in sorted({row[0] for row in rows}):
                kept = db.execute(
                    "SELECT observed_at, status, total FROM progress WHERE batch = ? ORDER BY observed_at",
                    (batch,),
                ).fetchall()
                db.executemany(
                    "DELETE FROM progress WHERE batch = ? AND observed_at = ?",
                    [(batch, observed) for observed in _thinned(kept)],
                )

    def progress(self, batches: Collection[str]) -> dict[str, list[ProgressSample]]:
        """The samples of these batches (by name, any case), oldest first; a batch without any is absent."""
        wanted = sorted({b.lower() for b in batches})
        if not wanted:
            return {}
        rows = self._query(
            "SELECT batch, observed_at, status, synced, failed, total FROM progress "
            f"WHERE batch IN ({', '.join('?' * len(wanted))}) ORDER BY batch, observed_at",
            tuple(wanted),
        )
        found: dict[str, list[ProgressSample]] = {}
        for batch, observed, status, synced, failed, total in rows:
            found.setdefault(str(batch), []).append(
                ProgressSample(
                    batch=str(batch),
                    observed_at=datetime.fromtimestamp(float(str(observed)), UTC),
                    status=str(status),
                    synced=int(str(synced)),
                    failed=int(str(failed)),
                    total=int(str(total)),
                )
            )
        return found


def _thinned(rows: list[tuple[float, str, int]]) -> list[float]:
    """The times of the samples to drop (rows oldest first: time, status, total). Kept: the first sample
    of each status and member count, every one of the newest PROGRESS_ALL, the first of each clock hour
    up to PROGRESS_HOURLY and of each day beyond; then at most PROGRESS_KEPT, the newest. A sample kept
    once stays kept as it ages, until it is the oldest of a day or passes the bound."""
    if not rows:
        return []
    newest = rows[-1][0]
    every, hourly = PROGRESS_ALL.total_seconds(), PROGRESS_HOURLY.total_seconds()
    kept: list[float] = []
    dropped: list[float] = []
    buckets: set[tuple[int, int]] = set()
    previous: tuple[str, int] | None = None
    for observed, status, total in rows:
        age = newest - observed
        bucket = (0, int(observed // 3600)) if age <= hourly else (1, int(observed // 86400))
        if (status, total) != previous or age <= every or bucket not in buckets:
            kept.append(observed)
            buckets.add(bucket)
        else:
            dropped.append(observed)
        previous = (status, total)
    return dropped + kept[:-PROGRESS_KEPT]


def _row(row: tuple[object, ...]) -> tuple[str | None, ...]:
    return tuple(None if cell is None else str(cell) for cell in row)


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _data(value: object) -> str | None:
    """Data as stored: redacted JSON (None stays NULL, meaning unknown)."""
    return None if value is None else _canonical(redact.redact_data(value))


def _load(text: object) -> object:
    return None if text is None else json.loads(str(text))


def _time(text: object) -> datetime:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(UTC)


def _alert(row: tuple[object, ...] | sqlite3.Row) -> OpenAlert:
    fingerprint, obj, desired, observed, opened = row
    return OpenAlert(str(fingerprint), str(obj), _load(desired), _load(observed), _time(opened))


def _action(row: tuple[object, ...]) -> ActionRecord:
    revision, pass_id, key, action, started, finished, result = row
    data = _load(action)
    return ActionRecord(
        revision=str(revision),
        pass_id=int(str(pass_id)),
        action_key=str(key),
        action=data if isinstance(data, dict) else {},
        started_at=_time(started),
        finished_at=None if finished is None else _time(finished),
        result=None if result is None else str(result),
    )


def as_mapping(revisions: Revisions) -> Mapping[str, str | None]:
    """Revisions as plain data, for `stagectl status --format json`."""
    return {
        "attempted": revisions.attempted,
        "applied": revisions.applied,
        "good": revisions.good,
        "refused": revisions.refused,
        "refusedReason": revisions.refused_reason,
    }
