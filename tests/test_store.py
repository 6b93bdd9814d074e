"""The SQLite state store and the state-directory lock, on real files in temporary directories."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller import errors
from controller.model.actions import CredentialRef, CsvRows, DnsAction, ExchangeAction
from controller.model.snapshot import Memory, RetryCount
from controller.runtime import lock, store

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

START = ExchangeAction(
    cmdlet="New-MigrationBatch",
    parameters=(
        ("Name", "pilot"),
        ("CSVData", CsvRows(("a@example.com", "b@example.com"))),
        ("Credentials", CredentialRef("env:ONPREM")),
        ("AutoStart", True),
    ),
    object="batch/pilot",
    reason="the repository asks for pilot to start",
)
MX = DnsAction(
    zone="example.com",
    name="@",
    type="MX",
    ttl=300,
    values=("0 example-com.mail.protection.outlook.com.",),
    previous_ttl=3600,
    previous_values=("10 mail.example.com.",),
    object="dns/example.com/@/MX",
    reason="cut over",
)


def test_memory_and_revisions_survive_reopen(tmp_path: Path) -> None:
    memory = Memory(
        lowTtlSince={"example.com/@/MX": NOW},
        cutoverAt=NOW + timedelta(days=1),
        retries={"pilot": RetryCount(revision="abc", count=2)},
        completionUnsupported=["wave-1"],
    )
    db = store.Store.open(tmp_path / "state")
    assert db.load_memory() == Memory()
    assert db.revisions() == store.Revisions()
    db.record_attempted("r2")
    db.record_good("r1")
    db.record_refused("r2", "batches.yaml, line 3: password=hunter2 is not a batch")
    db.record_applied("r1", memory)
    db.close()

    db = store.Store.open(tmp_path / "state")
    assert db.load_memory() == memory
    revisions = db.revisions()
    assert (revisions.attempted, revisions.applied, revisions.good, revisions.refused) == (
        "r2",
        "r1",
        "r1",
        "r2",
    )
    assert revisions.refused_reason == "batches.yaml, line 3: password=<redacted> is not a batch"
    assert store.as_mapping(revisions)["refusedReason"] == revisions.refused_reason

    db.record_good("r3")  # a newer valid revision clears the refusal
    assert db.revisions().refused is None and db.revisions().refused_reason is None
    db.save_memory(Memory())
    assert db.load_memory() == Memory()
    db.close()


def test_database_is_in_wal_mode_and_schema_versioned(tmp_path: Path) -> None:
    db = store.Store.open(tmp_path)
    assert db._query("PRAGMA journal_mode")[0][0] == "wal"
    assert db._query("PRAGMA user_version")[0][0] == store.SCHEMA_VERSION
    db._db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(errors.InvalidInput, match="newer stagectl"):
        store.Store.open(tmp_path)


def test_a_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / store.DATABASE_FILE).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(errors.ExternalFailure, match=r"state database .* cannot be opened"):
        store.Store.open(tmp_path)


def test_pass_numbers_increase_across_restarts(tmp_path: Path) -> None:
    db = store.Store.open(tmp_path)
    assert (db.next_pass(), db.next_pass()) == (1, 2)
    db.close()
    assert store.Store.open(tmp_path).next_pass() == 3


def test_object_status_rows(tmp_path: Path) -> None:
    db = store.Store.open(tmp_path)
    db.set_status(
        "batch/pilot",
        desired={"state": "started"},
        observed={"Status": "Syncing"},
        phase="Reconciling",
        message="waiting",
        now=NOW,
    )
    db.set_status(
        "batch/pilot", desired={"state": "started"}, observed=None, phase="Ready", message="ok", now=NOW
    )
    db.set_status("dns/x", desired=None, observed=None, phase="Stalled", message="token: abc", now=NOW)
    db.close()

    db = store.Store.open(tmp_path)
    rows = db.statuses()
    assert [row.object for row in rows] == ["batch/pilot", "dns/x"]
    assert rows[0] == store.ObjectStatus("batch/pilot", {"state": "started"}, None, "Ready", "ok", NOW)
    assert rows[1].message == "token: <redacted>"
    assert [row.object for row in db.statuses(objects={"dns/x", "batch/none"})] == ["dns/x"]
    assert [row.object for row in db.statuses(phase="Ready")] == ["batch/pilot"]
    assert db.statuses(objects={"dns/x"}, phase="Ready") == [] and db.statuses(objects=set()) == []
    db.remove_status("dns/x")
    assert [row.object for row in db.statuses()] == ["batch/pilot"]


def test_alert_open_and_close_are_deduplicated_across_restarts(tmp_path: Path) -> None:
    db = store.Store.open(tmp_path)
    assert db.open_alert(
        "f1", object="batch/pilot", desired={"Status": "Syncing"}, observed={"Status": "Stopped"}, now=NOW
    )
    assert not db.open_alert("f1", object="batch/pilot", now=NOW + timedelta(minutes=1))
    db.close()

    db = store.Store.open(tmp_path)  # a restarted controller does not alert again
    assert not db.open_alert("f1", object="batch/pilot", now=NOW + timedelta(minutes=2))
    [alert] = db.open_alerts()
    assert (alert.object, alert.observed, alert.opened_at) == ("batch/pilot", {"Status": "Stopped"}, NOW)
    closed = db.close_alert("f1")
    assert closed is not None and closed.desired == {"Status": "Syncing"}
    assert db.close_alert("f1") is None
    db.close()

    db = store.Store.open(tmp_path)
    assert db.open_alerts() == []
    assert db.open_alert("f1", object="batch/pilot", now=NOW)  # the same drift again later is news again


def test_action_journal_prevents_issuing_twice_after_a_crash(tmp_path: Path) -> None:
    db = store.Store.open(tmp_path)
    pass_id = db.next_pass()
    start_key, mx_key = store.action_key(START), store.action_key(MX)
    assert start_key == store.action_key(START) and start_key != mx_key
    assert db.record_action_started(revision="r1", pass_id=pass_id, key=start_key, action=START, now=NOW)
    db.record_action_finished(revision="r1", pass_id=pass_id, key=start_key, result="ok", now=NOW)
    assert db.record_action_started(revision="r1", pass_id=pass_id, key=mx_key, action=MX, now=NOW)
    del db  # the process dies while MX is in flight (no close)

    db = store.Store.open(tmp_path)
    assert not db.record_action_started(revision="r1", pass_id=pass_id, key=mx_key, action=MX, now=NOW)
    [in_flight] = db.unfinished_actions()
    assert (in_flight.action_key, in_flight.finished, in_flight.action["object"]) == (
        mx_key,
        False,
        MX.object,
    )
    journal = db.actions(revision="r1", pass_id=pass_id)
    assert [record.action_key for record in journal] == [start_key, mx_key]
    assert journal[0].result == "ok" and journal[0].finished
    assert journal[0].action["parameters"] == {
        "Name": "pilot",
        "CSVData": "<2 rows>",
        "Credentials": "<credentials from env:ONPREM>",
        "AutoStart": True,
    }
    db.record_action_finished(revision="r1", pass_id=pass_id, key=mx_key, result="error: password=x", now=NOW)
    assert db.unfinished_actions() == []
    assert db.actions(revision="r1")[1].result == "error: password=<redacted>"
    with pytest.raises(ValueError, match="never recorded"):
        db.record_action_finished(revision="r9", pass_id=1, key=mx_key, result="ok", now=NOW)


def test_a_second_lock_holder_fails_clearly(tmp_path: Path) -> None:
    with lock.StateLock.acquire(tmp_path) as held:
        assert held.held
        with pytest.raises(
            lock.AlreadyRunning, match=re.escape(f"another stagectl is running on {tmp_path} (pid")
        ):
            lock.StateLock.acquire(tmp_path)
    assert not held.held
    lock.StateLock.acquire(tmp_path).release()  # free again once released


def test_a_lock_held_by_another_process_names_its_pid(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from controller.runtime import lock;"
            "held = lock.StateLock.acquire(Path(sys.argv[1])); print('locked', flush=True); sys.stdin.read()",
            str(tmp_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(lock.AlreadyRunning) as caught:
            lock.StateLock.acquire(tmp_path)
        assert str(caught.value) == f"another stagectl is running on {tmp_path} (pid {holder.pid})"
        assert caught.value.exit_code == 1
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # The kernel released the dead holder's lock: no stale lock file to clean up.
    lock.StateLock.acquire(tmp_path).release()


def test_progress_of_three_days_at_a_minute_keeps_since_and_the_window(tmp_path: Path) -> None:
    """A batch created, syncing from ten minutes later for three days, one pass a minute: old samples are
    thinned, not dropped, so "Syncing since" is when it began and the 24 h window has its whole span."""
    from controller.runtime import forecast, status

    opened = store.Store.open(tmp_path)
    minutes = 3 * 24 * 60
    try:
        for minute in range(minutes + 1):
            state = "Created" if minute < 10 else "Syncing"
            synced = max(0, minute - 10) // 30  # a user every 30 minutes
            opened.record_progress(
                [store.ProgressSample("wave", NOW + timedelta(minutes=minute), state, synced, 0, 1000)]
            )
        samples = opened.progress(["Wave"])["wave"]
    finally:
        opened.close()
    newest = NOW + timedelta(minutes=minutes)
    assert len(samples) <= store.PROGRESS_KEPT and len(samples) < 61 + 48 + 4 + 2, len(samples)
    assert samples[0].observed_at == NOW and samples[0].status == "Created"
    assert status._since(samples, "Syncing") == "2024-05-01T12:10:00Z"
    last_hour = [s for s in samples if newest - s.observed_at <= timedelta(hours=1)]
    assert len(last_hour) == 61, "every sample of the last hour"
    inside = [s for s in samples if s.observed_at >= newest - forecast.WINDOW]
    assert newest - inside[0].observed_at >= forecast.WINDOW - timedelta(hours=1)
    assert store.PROGRESS_HOURLY > forecast.WINDOW
    found = forecast.batch(
        "Wave", status="Syncing", synced=samples[-1].synced, failed=0, total=1000, samples=samples
    )
    assert found.per_hour == pytest.approx(2.0, abs=0.1) and found.basis.endswith("to go"), found
    assert " in 24 h " in found.basis or " in 23 h " in found.basis, found.basis
