"""The simulated tenant in one SQLite database shared by processes, and the `CmdletRunner` over it.

Design: one row per recipient, per batch and per migration user, and one `tenant` row for the rest (clock,
endpoints, faults, call counts) as JSON. Each process keeps the tenant it last read in memory, per
database, with the database's `generation`. A transaction (BEGIN IMMEDIATE: one writer at a time, across
processes and threads; WAL, so readers never wait; a busy timeout, so writers queue) reads the generation:
the same, the kept tenant is current; newer, only the rows written since are read again (each row carries
the generation that wrote it; deletions leave a row in `removed`). The call runs on the kept tenant, whose
tables note the rows it changed (`tables.Table`), and only those rows are written, with the next
generation. Why this and not rows loaded on demand: the cmdlet handlers and the engine stay plain Python
over one `SimState`, as they are for the in-memory `ExchangeSimulator`, and a long-lived process (the
PSRP gateway, the demo, a test) pays for reading the tenant once, not per call; a new process pays one
full read (about a second at 200,000 users), not a parse and rewrite of the whole tenant per call.

An exception other than a refused cmdlet rolls the transaction back and drops the kept tenant; the next
transaction reads it afresh. `load()` is a full read into a tenant of its own. The state file is SQLite
whatever its name; `stagectl sim export` prints the tenant as the JSON of `ExchangeSimulator.to_json()`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from controller.exchange.errors import ExchangeError, PermanentError
from controller.exchange.runner import CmdletOutput, project
from controller.sim.exchange import state as s
from controller.sim.exchange.simulator import ExchangeSimulator

SCHEMA_VERSION = 1
BUSY_TIMEOUT_SECONDS = 60.0  # a writer waits this long for another process's transaction
_TABLES = ("tenant", "recipients", "batches", "users", "removed")
_SCHEMA = """
CREATE TABLE tenant (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    token      TEXT NOT NULL,     -- new at every create: a kept tenant of another database is dropped
    generation INTEGER NOT NULL,  -- one more per transaction that wrote
    state      TEXT NOT NULL      -- the SimState without recipients and batches, as JSON
);
CREATE TABLE recipients (
    ord        INTEGER PRIMARY KEY,  -- insertion order, as the dict keeps it
    key        TEXT NOT NULL UNIQUE,
    generation INTEGER NOT NULL,
    address    TEXT NOT NULL,
    type       TEXT NOT NULL
);
CREATE INDEX recipients_generation ON recipients (generation);
CREATE TABLE batches (
    ord        INTEGER PRIMARY KEY,
    key        TEXT NOT NULL UNIQUE,
    generation INTEGER NOT NULL,
    batch      TEXT NOT NULL      -- the Batch without its users, as JSON
);
CREATE INDEX batches_generation ON batches (generation);
CREATE TABLE users (
    ord        INTEGER PRIMARY KEY,  -- CSV order within a batch
    batch      TEXT NOT NULL,
    key        TEXT NOT NULL,
    generation INTEGER NOT NULL,
    identity   TEXT NOT NULL,
    status     TEXT NOT NULL,
    error      TEXT NOT NULL,
    last_sync  TEXT,
    seq        INTEGER NOT NULL,
    due        TEXT,
    duplicate  INTEGER NOT NULL,
    UNIQUE (batch, key)
);
CREATE INDEX users_generation ON users (generation);
CREATE TABLE removed (
    generation INTEGER NOT NULL,
    kind       TEXT NOT NULL,     -- recipient, batch (with its users) or user
    batch      TEXT NOT NULL,     -- the user's batch, or '' for the others
    key        TEXT NOT NULL
);
CREATE INDEX removed_generation ON removed (generation);
"""
USER_COLUMNS = ("identity", "status", "error", "last_sync", "seq", "due", "duplicate")
_UPSERT_USER = (
    "INSERT INTO users (batch, key, generation, identity, status, error, last_sync, seq, due, duplicate) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (batch, key) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in ("generation", *USER_COLUMNS))
)
_UPSERT_RECIPIENT = (
    "INSERT INTO recipients (key, generation, address, type) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET generation = excluded.generation, address = excluded.address, "
    "type = excluded.type"
)
_SELECT_USERS = "SELECT batch, key, identity, status, error, last_sync, seq, due, duplicate FROM users"
_SCALARS = {name for name in s.SimState.model_fields if name not in ("recipients", "batches")}


def _missing(path: Path) -> PermanentError:
    return PermanentError(f"simulator state {path} does not exist; create it with `stagectl sim init`")


def _not_a_database(path: Path, error: sqlite3.DatabaseError) -> PermanentError:
    return PermanentError(
        f"simulator state {path} is not a simulator database ({error}); a JSON state of an older "
        "stagectl is not read: create the tenant again with `stagectl sim init`"
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _tenant_json(state: s.SimState) -> str:
    return state.model_dump_json(include=_SCALARS)


def _batch_json(batch: s.Batch) -> str:
    return batch.model_dump_json(exclude={"users"})


def _user_values(user: s.User) -> tuple[object, ...]:
    return (
        user.identity,
        user.status.value,
        user.error,
        _iso(user.last_sync),
        user.seq,
        _iso(user.due),
        int(user.duplicate),
    )


_STATUSES = {status.value: status for status in s.UserStatus}
_TYPES = {kind.value: kind for kind in s.RecipientType}


def _user(row: Sequence[Any]) -> s.User:
    """A user from its row (columns 2 on of _SELECT_USERS), built without validation: the store wrote it."""
    return s.User.from_store(
        {
            "identity": row[2],
            "status": _STATUSES[row[3]],
            "error": row[4],
            "last_sync": None if row[5] is None else datetime.fromisoformat(row[5]),
            "seq": row[6],
            "due": None if row[7] is None else datetime.fromisoformat(row[7]),
            "duplicate": bool(row[8]),
        }
    )


def _recipient(address: str, kind: str) -> s.Recipient:
    return s.Recipient.from_store({"address": address, "type": _TYPES[kind]})


@dataclass
class Reads:
    """How this process's transactions found the tenant they kept: read whole, or caught up."""

    whole: int = 0
    caught_up: int = 0


