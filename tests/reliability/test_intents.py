"""Intent before action (issue 14, item 1): what an interrupted action's effect is judged to be, an intent
that observation cannot settle yet, and a full disk while the intent is written."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller import errors, faults
from controller.desired import loader
from controller.desired.models import DesiredState
from controller.model.actions import CsvRows, DnsAction, ExchangeAction, Plan, Waiting
from controller.model.snapshot import (
    ExchangeObserved,
    ObservedBatch,
    ObservedEndpoint,
    ObservedUser,
    RRset,
    Snapshot,
)
from controller.planner.settle import Verdict, settle
from controller.runtime import audit
from controller.runtime.audit import AuditLog
from controller.runtime.intents import Journal
from controller.runtime.lock import StateLock
from controller.runtime.store import Store, action_key
from tests.support.controller import PILOT, WAVE, Workspace, desired_files, make_workspace

NOW = datetime(2026, 11, 24, 9, tzinfo=UTC)
BOUND = 120.0


def _snapshot(
    *,
    batches: list[ObservedBatch] | None = None,
    endpoints: list[ObservedEndpoint] | None = None,
    zone: list[RRset] | None = None,
    users: list[ObservedUser] | None = None,
) -> Snapshot:
    return Snapshot(
        observedAt=NOW,
        exchange=ExchangeObserved(
            endpoints=endpoints,
            batches=batches,
            users=users if users is not None else [] if batches else None,
        ),
        dns={"contoso.com": zone},
    )


def _batch(status: str) -> ObservedBatch:
    return ObservedBatch(Identity="Pilot", Status=status, TotalCount=2)


def _user(status: str, batch: str = "Pilot") -> ObservedUser:
    return ObservedUser(Identity="carol@contoso.com", BatchId=batch, Status=status)


def _plan(*actions: ExchangeAction, waiting: bool = False) -> Plan:
    return Plan(
        revision="r",
        checksum="c",
        actions=actions,
        waiting=(Waiting("batch/Pilot", "Syncing"),) if waiting else (),
    )


NEW = ExchangeAction("New-MigrationBatch", (("Name", "Pilot"), ("AutoStart", True)), "batch/Pilot", "")
START = ExchangeAction("Start-MigrationBatch", (("Identity", "Pilot"),), "batch/Pilot", "planned -> started")
RETRY = ExchangeAction(
    "Start-MigrationBatch", (("Identity", "Pilot"),), "batch/Pilot", "retry 1 failed users (1/3)"
)
REMOVE_USER = ExchangeAction(
    "Remove-MigrationUser", (("Identity", "carol@contoso.com"),), "batch/Pilot", "left"
)
COMPLETE = ExchangeAction("Complete-MigrationBatch", (("Identity", "Pilot"),), "batch/Pilot", "")
REMOVE = ExchangeAction("Remove-MigrationBatch", (("Identity", "Pilot"),), "batch/Pilot", "")
ADD = ExchangeAction(
    "Set-MigrationBatch",
    (("Identity", "Pilot"), ("AddUsers", True), ("CSVData", CsvRows(("carol@contoso.com",)))),
    "batch/Pilot",
    "",
)
ENDPOINT = ExchangeAction(
    "Set-MigrationEndpoint", (("Identity", "Staged"), ("MaxConcurrentMigrations", 50)), "endpoint/Staged", ""
)
LOWER = DnsAction(
    zone="contoso.com",
    name="@",
    type="MX",
    ttl=300,
    values=("10 mail.contoso.com.",),
    previous_ttl=3600,
    previous_values=("10 mail.contoso.com.",),
    object="dns/contoso.com/@/MX",
    reason="lower the TTL",
    kind="ttl",
)


def _mx(ttl: int, value: str = "10 MAIL.contoso.com.") -> list[RRset]:
    return [RRset(name="@", type="MX", ttl=ttl, values=[value])]


@pytest.mark.parametrize(
    ("action", "snapshot", "planned", "verdict"),
    [
        (NEW, _snapshot(batches=[_batch("Syncing")]), (), Verdict.APPLIED),
        (NEW, _snapshot(batches=[]), (), Verdict.ABSENT),
        (NEW, _snapshot(batches=None), (), Verdict.UNKNOWN),
        (START, _snapshot(batches=[_batch("Created")]), (), Verdict.ABSENT),
        (START, _snapshot(batches=[_batch("Syncing")]), (), Verdict.APPLIED),
        (START, _snapshot(batches=[_batch("Synced")]), (), Verdict.APPLIED),  # it moved on since
        (COMPLETE, _snapshot(batches=[_batch("Synced")]), (), Verdict.ABSENT),
        (COMPLETE, _snapshot(batches=[_batch("Completing")]), (), Verdict.APPLIED),
        (REMOVE, _snapshot(batches=[]), (), Verdict.APPLIED),
        (REMOVE, _snapshot(batches=[_batch("Completed")]), (), Verdict.ABSENT),
        (START, _snapshot(batches=[_batch("Bewildered")]), (), Verdict.UNKNOWN),
        # Members added: the plan made from the same observation says whether some are still missing.
        (ADD, _snapshot(batches=[_batch("Synced")]), _plan(), Verdict.APPLIED),
        (ADD, _snapshot(batches=[_batch("Synced")]), _plan(ADD), Verdict.ABSENT),
        # …unless the plan waits on the batch (it syncs): then it would not add them either way.
        (ADD, _snapshot(batches=[_batch("Syncing")]), _plan(waiting=True), Verdict.UNKNOWN),
        # A first start of a batch that failed at once did start; a retry leaves the failed statuses.
        (START, _snapshot(batches=[_batch("Failed")]), (), Verdict.APPLIED),
        (RETRY, _snapshot(batches=[_batch("SyncedWithErrors")]), (), Verdict.ABSENT),
        (RETRY, _snapshot(batches=[_batch("Syncing")]), (), Verdict.APPLIED),
        # A member removed: gone, or Removing (Exchange is carrying it out); the same address in another
        # batch (exchange-facts §9 row 1.6) is not this batch's user.
        (REMOVE_USER, _snapshot(batches=[_batch("Synced")], users=[]), (), Verdict.APPLIED),
        (REMOVE_USER, _snapshot(batches=[_batch("Synced")], users=[_user("Removing")]), (), Verdict.APPLIED),
        (REMOVE_USER, _snapshot(batches=[_batch("Synced")], users=[_user("Synced")]), (), Verdict.ABSENT),
        (
            REMOVE_USER,
            _snapshot(batches=[_batch("Synced")], users=[_user("Synced", "Other")]),
            (),
            Verdict.APPLIED,
        ),
        (
            ENDPOINT,
            _snapshot(endpoints=[ObservedEndpoint(Identity="Staged", MaxConcurrentMigrations=50)]),
            (),
            Verdict.APPLIED,
        ),
        (
            ENDPOINT,
            _snapshot(endpoints=[ObservedEndpoint(Identity="Staged", MaxConcurrentMigrations=20)]),
            (),
            Verdict.ABSENT,
        ),
        (ENDPOINT, _snapshot(endpoints=None), (), Verdict.UNKNOWN),
        # DNS: the RRset holds the values and the TTL sent (names without case), or it does not.
        (LOWER, _snapshot(zone=_mx(300)), (), Verdict.APPLIED),
        (LOWER, _snapshot(zone=_mx(3600)), (), Verdict.ABSENT),
        (LOWER, _snapshot(zone=_mx(300, "0 contoso-com.mail.protection.outlook.com.")), (), Verdict.ABSENT),
        (LOWER, _snapshot(zone=None), (), Verdict.UNKNOWN),
    ],
    ids=lambda value: value.value if isinstance(value, Verdict) else None,
)
def test_an_interrupted_action_is_judged_by_its_observed_effect(
    action: ExchangeAction | DnsAction,
    snapshot: Snapshot,
    planned: Plan | tuple[()],
    verdict: Verdict,
) -> None:
    settlement = settle(action.as_data(), snapshot, planned or None)
    assert settlement.verdict is verdict, settlement.reason
    assert settlement.result().startswith(f"settled: {verdict.value}: ")


# --- through `stagectl run` ------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path / "ws", pilot="started")


def _open_intents(workspace: Workspace, state_dir: Path | None = None) -> list[str]:
    store = Store.open(state_dir or workspace.state_dir)
    try:
        return [str(record.action.get("object")) for record in store.unfinished_actions()]
    finally:
        store.close()


def _run_once(workspace: Workspace, **fault: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", "run", "--config", str(workspace.config_path), "--once"],
        env={**workspace.process_env(), **fault},
        capture_output=True,
        text=True,
        timeout=BOUND,
        cwd=workspace.root,
    )


def test_an_intent_that_observation_cannot_settle_stays_open_and_holds_its_object(
    workspace: Workspace,
) -> None:
    # Killed while the coexistence SPF UPDATE was applied and its answer not read.
    killed = _run_once(workspace, **{faults.ENV: "dns@during"})
    assert killed.returncode < 0
    assert _open_intents(workspace) == ["dns/contoso.com/@/TXT"]
    writes = workspace.writes()

    # The zone cannot be read: the intent stays open, nothing acts on the record, and the plan says why.
    workspace.dns().set_reachable("contoso.com", False)
    held = _run_once(workspace)
    assert _open_intents(workspace) == ["dns/contoso.com/@/TXT"]
    assert workspace.audit_records(phase="settled") == []
    blocked = workspace.status()["blocked"]
    reasons = [str(b["reason"]) for b in blocked if b["object"] == "dns/contoso.com/@/TXT"]  # type: ignore[index]
    assert any("was interrupted" in r for r in reasons), (blocked, held.stderr)
    assert workspace.writes() == writes  # the batch waits for the SPF string: nothing was sent

    # Readable again: settled as applied by observation, never sent twice.
    workspace.dns().set_reachable("contoso.com", True)
    done = _run_once(workspace)
    assert done.returncode == 0, done.stderr
    assert _open_intents(workspace) == []
    [settled] = workspace.audit_records(phase="settled")
    assert str(settled["result"]).startswith("settled: applied: ")
    assert workspace.dns().updates("contoso.com").count("dns/contoso.com/@/TXT") == 1
    assert workspace.writes() == writes + Counter({"New-MigrationBatch": 1})


@contextlib.contextmanager
def _small_filesystem(path: Path, size: str) -> Iterator[bool]:
    """A tmpfs of `size` at `path` when this process may mount one (root, as CI runs); False otherwise."""
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    try:
        yield mounted.returncode == 0
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_while_the_intent_is_written_sends_nothing_and_loses_nothing(tmp_path: Path) -> None:
    """On a real full filesystem (a small tmpfs holding the state directory, filled at the moment the
    intent is written) when this machine allows the mount; where it does not, the same write error
    (ENOSPC) injected there."""
    with _small_filesystem(tmp_path / "small", "2m") as real:
        state_dir = tmp_path / "small" / "state"
        workspace = make_workspace(tmp_path / "ws", stateDir=str(state_dir))
        first = _run_once(workspace)  # the endpoint and the MX TTL: the state directory is in use
        assert first.returncode == 0, first.stderr
        workspace.commit_desired(pilot="started", message="Start the pilot")
        writes = workspace.writes()

        # The filesystem fills up once the intent is in the journal, as it is written to the audit chain.
        filler = state_dir / "filler"
        full = _run_once(workspace, **{faults.ENV: f"*@intent=FILL:{filler}" if real else "*@intent=ENOSPC"})

        assert full.returncode == 3, full.stdout + full.stderr
        assert "Traceback" not in full.stderr
        assert "could not be recorded" in full.stderr and "it was not sent" in full.stderr, full.stderr
        assert os.strerror(errno.ENOSPC) in full.stderr, full.stderr
        assert workspace.writes() == writes  # no cmdlet was sent
        assert workspace.dns().updates("contoso.com").count("dns/contoso.com/@/TXT") == 0

        filler.unlink(missing_ok=True)
        assert _open_intents(workspace, state_dir) == ["dns/contoso.com/@/TXT"]  # in the journal, not sent
        again = _run_once(workspace)
        assert again.returncode == 0, again.stderr
        assert workspace.writes() == writes + Counter({"New-MigrationBatch": 1})
        assert _open_intents(workspace, state_dir) == []
        verified = workspace.stagectl("audit", "verify", "--state", str(state_dir))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        # Nothing lost: the intent cut short by the full disk was settled as not applied, then sent once.
        trail = [
            (r["phase"], str(r["result"]).split(":")[:2])
            for r in audit.show(audit.path_in(state_dir))
            if r["action"]["object"] == "dns/contoso.com/@/TXT"  # type: ignore[index]
        ]
        assert trail[-3:] == [
            ("settled", ["settled", " not applied"]),
            ("intent", ["sending"]),
            ("result", ["ok"]),
        ], trail
        assert workspace.dns().updates("contoso.com").count("dns/contoso.com/@/TXT") == 1
        assert [p.name for p in state_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_stagectl_apply_records_intents_settles_a_killed_run_and_refuses_beside_a_controller(
    workspace: Workspace,
) -> None:
    # `stagectl run` killed once the pilot's New-MigrationBatch was committed, its answer not read.
    killed = _run_once(workspace, **{faults.ENV: "New-MigrationBatch@during"})
    assert killed.returncode < 0
    assert _open_intents(workspace) == [f"batch/{PILOT}"]
    writes = workspace.writes()
    apply = (
        "apply",
        "--yes",
        "--repo",
        str(workspace.repo.path),
        "--config",
        str(workspace.config_path),
    )

    # While a controller holds the state directory, `apply` refuses: one writer to a tenant.
    lock = StateLock.acquire(workspace.state_dir)
    try:
        refused = workspace.stagectl(*apply)
    finally:
        lock.release()
    assert refused.returncode == 1
    assert "another stagectl is running" in refused.stderr
    assert workspace.writes() == writes

    # Alone, it settles the killed run's intent by observation (the batch exists: not sent again) and
    # records its own actions' intents and results in the same chain.
    workspace.commit_desired(pilot="started", wave="started", message="Start the wave")
    applied = workspace.stagectl(*apply)
    assert applied.returncode == 0, applied.stderr
    assert workspace.writes() - writes == Counter({"New-MigrationBatch": 1})  # the wave only
    assert _open_intents(workspace) == []
    records = workspace.audit_records(phase=None)
    [settled] = [r for r in records if r["phase"] == "settled"]
    assert settled["action"]["object"] == f"batch/{PILOT}"  # type: ignore[index]
    assert str(settled["result"]).startswith("settled: applied: ")
    by_apply = [
        (r["phase"], r["action"]["object"]) for r in records if "(stagectl apply)" in str(r["author"])
    ]  # type: ignore[index]
    # The wave's batch and the MX TTL the killed run did not reach, each an intent then its result.
    assert by_apply == [
        (phase, obj) for obj in (f"batch/{WAVE}", "dns/contoso.com/@/MX") for phase in ("intent", "result")
    ]
    verified = workspace.stagectl("audit", "verify", "--state", str(workspace.state_dir))
    assert verified.returncode == 0, verified.stderr


# --- the journal itself, in process: holding, abandoning, a full disk at the head and at the result ---


def _desired() -> DesiredState:
    files = {
        path.removeprefix("desired/"): text.encode()
        for path, text in desired_files(pilot="started", wave="started").items()
    }
    return loader.load_files(files, revision="r")


def _journal(tmp_path: Path) -> Journal:
    state = tmp_path / "state"
    return Journal(Store.open(state), AuditLog(audit.path_in(state)), lambda: NOW, state)


def _open_intent(journal: Journal, action: ExchangeAction | DnsAction) -> None:
    journal.store.record_action_started(
        revision="r", pass_id=1, key=action_key(action), action=action, now=NOW
    )


def test_an_undecided_intent_holds_every_action_on_its_object_and_no_other(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    unknown_effect = ExchangeAction(
        "Set-MigrationUser", (("Identity", "carol@contoso.com"),), f"batch/{PILOT}", ""
    )
    _open_intent(journal, unknown_effect)  # a cmdlet whose effect settle() cannot observe
    start_pilot = ExchangeAction("Start-MigrationBatch", (("Identity", PILOT),), f"batch/{PILOT}", "")
    start_wave = ExchangeAction("Start-MigrationBatch", (("Identity", WAVE),), f"batch/{WAVE}", "")
    planned = Plan(revision="r", checksum="c", actions=(start_pilot, start_wave))

    held = journal.settle(planned, _snapshot(batches=[_batch("Created")]), _desired())

    assert held.actions == (start_wave,)
    [blocked] = held.blocked
    assert (blocked.object, blocked.gate) == (f"batch/{PILOT}", "unknown")
    assert "was interrupted" in blocked.reason
    assert [r.action_key for r in journal.store.unfinished_actions()] == [action_key(unknown_effect)]


def test_an_intent_whose_object_left_the_desired_state_is_closed_as_abandoned(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    gone = DnsAction(
        zone="fabrikam.com",
        name="@",
        type="MX",
        ttl=300,
        values=("10 mail.fabrikam.com.",),
        previous_ttl=3600,
        previous_values=("10 mail.fabrikam.com.",),
        object="dns/fabrikam.com/@/MX",
        reason="lower the TTL",
        kind="ttl",
    )
    _open_intent(journal, gone)  # its zone is no longer managed, so it is never observed again

    settled = journal.settle(Plan(revision="r", checksum="c"), _snapshot(), _desired())

    assert journal.store.unfinished_actions() == []
    assert settled.blocked == ()
    [record] = audit.show(journal.audit.path)
    assert (record["phase"], str(record["result"]).split(":")[:2]) == ("settled", ["settled", " abandoned"])


def test_a_full_disk_at_the_head_cuts_the_audit_line_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append(revision="r", author="a", action={"object": "x"}, result="ok", duration_ms=0, time=NOW)
    size = log.path.stat().st_size

    def full(path: Path, head: audit.Head) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(audit, "write_head", full)
    for _ in range(3):  # each failure leaves the log as it was, never a record ahead of its head
        with pytest.raises(errors.ExternalFailure, match="cannot be written: No space left on device"):
            log.append(revision="r", author="a", action={"object": "y"}, result="ok", duration_ms=0, time=NOW)
        assert log.path.stat().st_size == size
    monkeypatch.undo()
    log.append(revision="r", author="a", action={"object": "z"}, result="ok", duration_ms=0, time=NOW)
    assert audit.verify(log.path) is None
    assert [r["seq"] for r in audit.show(log.path)] == [1, 2]


def test_a_full_disk_at_the_result_stops_the_pass_cleanly_and_the_next_settles_it(tmp_path: Path) -> None:
    with _small_filesystem(tmp_path / "small", "2m") as real:
        state_dir = tmp_path / "small" / "state"
        workspace = make_workspace(tmp_path / "ws", stateDir=str(state_dir))
        filler = state_dir / "filler"
        # The endpoint is sent, then the disk fills before its result is written.
        fault = f"New-MigrationEndpoint@result={f'FILL:{filler}' if real else 'ENOSPC'}"
        full = _run_once(workspace, **{faults.ENV: fault})
        assert full.returncode == 3, full.stdout + full.stderr
        assert "Traceback" not in full.stderr and "internal error" not in full.stderr, full.stderr
        assert "was sent" in full.stderr and "the next pass settles it by observation" in full.stderr
        filler.unlink(missing_ok=True)
        again = _run_once(workspace)
        assert again.returncode == 0, again.stderr
        assert workspace.writes()["New-MigrationEndpoint"] == 1  # settled by observation, not sent twice
        assert _open_intents(workspace, state_dir) == []
        verified = workspace.stagectl("audit", "verify", "--state", str(state_dir))
        assert verified.returncode == 0, verified.stdout + verified.stderr
