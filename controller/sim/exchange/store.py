"""The simulated tenant in one SQLite database shared by processes, and the `CmdletRunner` over it.

Design: a row per recipient, per batch (with its users' counts) and per migration user, and one `tenant`
row for the rest (clock, endpoints, faults, call counts) as JSON; database.py has the tables. Each process
keeps the tenant in memory, per database, with the database's `generation`, and reads it lazily: the
tenant row and the batch rows first, a batch's users when a call first needs them (to list them, to
change them, to move them), a recipient when first looked up. A transaction (BEGIN IMMEDIATE: one writer
at a time, across processes and threads; WAL, so readers never wait; a busy timeout, so writers queue)
reads the generation: the same, the kept tenant is current; newer, only the rows written since are read
again (each row carries the generation that wrote it; deletions leave a row in `removed`). The call runs
on the kept tenant, whose tables note the rows it changes (`tables.Table`), and only those rows are
written, with the next generation.

Why: the cmdlet handlers and the engine stay plain Python over one `SimState`, as for the in-memory
`ExchangeSimulator`; a call costs what it reads and changes, not the tenant (a Get-MigrationBatch of 100
batches reads no user, in a new process too); a long-lived process (the PSRP gateway, the demo, a test)
reads a row once and keeps it while no other process changes it.

An exception other than a refused cmdlet rolls the transaction back and drops the kept tenant; the next
transaction reads it afresh. `load()` is a whole read into a tenant of its own. The state file is SQLite
whatever its name; `stagectl sim export` prints the tenant as the JSON of `ExchangeSimulator.to_json()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from controller import faults
from controller.exchange.errors import ExchangeError, PermanentError
from controller.exchange.runner import CmdletOutput, project
from controller.sim.exchange import database, params
from controller.sim.exchange import state as s
from controller.sim.exchange.simulator import ExchangeSimulator


class _Kept:
    """One process's connection to one database and the tenant it last read from it, with its generation.

    `batch_rows` holds, per batch key, the batch object and the JSON its row holds (the batch, its counts),
    so a transaction writes the rows of the batches that changed and knows a batch replaced by another.
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
        self.batch_rows: dict[str, tuple[s.Batch, str, str]] = {}
        self.reads = database.Reads()

    def connect(self) -> sqlite3.Connection:
        """The connection, opened again when the file at the path is not the one it was opened on."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise database.missing(self.path) from None
        inode = (stat.st_dev, stat.st_ino)
        if self.db is None or inode != self.inode:
            self.close()
            self.db = database.open_database(self.path, create=False)
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
        token, generation, tenant_json = database.tenant_row(db, self.path)
        if self.state is None or token != self.token or generation < self.generation:
            self.state = database.read_lazily(self.connection, self.reads)
            self.tenant_json = tenant_json
            self.batch_rows = {
                key: (batch, database.batch_json(batch), database.summary_json(batch.users.summary()))
                for key, batch in self.state.batches.items()
            }
        elif generation != self.generation:
            self.reads.caught_up += 1
            try:
                self._catch_up(db, self.state, tenant_json)
            except (KeyError, ValueError):  # rows that do not fit the kept tenant: read it whole
                self.forget()
                return self.current(db)
        self.token, self.generation = token, generation
        return self.state

    def connection(self) -> sqlite3.Connection:
        """The open connection, for the rows of the kept tenant read as they are needed."""
        if self.db is None:
            raise PermanentError(f"simulator state {self.path}: read outside a transaction")
        return self.db

    def _catch_up(self, db: sqlite3.Connection, state: s.SimState, tenant_json: str) -> None:
        """Read again what other transactions wrote since this process's generation."""
        since = (self.generation,)
        for kind, batch_key, key in db.execute(
            "SELECT kind, batch, key FROM removed WHERE generation > ? ORDER BY rowid", since
        ):
            if kind == "recipient":
                state.recipients.stored(key, None)
            elif kind == "batch":
                state.batches.pop(key, None)
                self.batch_rows.pop(key, None)
            elif (holder := state.batches.get(batch_key)) is not None:
                holder.users.stored(key, None)
        if tenant_json != self.tenant_json:
            fresh = s.SimState.model_validate_json(tenant_json)
            for name in database.SCALARS:
                setattr(state, name, getattr(fresh, name))
            self.tenant_json = tenant_json
        for key, text, summary in db.execute(
            "SELECT key, batch, summary FROM batches WHERE generation > ? ORDER BY ord", since
        ):
            batch = state.batches.get(key)
            if batch is None:
                state.batches[key] = batch = database.unread_batch(
                    self.connection, self.reads, key, text, summary
                )
            else:
                fresh_batch = s.Batch.model_validate_json(text)
                for name in s.Batch.model_fields:
                    if name != "users":
                        setattr(batch, name, getattr(fresh_batch, name))
                if batch.users.pending:
                    batch.users.read_later_still(database.summary_from_json(summary))
            self.batch_rows[key] = (batch, text, summary)
        for row in db.execute(f"{database.SELECT_USERS} WHERE generation > ? ORDER BY ord", since):
            users = state.batches[row[0]].users
            users.stored(row[1], None if users.pending else database.user_from_row(row))
        for row in db.execute(
            f"SELECT key, {database.RECIPIENT_COLUMNS} FROM recipients WHERE generation > ? ORDER BY ord",
            since,
        ):
            state.recipients.stored(row[0], database.recipient_from_row(*row[1:]))
        database.forget_changes(state)

    def write(self, db: sqlite3.Connection, state: s.SimState) -> None:
        """Write the rows that changed since the tenant was read or last written, with the next generation."""
        generation = self.generation + 1
        written = db.total_changes
        batches = state.batches
        for key, (batch, _, _) in list(self.batch_rows.items()):
            if batches.get(key) is not batch:  # removed, or replaced by another batch
                db.execute("DELETE FROM users WHERE batch = ?", (key,))
                db.execute("DELETE FROM batches WHERE key = ?", (key,))
                database.note_removed(db, generation, "batch", "", key)
                del self.batch_rows[key]
        for key, batch in batches.items():
            kept = self.batch_rows.get(key)
            users = batch.users
            text = database.batch_json(batch)
            if kept is None:
                summary = database.summary_json(users.summary())
                database.insert_batch(db, generation, key, batch, text, summary)
                self.batch_rows[key] = (batch, text, summary)
                continue
            summary = kept[2]
            if users.changed or users.deleted:
                summary = database.summary_json(users.summary())
            if (text, summary) != kept[1:]:
                db.execute(
                    "UPDATE batches SET generation = ?, batch = ?, summary = ? WHERE key = ?",
                    (generation, text, summary, key),
                )
                self.batch_rows[key] = (batch, text, summary)
            database.write_users(db, generation, key, users)
        database.write_recipients(db, generation, state.recipients)
        text = database.tenant_json(state)
        if text != self.tenant_json or db.total_changes != written:
            db.execute("UPDATE tenant SET generation = ?, state = ?", (generation, text))
            self.tenant_json, self.generation = text, generation
        database.forget_changes(state)