class _Kept:
    """One process's connection to one database and the tenant it last read from it, with its generation.

    `batch_rows` holds, per batch key, the batch object and the JSON its row holds, so a transaction writes
    the rows of the batches that changed and knows a batch replaced by another object.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()  # one transaction at a time in this process
        self.pid = os.getpid()
        self.db: sqlite3.Connection | None = None
        self.inode: tuple[int, int] | None = None
        self.state: s.SimState | None = None
        self.token = ""
        self.generation = 0
        self.tenant_json = ""
        self.batch_rows: dict[str, tuple[s.Batch, str]] = {}
        self.reads = Reads()

    def connect(self) -> sqlite3.Connection:
        """The connection, opened again when the file at the path is not the one it was opened on."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise _missing(self.path) from None
        inode = (stat.st_dev, stat.st_ino)
        if self.db is None or inode != self.inode:
            self.close()
            self.db = _open(self.path, create=False)
            self.inode = inode
        return self.db

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
        self.db, self.inode = None, None
        self.forget()

    def forget(self) -> None:
        self.state, self.token, self.generation, self.batch_rows = None, "", 0, {}

    def current(self, db: sqlite3.Connection) -> s.SimState:
        """The tenant as the database holds it: the kept one, brought up to date, or read whole."""
        token, generation, tenant_json = _tenant_row(db, self.path)
        if self.state is None or token != self.token or generation < self.generation:
            self.reads.whole += 1
            self.state = _read(db, recording=True)
            self.tenant_json = tenant_json
            self.batch_rows = {key: (b, _batch_json(b)) for key, b in self.state.batches.items()}
        elif generation != self.generation:
            self.reads.caught_up += 1
            self._catch_up(db, self.state, tenant_json)
        self.token, self.generation = token, generation
        return self.state

    def _catch_up(self, db: sqlite3.Connection, state: s.SimState, tenant_json: str) -> None:
        """Read again what other transactions wrote since this process's generation."""
        since = (self.generation,)
        for kind, batch_key, key in db.execute(
            "SELECT kind, batch, key FROM removed WHERE generation > ? ORDER BY rowid", since
        ):
            if kind == "recipient":
                state.recipients.pop(key, None)
            elif kind == "batch":
                state.batches.pop(key, None)
                self.batch_rows.pop(key, None)
            elif (holder := state.batches.get(batch_key)) is not None:
                holder.users.pop(key, None)
        if tenant_json != self.tenant_json:
            fresh = s.SimState.model_validate_json(tenant_json)
            for name in _SCALARS:
                setattr(state, name, getattr(fresh, name))
            self.tenant_json = tenant_json
        for key, text in db.execute(
            "SELECT key, batch FROM batches WHERE generation > ? ORDER BY ord", since
        ):
            fresh_batch = s.Batch.model_validate_json(text)
            batch = state.batches.get(key)
            if batch is None:
                state.batches[key] = batch = fresh_batch
            else:
                for name in s.Batch.model_fields:
                    if name != "users":
                        setattr(batch, name, getattr(fresh_batch, name))
            self.batch_rows[key] = (batch, text)
        for row in db.execute(f"{_SELECT_USERS} WHERE generation > ? ORDER BY ord", since):
            state.batches[row[0]].users[row[1]] = _user(row)
        for key, address, kind in db.execute(
            "SELECT key, address, type FROM recipients WHERE generation > ? ORDER BY ord", since
        ):
            state.recipients[key] = _recipient(address, kind)
        _forget_changes(state)

    def write(self, db: sqlite3.Connection, state: s.SimState) -> None:
        """Write the rows that changed since the tenant was read or last written, with the next generation."""
        generation = self.generation + 1
        written = db.total_changes
        batches = state.batches
        for key, (batch, _) in list(self.batch_rows.items()):
            if batches.get(key) is not batch:  # removed, or replaced by another batch
                db.execute("DELETE FROM users WHERE batch = ?", (key,))
                db.execute("DELETE FROM batches WHERE key = ?", (key,))
                _removed(db, generation, "batch", "", key)
                del self.batch_rows[key]
        for key, batch in batches.items():
            kept = self.batch_rows.get(key)
            text = _batch_json(batch)
            if kept is None:
                _insert_batch(db, generation, key, batch, text)
                self.batch_rows[key] = (batch, text)
                continue
            if text != kept[1]:
                db.execute(
                    "UPDATE batches SET generation = ?, batch = ? WHERE key = ?", (generation, text, key)
                )
                self.batch_rows[key] = (batch, text)
            _write_users(db, generation, key, batch.users)
        _write_recipients(db, generation, state.recipients)
        text = _tenant_json(state)
        if text != self.tenant_json or db.total_changes != written:
            db.execute("UPDATE tenant SET generation = ?, state = ?", (generation, text))
            self.tenant_json, self.generation = text, generation
        _forget_changes(state)


