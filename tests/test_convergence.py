"""Convergence: observe -> plan -> apply -> advance the clock, repeated on the simulators, reaches a fixed
point without ever sending a cmdlet twice for one effect or a cmdlet Exchange refuses (issue 3, item 6).

**Converged** means the plan made from a fresh observation has no actions, nothing waiting (no batch in
flight, no sync under way) and nothing blocked by a gate that time alone lifts (`ttl-lead`, or
`remove-after-cutover` once the cutover has happened). What may remain is blocked or noted on what only a
person can change: a `planned` batch, members that are not mail users (the `preflight`), a cutover held by
`batches-completed` because of those, `remove-after-cutover` when no cutover will ever happen. The test
then checks that this is a true fixed point: a week later the plan still has no actions and the same
waits and blocks, and planning the same snapshot again with the plan's own memory changes nothing.

The random desired states come in two revisions, each batch moving forward (created -> started, started
-> stopped, completed -> removed ...), the second committed after the first converged or while it is
still under way; some members are not mail users, some syncs fail and are retried.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.desired.models import (
    Batch,
    BatchState,
    DesiredState,
    Endpoint,
    Member,
    MigrationSpec,
    Record,
    RecordType,
    Zone,
)
from controller.exchange.client import ExchangeClient
from controller.model.actions import Action, CsvRows, DnsAction, ExchangeAction, Plan
from controller.model.snapshot import Memory, RRset, Snapshot
from controller.model.statuses import MOVING, BatchStatus
from controller.planner.plan import plan
from controller.runtime.applier import Outcome, apply_plan
from controller.runtime.observe import observe
from controller.sim.dns import DnsSimBackend
from controller.sim.exchange import state as sim_state
from controller.sim.exchange.simulator import ExchangeSimulator, LocalRunner

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
STEP = timedelta(hours=2)
ZONE = "contoso.com"
ONPREM_MX, EXO_MX = "10 mail.contoso.com.", "0 contoso-com.mail.protection.outlook.com."
ONPREM_SPF, EXO_SPF = "v=spf1 mx -all", "v=spf1 include:spf.protection.outlook.com -all"
COEXISTENCE_SPF = "v=spf1 mx include:spf.protection.outlook.com -all"
VERIFICATION = "google-site-verification=abc123"
WWW = "203.0.113.10"
# Passes per desired revision. Batches settle within 12 passes of 2 h (≤ 150 members at 3 h each on 20
# slots, a StartAfter up to 12 h away, 10 min of Completing), and meanwhile the cutover waits ttlLeadTime =
# 48 h after the lowered TTL is first observed (24 passes); the removals then wait 72 h after the cutover is
# seen (36 passes): 24 + 1 + 36 + 1, plus a few passes of slack.
MAX_PASSES = 70
WRITES = frozenset(
    {
        "New-MigrationEndpoint",
        "Set-MigrationEndpoint",
        "New-MigrationBatch",
        "Set-MigrationBatch",
        "Start-MigrationBatch",
        "Stop-MigrationBatch",
        "Complete-MigrationBatch",
        "Remove-MigrationBatch",
        "Remove-MigrationUser",
    }
)
# A gate that the clock alone lifts; anything else blocked at convergence waits for a person.
TIMED_GATES = frozenset({"ttl-lead"})


def migration(*, retuned: bool = False) -> MigrationSpec:
    """`retuned`: a later revision that raises the endpoint's concurrency and adds a notification address."""
    return MigrationSpec(
        endpoint=Endpoint(
            name="StagedEndpoint",
            exchange_server="mail.contoso.com",
            rpc_proxy_server="mail.contoso.com",
            email_address="migration.admin@contoso.com",
            credentials_ref="env:ONPREM_MIGRATION_CREDENTIALS",
            max_concurrent_migrations=40 if retuned else 20,
        ),
        notification_emails=["migration-team@contoso.com", *(["helpdesk@contoso.com"] if retuned else [])],
    )


def records() -> tuple[Record, ...]:
    return (
        Record(ZONE, "@", RecordType.MX, 3600, (EXO_MX,), cutover=True),
        Record(ZONE, "@", RecordType.TXT, 3600, spf=EXO_SPF),
        Record(ZONE, "www", RecordType.A, 300, (WWW,)),
    )


