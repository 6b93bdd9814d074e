"""Observation proportional to unfinished work (contract §3.1, docs/observation.md): what a pass reads,
that a finished batch costs no read, and that nothing is missed when something changes under it.

The controller's own loop on the simulator (tests/test_convergence.py's Loop), with every cmdlet call
recorded at the runner seam.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from controller.desired.models import BatchState, Member
from controller.exchange.client import FILTER_CHUNK, ExchangeClient
from controller.model.snapshot import Memory
from controller.planner.plan import plan
from controller.runtime.observe import observe
from controller.sim.exchange.simulator import LocalRunner
from controller.sim.exchange.store import SimRunner
from tests.support.gateway import PASSWORD as GATEWAY_PASSWORD
from tests.test_convergence import Loop, batch, desired_state, simulators

C, S = BatchState.COMPLETED, BatchState.STARTED


class Recording(LocalRunner):
    """The simulator's runner, recording (cmdlet, parameters, selected properties) and able to drop the
    last row of chosen reads, as a short read would."""

    def __init__(self, loop: Loop) -> None:
        super().__init__(loop.simulator)
        self.calls: list[tuple[str, dict[str, object], tuple[str, ...]]] = []
        self.short: set[str] = set()

    def run(
        self, cmdlet: str, parameters: Mapping[str, object], select: Sequence[str] = ()
    ) -> list[dict[str, object]]:
        self.calls.append((cmdlet, dict(parameters), tuple(select)))
        rows = super().run(cmdlet, parameters, select)
        return rows[:-1] if cmdlet in self.short and rows else rows


def recorded(loop: Loop) -> Recording:
    runner = Recording(loop)
    loop.client = ExchangeClient(runner, resolve_secret=lambda ref: "CONTOSO\\m:pw", sleep=lambda s: None)
    return runner


def reads(runner: Recording) -> Counter[str]:
    return Counter(
        f"{cmdlet} {parameters.get('BatchId', '')}".strip()
        for cmdlet, parameters, _ in runner.calls
        if cmdlet.startswith("Get-")
    )


def users_read_of(runner: Recording, batch_name: str) -> bool:
    """Whether a pass read this batch's users: by -BatchId, or in one read of every batch's users."""
    return any(
        cmdlet == "Get-MigrationUser" and parameters.get("BatchId") in (batch_name, None)
        for cmdlet, parameters, _ in runner.calls
    )


def steady(loop: Loop) -> tuple[object, object]:
    """Batch1 completed and verified, Batch2 still syncing (its members take a week each)."""
    done, live = batch("Batch1-IT", C, 5), batch("Batch2-Sales", S, 4)
    for member in (*done.members, *live.members):
        loop.simulator.add_recipient(member.address)
    for member in live.members:
        loop.simulator.set_sync_time(member.address, timedelta(days=7))
    desired = desired_state((done, live), "r1")
    for _ in range(12):  # create, start, sync and complete Batch1
        loop.run_pass(desired)
        loop.simulator.advance(timedelta(hours=1))
    assert loop.simulator.batch_status("Batch1-IT") == "Completed"
    assert "batch1-it" in loop.memory.finished
    return done, live


def test_a_steady_pass_reads_the_batch_list_alone_until_a_count_or_status_moves() -> None:
    """Batch1 is finished; Batch2 syncs with its membership read and matching before and no failure:
    neither batch's users can change a decision, so the endpoint and the batch list are the whole read.
    A user removed by hand from the syncing batch, or the end of its sync, reads it again."""
    with simulators() as loop:
        done, live = steady(loop)
        assert "batch2-sales" in loop.memory.memberships
        runner = recorded(loop)
        result = loop.run_pass(desired_state((done, live), "r1"))
        assert result.actions == ()
        assert [w.object for w in result.waiting] == ["batch/Batch2-Sales"]  # its progress still shown
        assert reads(runner) == Counter({"Get-MigrationEndpoint": 1, "Get-MigrationBatch": 1})
        assert "TotalCount" in {cmdlet: s for cmdlet, _, s in runner.calls}["Get-MigrationBatch"]

        runner.calls.clear()
        loop.simulator.call("Remove-MigrationUser", {"Identity": live.members[0].address}, by_hand=True)
        result = loop.run_pass(desired_state((done, live), "r1"))
        assert reads(runner)["Get-MigrationUser Batch2-Sales"] == 1
        selected = {cmdlet: s for cmdlet, _, s in runner.calls}
        assert selected["Get-MigrationUser"] == ("Identity", "BatchId", "Status", "ErrorSummary")
        blocked_or_acted = [a.object for a in result.actions] + [b.object for b in result.blocked]
        assert "batch/Batch2-Sales" in blocked_or_acted or any("added" in w.reason for w in result.waiting), (
            result.actions,
            result.blocked,
            result.waiting,
        )

        runner.calls.clear()
        loop.simulator.advance(timedelta(days=8))  # the sync ends: Synced, read again to verify
        loop.run_pass(desired_state((done, live), "r1"))
        assert reads(runner)["Get-MigrationUser Batch2-Sales"] == 1


def test_a_failure_in_a_quietly_syncing_batch_reads_it_again() -> None:
    with simulators() as loop:
        done, live = steady(loop)
        runner = recorded(loop)
        with_failure = batch("Batch3-Ops", S, 3)
        for member in with_failure.members:
            loop.simulator.add_recipient(member.address)
        loop.simulator.set_sync_time(with_failure.members[1].address, timedelta(days=7))
        loop.simulator.fail_user(with_failure.members[0].address, exception_type="X", message="bad")
        desired = desired_state((done, live, with_failure), "r2")
        loop.run_pass(desired)
        loop.simulator.advance(timedelta(hours=2))  # member 0 failed, member 1 still syncing
        runner.calls.clear()
        loop.run_pass(desired)
        assert users_read_of(runner, "Batch3-Ops")  # FailedCount > 0: its users decide a retry


def test_the_finished_batch_still_counts_as_arrived_for_the_cutover() -> None:
    with simulators() as loop:
        done, live = steady(loop)
        runner = recorded(loop)
        # Batch2 is given up in the repository: Batch1, verified finished, alone decides the cutover.
        desired = desired_state((done, replace(live, state=BatchState.REMOVED)), "r2")
        snapshot = loop.observe(desired)
        assert snapshot.exchange.usersRead == [] and snapshot.exchange.users == []  # Batch2 syncs quietly
        result = plan(desired, snapshot, loop.simulator.now)
        gates = {b.gate for b in result.blocked}
        assert "batches-completed" not in gates and "members-arrived" not in gates, result.blocked
        assert "unknown" not in gates
        assert reads(runner)["Get-Recipient"] == 0


def test_a_user_removed_by_hand_from_a_finished_batch_is_read_again_and_reported() -> None:
    with simulators() as loop:
        done, live = steady(loop)
        runner = recorded(loop)
        gone = done.members[0].address
        loop.simulator.call("Remove-MigrationUser", {"Identity": gone}, by_hand=True)
        result = loop.run_pass(desired_state((done, live), "r1"))
        assert users_read_of(runner, "Batch1-IT")  # TotalCount changed: read again
        blocked = [b for b in result.blocked if b.object == "batch/Batch1-IT"]
        assert blocked and "1 added" in blocked[0].reason, result.blocked
        assert "batch1-it" not in loop.memory.finished


def test_a_member_added_in_the_repository_to_a_finished_batch_is_seen() -> None:
    with simulators() as loop:
        done, live = steady(loop)
        runner = recorded(loop)
        grown = replace(done, members=(*done.members, Member("late.joiner@contoso.com")))
        result = loop.run_pass(desired_state((grown, live), "r2"))
        assert users_read_of(runner, "Batch1-IT")
        blocked = [b for b in result.blocked if b.object == "batch/Batch1-IT"]
        assert blocked and "membership changed" in blocked[0].reason


def test_a_short_user_read_is_unknown_and_nothing_acts_on_it() -> None:
    with simulators() as loop:
        done, live = steady(loop)
        runner = recorded(loop)
        runner.short.add("Get-MigrationUser")
        desired = desired_state((done, replace(live, members=live.members[1:])), "r2")  # one removed
        snapshot, _ = observe(
            desired, exchange=loop.client, dns=loop.dns, memory=loop.memory, now=loop.simulator.now
        )
        assert snapshot.exchange.users is None
        assert "IncompleteRead" in snapshot.unreadable["exchange/users"]
        result = plan(desired, snapshot, loop.simulator.now)
        assert not [a for a in result.actions if "Remove-MigrationUser" in str(a)]
        assert "batch1-it" in result.memory.finished  # unknown neither confirms nor refutes


def test_recipients_are_read_by_filter_for_the_members_of_a_new_batch_only() -> None:
    with simulators() as loop:
        done, live = steady(loop)
        runner = recorded(loop)
        new = batch("Batch3-Ops", S, FILTER_CHUNK + 3)
        for member in new.members[1:]:
            loop.simulator.add_recipient(member.address)
        result = loop.run_pass(desired_state((done, live, new), "r2"))
        recipient_calls = [p for cmdlet, p, _ in runner.calls if cmdlet == "Get-Recipient"]
        assert len(recipient_calls) == 2  # FILTER_CHUNK + 3 addresses: two filtered reads
        filters = " ".join(str(p["Filter"]) for p in recipient_calls)
        assert all(m.address in filters for m in new.members)
        assert "batch1-it" not in filters.lower() and "batch2-sales" not in filters.lower()
        blocked = [b for b in result.blocked if b.object == "batch/Batch3-Ops"]
        assert blocked and blocked[0].gate == "preflight" and new.members[0].address in blocked[0].reason


def test_a_fresh_memory_reads_everything_once_and_then_remembers() -> None:
    with simulators() as loop:
        done, live = steady(loop)
        loop.memory = Memory()  # a controller whose memory was lost reads every batch again
        runner = recorded(loop)
        loop.run_pass(desired_state((done, live), "r1"))
        assert users_read_of(runner, "Batch1-IT")
        assert "batch1-it" in loop.memory.finished
        runner.calls.clear()
        loop.run_pass(desired_state((done, live), "r1"))
        assert not users_read_of(runner, "Batch1-IT")


def test_over_the_psrp_gateway_a_steady_pass_reads_only_the_unfinished_batch(tmp_path: Path) -> None:
    """The controller end to end over real PSRP: once the pilot is completed and verified, a pass reads
    the endpoint, the batch list and the wave's users, with no row of the pilot's users on the wire."""
    from tests.support.controller import PILOT, WAVE, WAVE_MEMBERS, batch_yaml, make_workspace
    from tests.support.gateway import controller_psrp, running_gateway

    with running_gateway(SimRunner(tmp_path / "ws" / "exchange.sqlite")) as gateway:
        workspace = make_workspace(
            tmp_path / "ws",
            pilot="started",
            wave="started",
            exchange={"backend": "psrp", "psrp": controller_psrp(gateway)},
            clock="system",
        )
        workspace.env["STAGECTL_TEST_GATEWAY_PASSWORD"] = GATEWAY_PASSWORD
        (workspace.repo.path / "desired" / "dns" / "contoso.com.yaml").unlink()  # no DNS time gate
        workspace.commit(message="Exchange only")
        with workspace.tenant() as tenant:
            for address in WAVE_MEMBERS:
                tenant.set_sync_time(address, timedelta(days=7))
        workspace.run_pass()  # endpoint, both batches created and started
        with workspace.tenant() as tenant:
            tenant.advance(timedelta(hours=1))
        workspace.commit_desired(pilot="completed", wave="started")
        workspace.run_pass()  # Complete-MigrationBatch
        with workspace.tenant() as tenant:
            tenant.advance(timedelta(hours=1))
        workspace.run_pass()  # the pilot is seen Completed with every member arrived: remembered
        assert workspace.exchange().batch_status(PILOT) == "Completed"

        seen = len(gateway.received)
        rows_before = gateway.rows_written
        result = workspace.run_pass()
        calls = [(c.cmdlet, c.parameters.get("BatchId")) for c in gateway.received[seen:]]
        assert calls == [("Get-MigrationEndpoint", None), ("Get-MigrationBatch", None)], calls
        assert result.plan.actions == ()
        assert gateway.rows_written.get("Get-MigrationUser", 0) == rows_before.get("Get-MigrationUser", 0)

        # A member leaves the wave in the repository: the wave's users are read, the pilot's are not.
        workspace.commit(
            {"desired/batches/wave1.yaml": batch_yaml(WAVE, WAVE_MEMBERS[1:], state="started")},
            message="Kenji stays on-premises",
        )
        seen, rows_before = len(gateway.received), gateway.rows_written
        result = workspace.run_pass()
        calls = [(c.cmdlet, c.parameters.get("BatchId")) for c in gateway.received[seen:]]
        assert ("Get-MigrationUser", WAVE) in calls and ("Get-MigrationUser", PILOT) not in calls, calls
        users_rows = gateway.rows_written["Get-MigrationUser"] - rows_before.get("Get-MigrationUser", 0)
        assert users_rows == len(WAVE_MEMBERS)  # none of the pilot's
        assert [a.cmdlet for a in result.plan.actions if hasattr(a, "cmdlet")] == ["Remove-MigrationUser"]


def test_with_several_unfinished_batches_and_little_finished_one_read_takes_every_user() -> None:
    """A small tenant mid-migration: one Get-MigrationUser for every batch costs fewer calls than one per
    unfinished batch and brings few finished rows; each batch's rows are still checked against its
    TotalCount, and a short whole read is unknown."""
    with simulators() as loop:
        done, live = steady(loop)
        other = batch("Batch3-Ops", S, 3)
        for member in other.members:
            loop.simulator.add_recipient(member.address)
            loop.simulator.set_sync_time(member.address, timedelta(days=7))
        desired = desired_state((done, live, other), "r2")
        loop.run_pass(desired)  # creates and starts Batch3
        loop.memory = loop.memory.model_copy(update={"memberships": {}})  # neither known to be quiet
        runner = recorded(loop)
        loop.run_pass(desired)
        assert reads(runner)["Get-MigrationUser"] == 1 and not any(
            key.startswith("Get-MigrationUser ") for key in reads(runner)
        ), reads(runner)
        runner.calls.clear()
        runner.short.add("Get-MigrationUser")
        loop.memory = loop.memory.model_copy(update={"memberships": {}})
        snapshot = loop.observe_unchecked(desired)
        assert snapshot.exchange.users is None
        assert "IncompleteRead: Get-MigrationUser returned" in snapshot.unreadable["exchange/users"]


def test_read_whole_only_when_it_saves_calls_worth_more_than_the_rows_it_adds() -> None:
    from controller.model.snapshot import ObservedBatch
    from controller.planner.reads import ROWS_PER_CALL, read_whole

    def rows(name: str, count: int) -> ObservedBatch:
        return ObservedBatch(Identity=name, Status="Syncing", TotalCount=count)

    live = [rows(f"L{i}", 2000) for i in range(5)]
    finished = [rows(f"F{i}", 2000) for i in range(95)]
    assert not read_whole(live, live + finished)  # the steady 200,000: a read per unfinished batch
    assert not read_whole(live[:1], live[:1] + finished[:1])  # one unfinished batch: one read anyway
    small = [rows(f"F{i}", 100) for i in range(3)]
    assert read_whole(live[:2], live[:2] + small)
    assert not read_whole(live[:2], [*live[:2], rows("big", ROWS_PER_CALL + 1)])
    assert read_whole([*live, finished[0]], [*live, finished[0]])  # 12,000 rows in one reply
    first_pass = live + finished  # nothing verified yet: 200,000 rows would be one reply
    assert not read_whole(first_pass, first_pass)


def test_a_planned_batch_found_ready_is_not_looked_up_again_until_it_changes_or_starts() -> None:
    with simulators() as loop:
        planned = batch("Batch1-IT", BatchState.PLANNED, 4)
        for member in planned.members:
            loop.simulator.add_recipient(member.address)
        runner = recorded(loop)
        first = loop.run_pass(desired_state((planned,), "r1"))
        assert reads(runner)["Get-Recipient"] == 1
        assert "planned; ready: all 4 members passed the preflight" in [n.reason for n in first.notes]
        assert loop.memory.ready == {"batch1-it": planned.members_digest}
        runner.calls.clear()
        again = loop.run_pass(desired_state((planned,), "r1"))
        assert reads(runner)["Get-Recipient"] == 0
        assert any("passed the preflight when last checked" in n.reason for n in again.notes)
        runner.calls.clear()
        grown = replace(planned, members=(*planned.members, Member("late.joiner@contoso.com")))
        changed = loop.run_pass(desired_state((grown,), "r2"))  # not a mail user yet
        assert reads(runner)["Get-Recipient"] == 1 and loop.memory.ready == {}
        assert any("not ready: mail user: 1 of 5" in n.reason for n in changed.notes)
        runner.calls.clear()
        loop.run_pass(desired_state((replace(planned, state=S),), "r3"))  # the start checks every member
        recipient_filters = [str(p["Filter"]) for c, p, _ in runner.calls if c == "Get-Recipient"]
        assert recipient_filters and all(m.address in recipient_filters[0] for m in planned.members)
        assert loop.simulator.calls("New-MigrationBatch") == 1