def _removed(db: sqlite3.Connection, generation: int, kind: str, batch: str, key: str) -> None:
    db.execute(
        "INSERT INTO removed (generation, kind, batch, key) VALUES (?, ?, ?, ?)",
        (generation, kind, batch, key),
    )


def _insert_batch(db: sqlite3.Connection, generation: int, key: str, batch: s.Batch, text: str) -> None:
    db.execute("INSERT INTO batches (key, generation, batch) VALUES (?, ?, ?)", (key, generation, text))
    db.executemany(
        _UPSERT_USER,
        [(key, address, generation, *_user_values(user)) for address, user in batch.users.items()],
    )


def _write_users(db: sqlite3.Connection, generation: int, batch_key: str, users: s.Members) -> None:
    for address in users.deleted:  # gone, or deleted and set again: either way its old row goes
        db.execute("DELETE FROM users WHERE batch = ? AND key = ?", (batch_key, address))
        _removed(db, generation, "user", batch_key, address)
    if users.changed:
        db.executemany(
            _UPSERT_USER,
            [(batch_key, address, generation, *_user_values(users[address])) for address in users.changed],
        )


def _write_recipients(db: sqlite3.Connection, generation: int, recipients: s.Recipients) -> None:
    for key in recipients.deleted:
        db.execute("DELETE FROM recipients WHERE key = ?", (key,))
        _removed(db, generation, "recipient", "", key)
    if recipients.changed:
        rows = ((key, recipients[key]) for key in recipients.changed)
        db.executemany(
            _UPSERT_RECIPIENT, [(key, generation, row.address, row.type.value) for key, row in rows]
        )