def desired_state(batches: tuple[Batch, ...], revision: str, *, retuned: bool = False) -> DesiredState:
    return DesiredState(
        migration=migration(retuned=retuned),
        name="contoso",
        batches=batches,
        zones=(Zone(ZONE, records()),),
        revision=revision,
        digest=revision,
    )


@dataclass(frozen=True)
class Applied:
    """One action the loop sent, with the snapshot its plan was made from."""

    pass_number: int
    snapshot: Snapshot
    outcome: Outcome

    @property
    def action(self) -> Action:
        return self.outcome.action


@dataclass
class Loop:
    """The controller's loop on the two simulators; memory is carried from each ApplyReport to the next."""

    simulator: ExchangeSimulator
    dns: DnsSimBackend
    memory: Memory = field(default_factory=Memory)
    applied: list[Applied] = field(default_factory=list)
    passes: int = 0

    def __post_init__(self) -> None:
        self.client = ExchangeClient(
            LocalRunner(self.simulator),
            resolve_secret=lambda ref: "CONTOSO\\migrator:secret",
            sleep=lambda seconds: None,
        )

    def observe(self, desired: DesiredState) -> Snapshot:
        snapshot = self.observe_unchecked(desired)
        assert not self.client.unreadable, self.client.unreadable
        return snapshot

    def observe_unchecked(self, desired: DesiredState) -> Snapshot:
        """The snapshot, whatever could not be read."""
        snapshot, _ = observe(
            desired, exchange=self.client, dns=self.dns, memory=self.memory, now=self.simulator.now
        )
        return snapshot

    def run_pass(self, desired: DesiredState) -> Plan:
        """One pass; returns the plan (before it was applied)."""
        self.passes += 1
        snapshot = self.observe(desired)
        result = plan(desired, snapshot, self.simulator.now)
        report = apply_plan(result, exchange=self.client, dns=self.dns)
        self.applied += [Applied(self.passes, snapshot, outcome) for outcome in report.outcomes]
        # (d) Exchange and DNS accept every action the planner sends.
        assert report.failed is None, f"pass {self.passes}: {report.failed}"
        self.memory = report.memory
        return result

    def converge(self, desired: DesiredState) -> Plan:
        """Passes until converged (see the module docstring); the clock moves STEP after each pass."""
        for _ in range(MAX_PASSES):
            result = self.run_pass(desired)
            if converged(result, self.memory):
                return result
            self.simulator.advance(STEP)
        raise AssertionError(f"not converged after {MAX_PASSES} passes: {describe(result)}")


def converged(result: Plan, memory: Memory) -> bool:
    timed = [b for b in result.blocked if b.gate in TIMED_GATES]
    timed += [b for b in result.blocked if b.gate == "remove-after-cutover" and memory.cutoverAt]
    return not result.actions and not result.waiting and not timed


def describe(result: Plan) -> str:
    return "; ".join(
        [f"act {a.object}: {a.reason}" for a in result.actions]
        + [f"wait {w.object}: {w.reason}" for w in result.waiting]
        + [f"blocked {b.object} [{b.gate}]: {b.reason}" for b in result.blocked]
    )


@contextmanager
def simulators(*, completion: sim_state.Completion = sim_state.Completion.SUPPORTED) -> Iterator[Loop]:
    with tempfile.TemporaryDirectory(prefix="stagectl-convergence-") as temp:
        dns = DnsSimBackend(Path(temp) / "dns.json")
        dns.seed_zone(
            ZONE,
            [
                RRset(name="@", type="MX", ttl=3600, values=[ONPREM_MX]),
                RRset(name="@", type="TXT", ttl=3600, values=[ONPREM_SPF, VERIFICATION]),
                RRset(name="www", type="A", ttl=3600, values=["198.51.100.7"]),
            ],
        )
        yield Loop(ExchangeSimulator(now=T0, completion=completion), dns)


# --- what the loop must never do -----------------------------------------------------------------