KEPT_DATABASES = 8  # per process: a test session opens a store per test, each with its file handles
_KEPT: OrderedDict[Path, _Kept] = OrderedDict()
_KEPT_LOCK = threading.Lock()


def _kept(path: Path) -> _Kept:
    """This process's connection and tenant for the database at `path`, the least recently used closed
    beyond KEPT_DATABASES (unless a transaction holds it); a forked child starts afresh."""
    resolved = path.resolve()
    with _KEPT_LOCK:
        kept = _KEPT.get(resolved)
        if kept is None or kept.pid != os.getpid():
            kept = _KEPT[resolved] = _Kept(resolved)
        _KEPT.move_to_end(resolved)
        for old_path, old in list(_KEPT.items())[: max(0, len(_KEPT) - KEPT_DATABASES)]:
            if old.lock.acquire(blocking=False):
                try:
                    old.close()
                    del _KEPT[old_path]
                finally:
                    old.lock.release()
        return kept


class SimStore:
    """The simulator's SQLite database, shared by processes and threads; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.rows_written = 0  # rows inserted, updated or deleted by this store's last transaction

    @property
    def reads(self) -> database.Reads:
        """This process's reads of the tenant at this path so far (for tests and benchmarks)."""
        return _kept(self.path).reads

    def create(self, simulator: ExchangeSimulator) -> None:
        """Write a new tenant, replacing any state at the path (a JSON state of an older stagectl too)."""
        kept = _kept(self.path)
        with kept.lock:
            kept.close()
            try:
                db = database.open_database(self.path, create=True)
            except PermanentError:  # not SQLite: an old JSON state file
                for stale in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
                    stale.unlink(missing_ok=True)
                db = database.open_database(self.path, create=True)
            try:
                db.execute("BEGIN IMMEDIATE")
                before = db.total_changes
                database.write_tenant(db, simulator.state)
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
                database.tenant_row(db, self.path)
                return ExchangeSimulator(database.read_tenant(db))
            finally:
                db.execute("COMMIT")

    def now(self) -> datetime:
        """The tenant's virtual time (one row read)."""
        kept = _kept(self.path)
        with kept.lock:
            _, _, text = database.tenant_row(kept.connect(), self.path)
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
                    database.write_tenant(db, simulator.state)
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
        error: ExchangeError | None = params.unconfirmed(cmdlet, parameters)  # no one answers a prompt here
        if error is not None:
            raise error
        output = CmdletOutput()
        with self.store.transaction() as simulator:
            latency = simulator.state.latency_seconds
            try:
                output = simulator.call(cmdlet, parameters)
            except ExchangeError as refused:  # the call is still counted: keep the transaction
                error = refused
        faults.point("during")  # committed; the controller has not taken the answer yet
        if latency > 0:
            self._sleep(latency)  # outside the lock: a slow call must not stall other processes
        if error is not None:
            raise error
        return project(output, select)

    def close(self) -> None:
        pass