def _forget_changes(state: s.SimState) -> None:
    state.recipients.forget_changes()
    for batch in state.batches.values():
        batch.users.forget_changes()


def _open(path: Path, *, create: bool) -> sqlite3.Connection:
    mode = "rwc" if create else "rw"
    db = sqlite3.connect(
        f"file:{quote(str(path))}?mode={mode}",
        uri=True,
        timeout=BUSY_TIMEOUT_SECONDS,
        isolation_level=None,  # transactions are ours: BEGIN IMMEDIATE ... COMMIT
        check_same_thread=False,  # used by one thread at a time, under _Kept.lock
    )
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # WAL: a crashed process loses nothing committed
    except sqlite3.DatabaseError as error:
        db.close()
        raise _not_a_database(path, error) from None
    return db


def _tenant_row(db: sqlite3.Connection, path: Path) -> tuple[str, int, str]:
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        row = db.execute("SELECT token, generation, state FROM tenant").fetchone() if version else None
    except sqlite3.DatabaseError as error:
        raise _not_a_database(path, error) from None
    if version != SCHEMA_VERSION or row is None:
        raise PermanentError(
            f"simulator state {path} has schema {version}, not {SCHEMA_VERSION}; create it again with "
            "`stagectl sim init`"
        )
    return row[0], row[1], row[2]


def _read(db: sqlite3.Connection, *, recording: bool) -> s.SimState:
    """The whole tenant, read in the transaction the caller holds."""
    with _collector_paused():
        (text,) = db.execute("SELECT state FROM tenant").fetchone()
        state = s.SimState.model_validate_json(text)
        # One loop per table, the rows built inline: the per-row function calls were a third of the time.
        recipient, types = s.Recipient.from_store, _TYPES
        recipients = s.Recipients()
        recipients.load(
            (key, recipient({"address": address, "type": types[kind]}))
            for key, address, kind in db.execute("SELECT key, address, type FROM recipients ORDER BY ord")
        )
        loaded: dict[str, s.Batch] = {}
        for key, batch_text in db.execute("SELECT key, batch FROM batches ORDER BY ord"):
            loaded[key] = s.Batch.model_validate_json(batch_text)
        users: dict[str, list[tuple[str, s.User]]] = {key: [] for key in loaded}
        user, statuses, moment = s.User.from_store, _STATUSES, datetime.fromisoformat
        for batch_key, key, identity, status, error, last_sync, seq, due, duplicate in db.execute(
            f"{_SELECT_USERS} ORDER BY ord"
        ):
            fields = {
                "identity": identity,
                "status": statuses[status],
                "error": error,
                "last_sync": None if last_sync is None else moment(last_sync),
                "seq": seq,
                "due": None if due is None else moment(due),
                "duplicate": bool(duplicate),
            }
            users[batch_key].append((key, user(fields)))
        for key, batch in loaded.items():
            batch.users.load(users[key])
        batches = s.Batches(loaded)  # after the users: the index of who holds what is built once
    state.recipients, state.batches = recipients, batches
    if recording:
        recipients.recording = True
        batches.record()
    return state


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Reading 400,000 rows makes as many objects: the cyclic garbage collector, run again and again on
    the growing heap, doubled the time. They are all live; collect once afterwards, as usual."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _write_all(db: sqlite3.Connection, state: s.SimState) -> None:
    """Replace everything in the database by `state`, with a new token (processes read it afresh)."""
    for table in _TABLES:
        db.execute(f"DROP TABLE IF EXISTS {table}")
    for statement in filter(str.strip, _SCHEMA.split(";")):
        db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    db.execute(
        "INSERT INTO tenant (id, token, generation, state) VALUES (1, ?, 1, ?)",
        (uuid.uuid4().hex, _tenant_json(state)),
    )
    db.executemany(
        _UPSERT_RECIPIENT,
        [(key, 1, recipient.address, recipient.type.value) for key, recipient in state.recipients.items()],
    )
    for key, batch in state.batches.items():
        _insert_batch(db, 1, key, batch, _batch_json(batch))