def check_no_repeated_effects(loop: Loop) -> None:
    """(b) No cmdlet twice for the same effect, counted from the applied outcomes."""
    exchange = [a for a in loop.applied if isinstance(a.action, ExchangeAction)]
    once = Counter(
        (a.action.cmdlet, a.action.object)
        for a in exchange
        if a.action.cmdlet
        in (
            "New-MigrationEndpoint",
            "New-MigrationBatch",
            "Stop-MigrationBatch",
            "Complete-MigrationBatch",
            "Remove-MigrationBatch",
        )
    )
    assert [key for key, n in once.items() if n > 1] == []
    removed_users = Counter(
        str(a.action.params["Identity"]).lower()
        for a in exchange
        if a.action.cmdlet == "Remove-MigrationUser"
    )
    assert [user for user, n in removed_users.items() if n > 1] == []
    added: Counter[tuple[str, str]] = Counter()
    settings_sent: Counter[tuple[str, str]] = Counter()
    for a in exchange:
        action = a.action
        assert isinstance(action, ExchangeAction)
        batch = str(action.params.get("Identity", action.params.get("Name", ""))).lower()
        status = observed_status(a.snapshot, batch)
        if action.cmdlet == "Start-MigrationBatch":
            # Never on a batch already syncing or settling; a retry needs failed users to retry.
            retry = bool(failed_users(a.snapshot, batch))
            assert status in (BatchStatus.CREATED, BatchStatus.STOPPED) or retry, (a.pass_number, status)
        if action.cmdlet == "Set-MigrationBatch":
            rows = action.params.get("CSVData")
            if isinstance(rows, CsvRows):
                assert status not in MOVING, (a.pass_number, status)
                added.update((batch, address.lower()) for address in rows.addresses)
            settings = tuple(
                (k, str(v)) for k, v in action.parameters if k not in ("Identity", "AddUsers", "CSVData")
            )
            if settings:
                settings_sent[(batch, repr(settings))] += 1
    assert [key for key, n in added.items() if n > 1] == []
    assert [key for key, n in settings_sent.items() if n > 1] == []
    # DNS: every change changes something, and a second change of one RRset starts from what the first set.
    last: dict[str, DnsAction] = {}
    for a in loop.applied:
        action = a.action
        if not isinstance(action, DnsAction):
            continue
        assert (action.ttl, sorted(action.values)) != (
            action.previous_ttl,
            sorted(action.previous_values or ()),
        ), action
        before = last.get(action.object)
        if before is not None:
            assert (action.previous_ttl, sorted(action.previous_values or ())) == (
                before.ttl,
                sorted(before.values),
            ), "a DNS change planned on an observation older than the previous change"
            assert (action.ttl, sorted(action.values)) != (before.ttl, sorted(before.values))
        last[action.object] = action


def check_calls_match_outcomes(loop: Loop) -> None:
    """The simulator received exactly the writes the applier reports (nothing sent behind its back)."""
    sent = Counter(a.action.cmdlet for a in loop.applied if isinstance(a.action, ExchangeAction))
    for cmdlet in WRITES:
        assert loop.simulator.calls(cmdlet) == sent[cmdlet], cmdlet


def check_fixed_point(loop: Loop, desired: DesiredState, last: Plan) -> None:
    """(c) A week later the plan is still empty, with the same blocks; planning again changes nothing."""
    saved = loop.simulator.state.model_copy(deep=True)  # the loop goes on from here afterwards
    loop.simulator.advance(timedelta(days=7))
    snapshot = loop.observe(desired)
    loop.simulator.state = saved
    later = plan(desired, snapshot, snapshot.observedAt)
    assert later.actions == (), describe(later)
    assert {(b.object, b.gate) for b in later.blocked} == {(b.object, b.gate) for b in last.blocked}
    assert later.waiting == ()
    again = plan(desired, snapshot.model_copy(update={"memory": later.memory}), loop.simulator.now)
    assert again.actions == () and again.blocked == later.blocked and again.memory == later.memory


def observed_status(snapshot: Snapshot, batch: str) -> BatchStatus | None:
    for found in snapshot.exchange.batches or []:
        if found.Identity.lower() == batch:
            return BatchStatus.parse(found.Status)
    return None


def failed_users(snapshot: Snapshot, batch: str) -> list[str]:
    users = snapshot.exchange.users or []
    return [u.Identity for u in users if u.BatchId.lower() == batch and u.Status.lower() == "failed"]


# --- the property --------------------------------------------------------------------------------

