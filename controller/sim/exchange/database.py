"""The simulated tenant's tables in SQLite: the schema, and a `SimState` read whole, written whole, and
written row by row (the rows its tables noted as changed), each row with the generation that wrote it."""

from __future__ import annotations

import contextlib
import gc
import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from controller.exchange.errors import PermanentError
from controller.sim.exchange import state as s

SCHEMA_VERSION = 3  # 2: batches carry their counts; 3: recipients carry IsDirSynced and SKUAssigned
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
    type       TEXT NOT NULL,
    dir_synced INTEGER NOT NULL,  -- IsDirSynced (exchange-facts §6)
    licensed   INTEGER NOT NULL   -- SKUAssigned
);
CREATE INDEX recipients_generation ON recipients (generation);
CREATE TABLE batches (
    ord        INTEGER PRIMARY KEY,
    key        TEXT NOT NULL UNIQUE,
    generation INTEGER NOT NULL,
    batch      TEXT NOT NULL,     -- the Batch without its users, as JSON
    summary    TEXT NOT NULL      -- its users counted by status and its latest sync, as JSON
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
CREATE INDEX users_key ON users (key);  -- the batches an address is a user of
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
    "INSERT INTO recipients (key, generation, address, type, dir_synced, licensed) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET generation = excluded.generation, address = excluded.address, "
    "type = excluded.type, dir_synced = excluded.dir_synced, licensed = excluded.licensed"
)
SELECT_USERS = "SELECT batch, key, identity, status, error, last_sync, seq, due, duplicate FROM users"
SCALARS = {name for name in s.SimState.model_fields if name not in ("recipients", "batches")}


def missing(path: Path) -> PermanentError:
    return PermanentError(f"simulator state {path} does not exist; create it with `stagectl sim init`")


