"""The state database of a leader: every write goes to etcd first, fenced by the tenant's leadership key,
then to the instance's own SQLite database, which reads are served from.

A new leader `adopt()`s the shared part from etcd (memory: TTL lowered since, cutover at; revisions; the
pass number; drift baselines and `acted` marks; open alerts; open intents), so it resumes exactly where the
leader before it stopped. What stays local: the progress samples (the forecast starts over on a new leader)
and the history of finished actions (the audit chain has it all). A finished intent is deleted from etcd:
etcd holds the open ones only, so its size does not grow with finished work."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from controller import errors, redact
from controller.coordination.etcd import MAX_TXN_OPS, Delete, Etcd, KeyValue, Operation, Put
from controller.coordination.leadership import Leadership, LeadershipLost
from controller.model.actions import Action
from controller.model.snapshot import Memory
from controller.runtime import store as local
from controller.runtime.store import DATABASE_FILE, SharedRows, Store

log = logging.getLogger("stagectl.coordination")

CLOSED_ELSEWHERE = "settled by the instance that led before"


class SharedStore(Store):
    def __init__(self, path: Path, leadership: Leadership, *, clock: Callable[[], datetime]) -> None:
        super().__init__(path)
        self.leadership = leadership
        self.etcd: Etcd = leadership.etcd
        self.root = leadership.prefix + "state/"
        self._clock = clock
        self._stale = True  # until adopted
        # A setting equal here is equal in etcd, until a write's fate is unknown.
        self._trust_unchanged = True
        leadership.before_resign.append(self.flush)

    @classmethod
    def open_shared(
        cls, state_dir: Path, leadership: Leadership, *, clock: Callable[[], datetime]
    ) -> SharedStore:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        shared = cls(state_dir / DATABASE_FILE, leadership, clock=clock)
        shared.adopt_shared()
        return shared

    # --- etcd ---------------------------------------------------------------------------------------

    def _key(self, kind: str, name: str) -> str:
        return f"{self.root}{kind}/{name}"

    def _write(self, operations: Iterable[Operation]) -> None:
        """The operations in fenced transactions (MAX_TXN_OPS at a time, less the fence's compares); a
        setting put with the value it already has is not written again (a steady pass writes little).

        Refused: this instance no longer leads (LeadershipLost). No answer: unknown whether it was applied,
        so the local copy is re-read from etcd before the next pass."""
        settings = self.root + "settings/"
        pending = [
            op
            for op in operations
            if not (
                isinstance(op, Put)
                and op.key.startswith(settings)
                and not self._stale
                and self._trust_unchanged
                and self._get(op.key.removeprefix(settings)) == op.value.decode("utf-8")
            )
        ]
        try:
            while pending:
                chunk, pending = pending[: MAX_TXN_OPS - 2], pending[MAX_TXN_OPS - 2 :]
                if not self.etcd.txn(self.leadership.fence(), chunk).succeeded:
                    raise self.leadership.refused()
        except LeadershipLost:
            self._stale = True
            raise
        except errors.ExternalFailure:
            # Applied or not, unknown, and such a write may still commit after the re-read: from now on
            # every setting is written even when unchanged here, so etcd ends with this copy's values.
            self._stale = True
            self._trust_unchanged = False
            raise

    def _local(self, write: Callable[[], object]) -> object:
        try:
            return write()
        except errors.ExternalFailure:
            self._stale = True  # etcd has it and this copy does not: re-read before the next pass
            raise

    def adopt_shared(self) -> None:
        """Take the shared state from etcd into this instance's database; when etcd holds none for the
        tenant and this database does (coordination switched on for a tenant served alone until now), carry
        it into etcd instead, as the audit chain is carried: memory, revisions, baselines, alerts and the
        intents a crash left open go on, and the open intents are settled by observation, not closed."""
        found = list(self.etcd.prefix(self.root))
        carried = any(kv.key == self._key("settings", "pass") for kv in found)  # written last by a carry
        if not carried and self.pass_number() > 0:
            self._carry()
            self._stale = False
            return
        self._adopt(found)
        self._stale = False

    def _carry(self) -> None:
        rows = self.shared_rows()
        operations: list[Operation] = []
        for obj, desired, observed, phase, message, at in rows.statuses:
            operations.append(
                Put(self._key("status", obj), _status((obj, desired, observed, phase, message, at)))
            )
        for alert in rows.alerts:
            operations.append(Put(self._key("alerts", alert[0]), _alert(alert)))
        for intent in rows.intents:
            operations.append(Put(self._intent_key(*intent[:3]), _intent(intent)))
        # The settings last, the pass number the very last: a carry cut short is carried again.
        for name, value in sorted(rows.settings.items(), key=lambda item: item[0] == "pass"):
            operations.append(Put(self._key("settings", name), value.encode("utf-8")))
        self._stale = True  # until every part is in etcd, nothing is skipped as unchanged
        self._write(operations)
        log.info(
            "tenant %s: the single-machine state (pass %d, %d statuses, %d open intents) now goes on in etcd",
            self.leadership.tenant,
            self.pass_number(),
            len(rows.statuses),
            len(rows.intents),
        )

    def _adopt(self, found: list[KeyValue]) -> None:
        settings: dict[str, str] = {}
        statuses: list[local.StatusRow] = []
        alerts: list[local.AlertRow] = []
        intents: list[local.IntentRow] = []
        for kv in found:
            kind, _, name = kv.key.removeprefix(self.root).partition("/")
            if kind == "settings":
                settings[name] = kv.text()
            else:
                row = json.loads(kv.value)
                if kind == "status":
                    statuses.append(
                        (name, row["desired"], row["observed"], row["phase"], row["message"], row["at"])
                    )
                elif kind == "alerts":
                    alerts.append((name, row["object"], row["desired"], row["observed"], row["at"]))
                elif kind == "intents":
                    intents.append((row["revision"], int(row["pass"]), row["key"], row["action"], row["at"]))
        super().adopt(
            SharedRows(settings, statuses, alerts, intents), now=self._clock(), closed=CLOSED_ELSEWHERE
        )

    def flush(self) -> None:
        """Before a hand-over: after a write whose fate was unknown (it may have committed since, over newer
        values), write every setting again, so the next leader adopts this copy's memory and revisions."""
        if self._trust_unchanged or self._stale:
            return
        names = ", ".join("?" * len(local.SHARED_SETTINGS))
        rows = self._query(f"SELECT name, value FROM settings WHERE name IN ({names})", local.SHARED_SETTINGS)
        self._write([Put(self._key("settings", str(n)), str(v).encode("utf-8")) for n, v in rows])

    def close(self) -> None:
        if self.flush in self.leadership.before_resign:
            self.leadership.before_resign.remove(self.flush)
        super().close()

    def refresh(self) -> None:
        if self._stale:
            log.info("tenant %s: re-reading the shared state from etcd", self.leadership.tenant)
            self.adopt_shared()

    def _setting(self, name: str, value: str | None) -> Operation:
        key = self._key("settings", name)
        return Delete(key) if value is None else Put(key, value.encode("utf-8"))

    # --- settings: memory, revisions, the pass number ------------------------------------------------

    def save_memory(self, memory: Memory) -> None:
        self._write([self._setting("memory", memory.model_dump_json())])
        self._local(lambda: super(SharedStore, self).save_memory(memory))

    def record_attempted(self, revision: str) -> None:
        self._write([self._setting("revision.attempted", revision)])
        self._local(lambda: super(SharedStore, self).record_attempted(revision))

    def record_good(self, revision: str) -> None:
        self._write(
            [
                self._setting("revision.good", revision),
                self._setting("revision.refused", None),
                self._setting("revision.refused_reason", None),
            ]
        )
        self._local(lambda: super(SharedStore, self).record_good(revision))

    def record_refused(self, revision: str, reason: str) -> None:
        self._write(
            [
                self._setting("revision.refused", revision),
                self._setting("revision.refused_reason", redact.redact_text(reason)),
            ]
        )
        self._local(lambda: super(SharedStore, self).record_refused(revision, reason))

    def record_applied(self, revision: str, memory: Memory | None = None) -> None:
        operations = [self._setting("revision.applied", revision)]
        if memory is not None:
            operations.append(self._setting("memory", memory.model_dump_json()))
        self._write(operations)
        self._local(lambda: super(SharedStore, self).record_applied(revision, memory))

    def next_pass(self) -> int:
        number = self.pass_number() + 1
        self._write([self._setting("pass", str(number))])
        taken = self._local(lambda: super(SharedStore, self).next_pass())
        if taken != number:  # pragma: no cover - one writer per database (the state lock)
            raise errors.ExternalFailure(f"pass {taken} was taken locally while etcd has {number}")
        return number

    # --- object statuses: drift baselines and `acted` -----------------------------------------------

    def set_statuses(
        self, rows: Iterable[tuple[str, object, object]], *, phase: str, message: str, now: datetime
    ) -> None:
        rows = list(rows)
        self._write(
            Put(
                self._key("status", row[0]),
                _status(local.status_row(*row, phase=phase, message=message, now=now)),
            )
            for row in rows
        )
        self._local(
            lambda: super(SharedStore, self).set_statuses(rows, phase=phase, message=message, now=now)
        )

    def remove_status(self, object: str) -> None:
        self._write([Delete(self._key("status", object))])
        self._local(lambda: super(SharedStore, self).remove_status(object))

    # --- drift alerts -----------------------------------------------------------------------------

    def open_alert(
        self, fingerprint: str, *, object: str, desired: object = None, observed: object = None, now: datetime
    ) -> bool:
        if self.has_alert(fingerprint):
            return False
        row = local.alert_row(fingerprint, object, desired, observed, now)
        self._write([Put(self._key("alerts", fingerprint), _alert(row))])
        opened = self._local(
            lambda: super(SharedStore, self).open_alert(
                fingerprint, object=object, desired=desired, observed=observed, now=now
            )
        )
        return bool(opened)

    def close_alert(self, fingerprint: str) -> local.OpenAlert | None:
        if not self.has_alert(fingerprint):
            return None
        self._write([Delete(self._key("alerts", fingerprint))])
        closed = self._local(lambda: super(SharedStore, self).close_alert(fingerprint))
        return closed if isinstance(closed, local.OpenAlert) else None

    # --- the action journal: the open intents live in etcd ----------------------------------------

    def _intent_key(self, revision: str, pass_id: int, key: str) -> str:
        return self._key("intents", f"{pass_id:012d}/{revision}/{key}")

    def record_action_started(
        self, *, revision: str, pass_id: int, key: str, action: Action, now: datetime
    ) -> bool:
        """The intent in etcd, fenced (the action is sent only if this succeeds), with the object marked
        `acted` in the same transaction; then here."""
        if self.has_action(revision=revision, pass_id=pass_id, key=key):
            return False
        row = local.intent_row(revision, pass_id, key, action, now)
        acted = local.status_row(action.object, "", {}, phase="acted", message="sent", now=now)
        self._write(
            [
                Put(self._intent_key(revision, pass_id, key), _intent(row)),
                Put(self._key("status", action.object), _status(acted)),
            ]
        )
        started = self._local(
            lambda: super(SharedStore, self).record_action_started(
                revision=revision, pass_id=pass_id, key=key, action=action, now=now
            )
        )
        return bool(started)

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
        operations: list[Operation] = [Delete(self._intent_key(revision, pass_id, key))]
        if memory is not None:
            operations.append(self._setting("memory", memory.model_dump_json()))
        self._write(operations)
        self._local(
            lambda: super(SharedStore, self).record_action_finished(
                revision=revision, pass_id=pass_id, key=key, result=result, now=now, memory=memory
            )
        )


def _alert(row: local.AlertRow) -> bytes:
    _, obj, desired, observed, at = row
    return json.dumps({"object": obj, "desired": desired, "observed": observed, "at": at}).encode()


def _intent(row: local.IntentRow) -> bytes:
    revision, pass_id, key, action, at = row
    return json.dumps(
        {"revision": revision, "pass": pass_id, "key": key, "action": action, "at": at}
    ).encode()


def _status(row: local.StatusRow) -> bytes:
    _, desired, observed, phase, message, at = row
    return json.dumps(
        {"desired": desired, "observed": observed, "phase": phase, "message": message, "at": at}
    ).encode()