P, C, S, X, D, R = (
    BatchState.PLANNED,
    BatchState.CREATED,
    BatchState.STARTED,
    BatchState.STOPPED,
    BatchState.COMPLETED,
    BatchState.REMOVED,
)
# (first revision, second revision) per batch: the forward moves an administrator commits (contract §2).
PATHS = [(C, S), (S, X), (S, D), (D, R), (P, S), (P, D), (X, S), (C, D), (P, C), (X, D)]
PATHS += [(state, state) for state in (P, C, S, X, D)]
TO_THE_END = [(first, final) for first, final in PATHS if final in (D, R)]  # the migration carried through


@dataclass(frozen=True)
class Scenario:
    paths: tuple[tuple[Batch, Batch], ...]  # each batch in the first and in the second revision
    not_mail_users: frozenset[str]  # lower-cased members with no mail user in Exchange Online
    plain_users: frozenset[str]  # of those, the ones that exist as a plain User (not migratable)
    failing: tuple[tuple[str, int], ...]  # mail users whose first syncs fail (fewer times than retryFailed)
    switch_after: int | None  # passes of the first revision before the second is committed; None: converged
    retuned: bool  # the second revision also changes endpoint and batch settings
    slow_sync: bool  # each mailbox takes 3 h to sync instead of 20 min, so passes see batches Syncing

    def ready(self, batch: Batch) -> bool:
        return not any(m.key in self.not_mail_users for m in batch.members)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    paths: list[tuple[Batch, Batch]] = []
    missing: set[str] = set()
    tenant_complete = draw(st.booleans())
    to_the_end = draw(st.booleans())
    for number in range(draw(st.integers(1, 5))):
        size = draw(st.integers(1, 30))
        upper = draw(st.booleans())  # addresses as HR wrote them; Exchange compares them without case
        members = tuple(
            Member(f"User{number}.{i}@Contoso.com" if upper else f"user{number}.{i}@contoso.com")
            for i in range(size)
        )
        offset = draw(st.one_of(st.none(), st.integers(0, 12)))
        first_state, final_state = draw(st.sampled_from(TO_THE_END if to_the_end else PATHS))
        first = Batch(
            name=f"Batch{number}-Wave",
            state=first_state,
            members=members,
            start_after=None if offset is None else T0 + timedelta(hours=offset),
        )
        paths.append((first, replace(first, state=final_state)))
        if not tenant_complete:
            indexes = draw(st.lists(st.integers(0, size - 1), max_size=3, unique=True))
            missing.update(members[i].key for i in indexes)
    plain = draw(st.sets(st.sampled_from(sorted(missing)), max_size=2)) if missing else set()
    ready = sorted(m.key for first, _ in paths for m in first.members if m.key not in missing)
    failing = draw(st.lists(st.sampled_from(ready), max_size=2, unique=True)) if ready else []
    times = tuple((address, draw(st.integers(1, 2))) for address in failing)
    switch_after = draw(st.one_of(st.none(), st.integers(1, 3)))
    return Scenario(
        tuple(paths),
        frozenset(missing),
        frozenset(plain),
        times,
        switch_after,
        retuned=draw(st.booleans()),
        slow_sync=draw(st.booleans()),
    )


@settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_random_desired_states_converge(scenario: Scenario) -> None:
    with simulators() as loop:
        if scenario.slow_sync:
            loop.simulator.state.sync_seconds_default = timedelta(hours=3).total_seconds()
        for first, _ in scenario.paths:
            for member in first.members:
                if member.key in scenario.plain_users:
                    loop.simulator.add_recipient(member.address.lower(), sim_state.RecipientType.USER)
                elif member.key not in scenario.not_mail_users:
                    loop.simulator.add_recipient(member.address.lower())
        for address, times in scenario.failing:
            loop.simulator.fail_user(
                address, exception_type="MigrationTransientException", message="server busy", times=times
            )
        first = desired_state(tuple(first for first, _ in scenario.paths), "r1")
        if scenario.switch_after is None:
            check_fixed_point(loop, first, loop.converge(first))
        else:  # the second revision lands while the first is still under way
            for _ in range(scenario.switch_after):
                loop.run_pass(first)
                loop.simulator.advance(STEP)
        final = desired_state(tuple(final for _, final in scenario.paths), "r2", retuned=scenario.retuned)
        check_fixed_point(loop, final, loop.converge(final))
        check_no_repeated_effects(loop)
        check_calls_match_outcomes(loop)
        check_end_state(loop, scenario, final)