def not_a_database(path: Path, error: sqlite3.DatabaseError) -> PermanentError:
    return PermanentError(
        f"simulator state {path} is not a simulator database ({error}); a JSON state of an older "
        "stagectl is not read: create the tenant again with `stagectl sim init`"
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def tenant_json(state: s.SimState) -> str:
    return state.model_dump_json(include=SCALARS)


def batch_json(batch: s.Batch) -> str:
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


def user_from_row(row: Sequence[Any]) -> s.User:
    """A user from its row (columns 2 on of SELECT_USERS), built without validation: the store wrote it."""
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


RECIPIENT_COLUMNS = "address, type, dir_synced, licensed"


def recipient_from_row(address: str, kind: str, dir_synced: int, licensed: int) -> s.Recipient:
    return s.Recipient.from_store(
        {"address": address, "type": _TYPES[kind], "dir_synced": bool(dir_synced), "licensed": bool(licensed)}
    )


def recipient_values(key: str, generation: int, recipient: s.Recipient) -> tuple[object, ...]:
    return (
        key,
        generation,
        recipient.address,
        recipient.type.value,
        int(recipient.dir_synced),
        int(recipient.licensed),
    )


def summary_json(summary: s.Summary) -> str:
    return json.dumps(
        {
            "total": summary.total,
            "by_status": {status.value: count for status, count in summary.by_status.items() if count},
            "last_sync": _iso(summary.last_sync),
        },
        sort_keys=True,
    )


def summary_from_json(text: str) -> s.Summary:
    data = json.loads(text)
    return s.Summary(
        total=data["total"],
        by_status={_STATUSES[status]: count for status, count in data["by_status"].items()},
        last_sync=None if data["last_sync"] is None else datetime.fromisoformat(data["last_sync"]),
    )


def note_removed(db: sqlite3.Connection, generation: int, kind: str, batch: str, key: str) -> None:
    db.execute(
        "INSERT INTO removed (generation, kind, batch, key) VALUES (?, ?, ?, ?)",
        (generation, kind, batch, key),
    )


def insert_batch(
    db: sqlite3.Connection, generation: int, key: str, batch: s.Batch, text: str, summary: str
) -> None:
    db.execute(
        "INSERT INTO batches (key, generation, batch, summary) VALUES (?, ?, ?, ?)",
        (key, generation, text, summary),
    )
    db.executemany(
        _UPSERT_USER,
        [(key, address, generation, *_user_values(user)) for address, user in batch.users.items()],
    )


def write_users(db: sqlite3.Connection, generation: int, batch_key: str, users: s.Members) -> None:
    for address in users.deleted:  # gone, or deleted and set again: either way its old row goes
        db.execute("DELETE FROM users WHERE batch = ? AND key = ?", (batch_key, address))
        note_removed(db, generation, "user", batch_key, address)
    if users.changed:
        db.executemany(
            _UPSERT_USER,
            [(batch_key, address, generation, *_user_values(users[address])) for address in users.changed],
        )


def write_recipients(db: sqlite3.Connection, generation: int, recipients: s.Recipients) -> None:
    for key in recipients.deleted:
        db.execute("DELETE FROM recipients WHERE key = ?", (key,))
        note_removed(db, generation, "recipient", "", key)
    if recipients.changed:
        rows = ((key, recipients[key]) for key in recipients.changed)
        db.executemany(_UPSERT_RECIPIENT, [recipient_values(key, generation, row) for key, row in rows])


def forget_changes(state: s.SimState) -> None:
    state.recipients.forget_changes()
    for batch in state.batches.values():
        batch.users.forget_changes()


def open_database(path: Path, *, create: bool) -> sqlite3.Connection:
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
        raise not_a_database(path, error) from None
    return db


def tenant_row(db: sqlite3.Connection, path: Path) -> tuple[str, int, str]:
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        row = db.execute("SELECT token, generation, state FROM tenant").fetchone() if version else None
    except sqlite3.DatabaseError as error:
        raise not_a_database(path, error) from None
    if version != SCHEMA_VERSION or row is None:
        raise PermanentError(
            f"simulator state {path} has schema {version}, not {SCHEMA_VERSION}; create it again with "
            "`stagectl sim init`"
        )
    return row[0], row[1], row[2]


@dataclass
class Reads:
    """What a process read of a tenant: whole (the tenant row and the batch rows), caught up (the rows
    other transactions wrote since), and rows read as they were needed."""

    whole: int = 0
    caught_up: int = 0
    batches_of_users: int = 0  # batches whose users were read
    recipients: int = 0  # recipient rows read


Connect = Callable[[], sqlite3.Connection]


class _BatchUsers:
    """A batch's users in the database, read all at once (`Members.reads_whole`)."""

    def __init__(self, connect: Connect, batch_key: str, reads: Reads) -> None:
        self.connect, self.batch_key, self.reads = connect, batch_key, reads

    def one(self, key: str) -> s.User | None:
        row = self.connect().execute(f"{SELECT_USERS} WHERE batch = ? AND key = ?", (self.batch_key, key))
        found = row.fetchone()
        return None if found is None else user_from_row(found)

    def every(self) -> Iterator[tuple[str, s.User]]:
        self.reads.batches_of_users += 1
        rows = self.connect().execute(f"{SELECT_USERS} WHERE batch = ? ORDER BY ord", (self.batch_key,))
        with _collector_paused():
            return iter([(row[1], user_from_row(row)) for row in rows])


class _Directory:
    """The recipients in the database, read by key as they are asked for, or all at once."""

    def __init__(self, connect: Connect, reads: Reads) -> None:
        self.connect, self.reads = connect, reads

    def one(self, key: str) -> s.Recipient | None:
        self.reads.recipients += 1
        found = (
            self.connect()
            .execute(f"SELECT {RECIPIENT_COLUMNS} FROM recipients WHERE key = ?", (key,))
            .fetchone()
        )
        return None if found is None else recipient_from_row(*found)

    def every(self) -> Iterator[tuple[str, s.Recipient]]:
        rows = (
            self.connect().execute(f"SELECT key, {RECIPIENT_COLUMNS} FROM recipients ORDER BY ord").fetchall()
        )
        self.reads.recipients += len(rows)
        with _collector_paused():
            return iter([(row[0], recipient_from_row(*row[1:])) for row in rows])


def read_lazily(connect: Connect, reads: Reads) -> s.SimState:
    """The tenant row and the batch rows with their counts; users and recipients are read as they are
    needed, through `connect`'s connection (in the transaction of the moment)."""
    db = connect()
    reads.whole += 1
    (text,) = db.execute("SELECT state FROM tenant").fetchone()
    state = s.SimState.model_validate_json(text)
    state.recipients.read_later(_Directory(connect, reads))
    state.recipients.recording = True
    batches = s.Batches()
    batches.recording = True
    for key, batch_text, summary in db.execute("SELECT key, batch, summary FROM batches ORDER BY ord"):
        batches[key] = unread_batch(connect, reads, key, batch_text, summary)
    batches.unread_holders = lambda address: [
        key for (key,) in connect().execute("SELECT batch FROM users WHERE key = ?", (address,))
    ]
    state.batches = batches
    return state


def unread_batch(connect: Connect, reads: Reads, key: str, text: str, summary: str) -> s.Batch:
    batch = s.Batch.model_validate_json(text)
    batch.users.read_later(_BatchUsers(connect, key, reads), summary_from_json(summary))
    return batch


def read_tenant(db: sqlite3.Connection) -> s.SimState:
    """The whole tenant, read at once in the transaction the caller holds (for a tenant of its own)."""
    with _collector_paused():
        (text,) = db.execute("SELECT state FROM tenant").fetchone()
        state = s.SimState.model_validate_json(text)
        recipients = s.Recipients()
        recipients.load(
            (row[0], recipient_from_row(*row[1:]))
            for row in db.execute(f"SELECT key, {RECIPIENT_COLUMNS} FROM recipients ORDER BY ord")
        )
        loaded: dict[str, s.Batch] = {}
        for key, batch_text in db.execute("SELECT key, batch FROM batches ORDER BY ord"):
            loaded[key] = s.Batch.model_validate_json(batch_text)  # counted again from its users
        users: dict[str, list[tuple[str, s.User]]] = {key: [] for key in loaded}
        for row in db.execute(f"{SELECT_USERS} ORDER BY ord"):
            users[row[0]].append((row[1], user_from_row(row)))
        for key, batch in loaded.items():
            batch.users.load(users[key])
        batches = s.Batches.from_dict(loaded)  # after the users: the index of who holds what is built once
    state.recipients, state.batches = recipients, batches
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


def write_tenant(db: sqlite3.Connection, state: s.SimState) -> None:
    """Replace everything in the database by `state`, with a new token (processes read it afresh)."""
    for table in _TABLES:
        db.execute(f"DROP TABLE IF EXISTS {table}")
    for statement in filter(str.strip, _SCHEMA.split(";")):
        db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    db.execute(
        "INSERT INTO tenant (id, token, generation, state) VALUES (1, ?, 1, ?)",
        (uuid.uuid4().hex, tenant_json(state)),
    )
    db.executemany(
        _UPSERT_RECIPIENT,
        [recipient_values(key, 1, recipient) for key, recipient in state.recipients.items()],
    )
    for key, batch in state.batches.items():
        insert_batch(db, 1, key, batch, batch_json(batch), summary_json(batch.users.summary()))
