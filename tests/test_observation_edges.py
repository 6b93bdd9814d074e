"""Scoped observation at its edges (contract §3.1): a Synced batch Exchange refused to complete is done
for the gate and remembered as finished; a finished batch's drift is still seen after its spec changed
or the controller acted on it; a short user read neither completes nor retries a batch; unknown users
are not membership drift.

Harnesses: the controller's loop on the simulator (tests/test_convergence.py, with the recording runner
of tests/test_observation_scope.py) and the in-process reconciler of tests/support/controller.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from controller.desired.models import Batch, BatchState
from controller.planner.plan import plan
from controller.runtime import drift
from controller.runtime.observe import observe
from controller.sim.exchange import state as sim_state
from tests.support.controller import PILOT, PILOT_MEMBERS, Workspace, desired_files, make_workspace
from tests.test_convergence import Loop, batch, desired_state, simulators
from tests.test_observation_scope import reads, recorded

C, S = BatchState.COMPLETED, BatchState.STARTED


# --- 1. batches-completed: a failed member of a Synced batch whose completion is unsupported --------


def test_a_failed_member_of_a_synced_unsupported_batch_is_named_and_force_lets_the_cutover_go() -> None:
    done = batch("Batch1-IT", C, 3)
    desired = desired_state((done,), "r1")
    with simulators(completion=sim_state.Completion.UNSUPPORTED) as loop:
        for member in done.members:
            loop.simulator.add_recipient(member.address)
        loop.simulator.fail_user(
            done.members[0].address,
            exception_type="TooManyBadItemsPermanentException",
            message="too many bad items",
        )
        for _ in range(20):  # create, sync, refused completion, three retries spent
            loop.run_pass(desired)
            loop.simulator.advance(timedelta(hours=1))
        assert loop.simulator.batch_status("Batch1-IT") == "SyncedWithErrors"
        assert loop.memory.completionUnsupported == ["Batch1-IT"]
        snapshot = loop.observe(desired)

        held = plan(desired, snapshot, loop.simulator.now)
        arrived = [b for b in held.blocked if b.gate == "members-arrived"]
        # contract §4: the gate names each member that has not arrived (as the table case
        # cutover-held-by-synced-failed-member-unsupported does with a whole-directory snapshot)
        assert arrived and done.members[0].address in arrived[0].reason, held.blocked

        forced = plan(desired, snapshot, loop.simulator.now, force=True)
        assert not [b for b in forced.blocked if b.gate == "batches-completed" and "MX" in b.object], (
            forced.blocked
        )


# --- 2. drift of a finished batch absorbed once its desired spec changed or it was acted on ----------


def _finished_pilot(root: Path) -> tuple[Workspace, dict[str, str]]:
    """The pilot created, synced, completed and verified finished (no DNS: no time gate)."""
    workspace = make_workspace(root, pilot="started")
    files = desired_files(pilot="completed")
    del files["desired/dns/contoso.com.yaml"]
    (workspace.repo.path / "desired" / "dns" / "contoso.com.yaml").unlink()
    workspace.commit(message="Exchange only")
    workspace.run_pass()
    with workspace.tenant() as tenant:
        tenant.advance(timedelta(hours=1))
    workspace.commit(files, message="complete the pilot")
    workspace.run_pass()  # Complete-MigrationBatch
    with workspace.tenant() as tenant:
        tenant.advance(timedelta(hours=1))
    verified = workspace.run_pass()  # seen Completed with every member arrived: remembered
    assert "pilot" in verified.report.memory.finished
    steady = workspace.run_pass()  # the pilot's users are no longer read
    assert steady.plan.actions == () and steady.plan.drift == ()
    return workspace, files


def test_control_a_user_removed_by_hand_from_a_finished_batch_is_drift(tmp_path: Path) -> None:
    """The same removal without a spec change in between is reported (passes today)."""
    workspace, _ = _finished_pilot(tmp_path / "ws")
    with workspace.tenant() as tenant:
        tenant.call("Remove-MigrationUser", {"Identity": PILOT_MEMBERS[0]}, by_hand=True)
    after = workspace.run_pass()
    assert [d.object for d in after.plan.drift] == [f"batch/{PILOT}"], after.plan.drift


@pytest.mark.parametrize("how", ["notification emails changed in the repository", "settings corrected"])
def test_a_user_removed_by_hand_from_a_finished_batch_is_drift_after_its_spec_changed(
    tmp_path: Path, how: str
) -> None:
    workspace, files = _finished_pilot(tmp_path / "ws")
    if how.startswith("notification"):
        files["desired/migration.yaml"] = files["desired/migration.yaml"].replace(
            "migration-team@contoso.com", "migration-ops@contoso.com"
        )
        workspace.commit(files, message="a new notification list")
    else:  # a person changes a setting the controller corrects: the batch is acted on
        with workspace.tenant() as tenant:
            tenant.call(
                "Set-MigrationBatch",
                {"Identity": PILOT, "NotificationEmails": ["someone@contoso.com"]},
                by_hand=True,
            )
    changed = workspace.run_pass()
    assert [a.cmdlet for a in changed.plan.actions if hasattr(a, "cmdlet")] == ["Set-MigrationBatch"]
    workspace.run_pass()  # steady again; the pilot is still finished

    with workspace.tenant() as tenant:
        tenant.call("Remove-MigrationUser", {"Identity": PILOT_MEMBERS[0]}, by_hand=True)
    after = workspace.run_pass()
    # Without the change above the same removal is reported as drift (test_observation_scope and the
    # control run); here it is silently taken as the new baseline.
    assert [d.object for d in after.plan.drift] == [f"batch/{PILOT}"], after.plan.drift


# --- 3. an IncompleteRead ("nothing is planned on them") still lets users-dependent actions through ---


@contextmanager
def _synced(members: int, *, fail_first: bool = False) -> Iterator[tuple[Loop, Batch]]:
    """A started batch synced (its first member failing permanently when `fail_first`)."""
    started = batch("Batch1-IT", S, members)
    with simulators() as loop:
        for member in started.members:
            loop.simulator.add_recipient(member.address)
        if fail_first:
            loop.simulator.fail_user(
                started.members[0].address, exception_type="TooManyBadItemsPermanentException", message="bad"
            )
        for _ in range(8):
            loop.run_pass(desired_state((started,), "r1"))
            loop.simulator.advance(timedelta(hours=1))
        yield loop, started


def test_a_short_user_read_does_not_complete_a_batch_whose_membership_changed() -> None:
    with _synced(4) as (loop, started):
        assert loop.simulator.batch_status("Batch1-IT") == "Synced"
        runner = recorded(loop)
        runner.short.add("Get-MigrationUser")
        desired = desired_state((replace(started, state=C, members=started.members[1:]),), "r2")
        snapshot, _ = observe(
            desired, exchange=loop.client, dns=loop.dns, memory=loop.memory, now=loop.simulator.now
        )
        assert snapshot.exchange.users is None
        assert "IncompleteRead" in snapshot.unreadable["exchange/users"]
        result = plan(desired, snapshot, loop.simulator.now)
        # A full read plans Remove-MigrationUser first, then Complete-MigrationBatch.
        assert [a.cmdlet for a in result.actions if hasattr(a, "cmdlet")] == [], result.actions


def test_a_short_user_read_does_not_retry_a_failed_user_removed_in_the_repository() -> None:
    with _synced(4, fail_first=True) as (loop, started):
        assert loop.simulator.batch_status("Batch1-IT") == "SyncedWithErrors"
        runner = recorded(loop)
        runner.short.add("Get-MigrationUser")
        desired = desired_state((replace(started, members=started.members[1:]),), "r2")
        snapshot, _ = observe(
            desired, exchange=loop.client, dns=loop.dns, memory=loop.memory, now=loop.simulator.now
        )
        assert snapshot.exchange.users is None
        result = plan(desired, snapshot, loop.simulator.now)
        assert "Start-MigrationBatch" not in [a.cmdlet for a in result.actions if hasattr(a, "cmdlet")], (
            result.actions
        )


# --- 4. unknown users reported as membership drift -------------------------------------------------


def test_unknown_users_are_not_membership_drift() -> None:
    started = batch("Batch1-IT", S, 4)
    desired = desired_state((started,), "r1")
    with simulators() as loop:
        for member in started.members:
            loop.simulator.add_recipient(member.address)
        for _ in range(3):
            loop.run_pass(desired)
            loop.simulator.advance(timedelta(hours=1))
        prints = drift.desired_fingerprints(desired)
        _, baselines = drift.detect(
            desired=prints,
            observed=drift.observed_facets(desired, loop.observe(desired)),
            baselines={},
            acted=set(),
        )
        runner = recorded(loop)
        runner.short.add("Get-MigrationUser")
        snapshot, _ = observe(
            desired, exchange=loop.client, dns=loop.dns, memory=loop.memory, now=loop.simulator.now
        )
        assert snapshot.exchange.users is None
        found, _ = drift.detect(
            desired=prints,
            observed=drift.observed_facets(desired, snapshot),
            baselines=baselines,
            acted=set(),
        )
        assert found == [], found


# --- 5. where Exchange refuses completion nothing is ever finished --------------------------------


def test_a_synced_batch_that_counts_as_complete_is_not_read_every_pass() -> None:
    batches = (batch("Batch1-IT", C, 5), batch("Batch2-Sales", C, 12))
    desired = desired_state(batches, "r1")
    with simulators(completion=sim_state.Completion.UNSUPPORTED) as loop:
        for each in batches:
            for member in each.members:
                loop.simulator.add_recipient(member.address)
        loop.converge(desired)
        assert loop.memory.cutoverAt is not None
        loop.run_pass(desired)
        runner = recorded(loop)
        result = loop.run_pass(desired)
        assert result.actions == ()
        assert not [call for call in reads(runner) if call.startswith("Get-MigrationUser")], reads(runner)