def check_end_state(loop: Loop, scenario: Scenario, desired: DesiredState) -> None:
    """What converged is what the repository asked for, as far as the gates let it."""
    snapshot = loop.observe(desired)
    cutover = cutover_expected(scenario)
    for first, final in scenario.paths:
        status = observed_status(snapshot, final.key)
        failing = any(m.key == address for m in final.members for address, _ in scenario.failing)
        expected = expected_statuses(
            first.state, final.state, ready=scenario.ready(final), failing=failing, cutover=cutover
        )
        assert status in expected, (
            final.name,
            first.state,
            final.state,
            status,
        )
        if status in (BatchStatus.SYNCED, BatchStatus.COMPLETED):
            assert loop.simulator.batch_status(final.name) == status.value
            synced = {
                u.Identity.lower()
                for u in snapshot.exchange.users or []
                if u.BatchId.lower() == final.key and u.Status in ("Synced", "Completed")
            }
            assert synced == {m.key for m in final.members} or status is BatchStatus.COMPLETED
    zone = {(rr.name, rr.type): rr for rr in snapshot.dns[ZONE] or []}
    mx, txt, www = zone[("@", "MX")], zone[("@", "TXT")], zone[("www", "A")]
    assert (www.ttl, www.values) == (300, [WWW])
    if cutover:
        assert (mx.ttl, mx.values) == (3600, [EXO_MX])
        assert sorted(txt.values) == sorted([VERIFICATION, EXO_SPF])
        assert snapshot.memory.cutoverAt is not None
    else:
        assert (mx.ttl, mx.values) == (300, [ONPREM_MX])  # lowered ahead of a cutover that waits
        # From the first started batch the SPF string authorises both until the MX swap (issue 12).
        started = any(
            BatchStatus.parse(b.Status) not in (None, BatchStatus.CREATED)
            for b in snapshot.exchange.batches or []
        )
        assert sorted(txt.values) == sorted([COEXISTENCE_SPF if started else ONPREM_SPF, VERIFICATION])
        assert snapshot.memory.cutoverAt is None
    endpoint = (snapshot.exchange.endpoints or [])[0]
    assert endpoint.MaxConcurrentMigrations == desired.migration.endpoint.max_concurrent_migrations


def expected_statuses(
    first: BatchState, final: BatchState, *, ready: bool, failing: bool, cutover: bool
) -> set[BatchStatus | None]:
    """The Status a batch may show at convergence; None: it does not exist in Exchange."""
    created = first in (C, X)  # New-MigrationBatch without -AutoStart
    if not ready:  # the preflight (contract §4) holds creation as well as the start: never created
        return {None}
    if final is P:
        return {None}
    if final is C or (final is X and created):
        return {BatchStatus.CREATED}
    if final is X:  # stopped while it synced, or found already synced or failed (nothing left to stop);
        # a stopped batch gets no retries, so an injected failure stays
        return {BatchStatus.STOPPED, BatchStatus.SYNCED} | (
            {BatchStatus.SYNCED_WITH_ERRORS, BatchStatus.FAILED} if failing else set()
        )
    if final is S:
        return {BatchStatus.SYNCED}
    if final is D:
        return {BatchStatus.COMPLETED}
    # removed: gone 72 h after the cutover; without one, remove-after-cutover holds it where it got to
    # (a batch removed before it completed gets no retries either)
    if cutover:
        return {None}
    return {BatchStatus.COMPLETED, BatchStatus.SYNCED} | (
        {BatchStatus.SYNCED_WITH_ERRORS, BatchStatus.FAILED} if failing else set()
    )


def cutover_expected(scenario: Scenario) -> bool:
    """batches-completed at the last revision: every batch not removed is completed and could start."""
    return all(
        final.state is D and scenario.ready(final) for _, final in scenario.paths if final.state is not R
    )


# --- scenarios -----------------------------------------------------------------------------------


def batch(name: str, state: BatchState, count: int, *, first: int = 0) -> Batch:
    return Batch(
        name, state, tuple(Member(f"{name.lower()}.{i}@contoso.com") for i in range(first, first + count))
    )