_KEPT: dict[Path, _Kept] = {}
_KEPT_LOCK = threading.Lock()


def _kept(path: Path) -> _Kept:
    """This process's connection and tenant for the database at `path` (a forked child starts afresh)."""
    resolved = path.resolve()
    with _KEPT_LOCK:
        kept = _KEPT.get(resolved)
        if kept is None or kept.pid != os.getpid():
            kept = _KEPT[resolved] = _Kept(resolved)
        return kept


class SimStore:
    """The simulator's SQLite database, shared by processes and threads; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.rows_written = 0  # rows inserted, updated or deleted by this store's last transaction

    @property
    def reads(self) -> Reads:
        """This process's reads of the tenant at this path so far (for tests and benchmarks)."""
        return _kept(self.path).reads

    def create(self, simulator: ExchangeSimulator) -> None:
        """Write a new tenant, replacing any state at the path (a JSON state of an older stagectl too)."""
        kept = _kept(self.path)
        with kept.lock:
            kept.close()
            try:
                db = _open(self.path, create=True)
            except PermanentError:  # not SQLite: an old JSON state file
                for stale in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
                    stale.unlink(missing_ok=True)
                db = _open(self.path, create=True)
            try:
                db.execute("BEGIN IMMEDIATE")
                before = db.total_changes
                _write_all(db, simulator.state)
                self.rows_written = db.total_changes - before
                db.execute("COMMIT")
            finally:
                db.close()

    def load(self) -> ExchangeSimulator:
        """The tenant as it is now, read whole into a simulator of its own; changes to it are not saved."""
        kept = _kept(self.path)
        with kept.lock:
            db = kept.connect()
            db.execute("BEGIN")  # one snapshot of every table
            try:
                _tenant_row(db, self.path)
                return ExchangeSimulator(_read(db, recording=False))
            finally:
                db.execute("COMMIT")

    def now(self) -> datetime:
        """The tenant's virtual time (one row read)."""
        kept = _kept(self.path)
        with kept.lock:
            _, _, text = _tenant_row(kept.connect(), self.path)
        moment = json.loads(text)["now"]
        return datetime.fromisoformat(moment)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[ExchangeSimulator]:
        """Yield the tenant; write the rows that changed; an unexpected exception discards the changes."""
        kept = _kept(self.path)
        with kept.lock:
            db = kept.connect()
            db.execute("BEGIN IMMEDIATE")
            try:
                state = kept.current(db)
                simulator = ExchangeSimulator(state)
                yield simulator
                before = db.total_changes
                if simulator.state is state:
                    kept.write(db, state)
                else:  # the caller put another tenant in: it replaces this one whole
                    _write_all(db, simulator.state)
                    kept.forget()
                self.rows_written = db.total_changes - before
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                kept.forget()
                raise


class SimRunner:
    """`CmdletRunner` over a `SimStore`: each call is one transaction, so processes never lose updates."""

    def __init__(self, path: str | os.PathLike[str], *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = SimStore(path)
        self._sleep = sleep

    def run(
        self, cmdlet: str, parameters: Mapping[str, object], select: Sequence[str] = ()
    ) -> list[dict[str, object]]:
        error: ExchangeError | None = None
        output = CmdletOutput()
        with self.store.transaction() as simulator:
            latency = simulator.state.latency_seconds
            try:
                output = simulator.call(cmdlet, parameters)
            except ExchangeError as refused:  # the call is still counted: keep the transaction
                error = refused
        if latency > 0:
            self._sleep(latency)  # outside the lock: a slow call must not stall other processes
        if error is not None:
            raise error
        return project(output, select)

    def close(self) -> None:
        pass