def test_completion_unsupported_counts_synced_as_complete() -> None:
    """exchange-facts §8: Complete-MigrationBatch refused is remembered, and the cutover still happens."""
    batches = (batch("Batch1-IT", BatchState.COMPLETED, 5), batch("Batch2-Sales", BatchState.COMPLETED, 12))
    desired = desired_state(batches, "r1")
    with simulators(completion=sim_state.Completion.UNSUPPORTED) as loop:
        for b in batches:
            for member in b.members:
                loop.simulator.add_recipient(member.address)
        last = loop.converge(desired)
        check_fixed_point(loop, desired, last)
        check_no_repeated_effects(loop)
        check_calls_match_outcomes(loop)
        assert loop.memory.completionUnsupported == ["Batch1-IT", "Batch2-Sales"]
        assert loop.simulator.calls("Complete-MigrationBatch") == 2  # once each, refused, never again
        assert {loop.simulator.batch_status(b.name) for b in batches} == {"Synced"}
        mx = next(rr for rr in loop.dns.rrsets(ZONE) or [] if rr.type == "MX")
        assert mx.values == [EXO_MX]
        assert loop.memory.cutoverAt is not None


@pytest.mark.parametrize("when", ["syncing", "synced"])
def test_members_added_and_removed_from_a_started_batch(when: str) -> None:
    """A second revision removes two members and adds three: one Remove-MigrationUser each, one
    -AddUsers with only the new rows (sent once the batch no longer syncs), then the batch syncs them."""
    before = batch("Batch1-IT", BatchState.STARTED, 10)
    after = replace(
        before, members=(*before.members[2:], *batch("Batch1-IT", BatchState.STARTED, 3, first=10).members)
    )
    with simulators() as loop:
        for member in (*before.members, *after.members):
            loop.simulator.add_recipient(member.address)
        first = desired_state((before,), "r1")
        if when == "syncing":
            loop.run_pass(first)
            assert loop.simulator.batch_status("Batch1-IT") == "Syncing"
        else:
            loop.converge(first)
            assert loop.simulator.batch_status("Batch1-IT") == "Synced"
        loop.simulator.advance(timedelta(minutes=5))
        second = desired_state((after,), "r2")
        last = loop.converge(second)
        check_fixed_point(loop, second, last)
        check_no_repeated_effects(loop)
        check_calls_match_outcomes(loop)
        writes = [a.action for a in loop.applied if isinstance(a.action, ExchangeAction)]
        removed = sorted(str(a.params["Identity"]) for a in writes if a.cmdlet == "Remove-MigrationUser")
        assert removed == [m.address for m in before.members[:2]]
        adds = [
            a.params["CSVData"] for a in writes if a.cmdlet == "Set-MigrationBatch" and "AddUsers" in a.params
        ]
        assert adds == [CsvRows(tuple(m.address for m in after.members[-3:]))]
        assert loop.simulator.batch_status("Batch1-IT") == "Synced"
        users = loop.observe(second).exchange.users or []
        assert sorted(u.Identity for u in users) == sorted(m.address for m in after.members)
        assert all(u.Status == "Synced" for u in users)


def test_a_syncing_batch_stopped_then_started_again() -> None:
    """started -> stopped while it syncs: one Stop; stopped -> started: one Start from Stopped."""
    wave = batch("Batch1-IT", BatchState.STARTED, 30)
    with simulators() as loop:
        loop.simulator.state.sync_seconds_default = timedelta(hours=3).total_seconds()
        for member in wave.members:
            loop.simulator.add_recipient(member.address)
        loop.run_pass(desired_state((wave,), "r1"))
        loop.simulator.advance(STEP)
        assert loop.simulator.batch_status("Batch1-IT") == "Syncing"
        stopped = desired_state((replace(wave, state=BatchState.STOPPED),), "r2")
        check_fixed_point(loop, stopped, loop.converge(stopped))
        assert loop.simulator.batch_status("Batch1-IT") == "Stopped"
        started = desired_state((wave,), "r3")
        check_fixed_point(loop, started, loop.converge(started))
        assert loop.simulator.batch_status("Batch1-IT") == "Synced"
        check_no_repeated_effects(loop)
        check_calls_match_outcomes(loop)
        assert loop.simulator.calls("Stop-MigrationBatch") == 1
        assert loop.simulator.calls("Start-MigrationBatch") == 1
