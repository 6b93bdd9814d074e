"""Issue 17's failovers end to end: three `stagectl run --instance` processes share the example migration's
tenant on a real 3-member etcd cluster (harness.py), with Exchange behind `stagectl sim-gateway` over TLS
and DNS on the simulator, while an administrator thread moves time and merges the runbook's phases.

Each scenario hurts the leader or etcd mid-migration and then proves that a standby takes over (or the
leader keeps leading), that every effect happened exactly once (Exchange's write calls per cmdlet and the
DNS UPDATEs equal those of a run of one instance without faults) and that the tenant's audit chain in
etcd is intact. Each prints one `HA-MEASURE scenario ...` line of the times it measured (pytest -s) and
writes them to ha-measurements.json in its directory.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ha import harness
from tests.ha.harness import Effects, Ha
from tests.support.etcd import EtcdCluster, etcd_cluster

TTL = harness.LEASE_TTL
# A standby campaigns every second and etcd expires leases on a 0.5 s tick; the watcher polls at 0.05 s.
TAKEOVER_BOUND = TTL + harness.INTERVAL + 2.0
# The session counts on 90% of its TTL; the supervisor that logs the step down may be waiting out one etcd
# request (its read of the live instances) when that runs out.
STEP_DOWN_BOUND = TTL + harness.ETCD_TIMEOUT + 1.0
MIGRATION = 150.0  # seconds: a bound for a hung run, never an expectation about speed
STANDBYS = {"i2", "i3"}
SALES_STARTS = harness.phase_named("Complete the early adopters")
PILOT_DONE = harness.phase_named("Complete the pilot")
LAST_COMPLETIONS = harness.phase_named("Complete Sales and Finance")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with etcd_cluster(tmp_path_factory.mktemp("etcd")) as started:
        yield started


@pytest.fixture
def etcd(cluster: EtcdCluster) -> EtcdCluster:
    """The module's cluster with every member up (a scenario before may have killed some)."""
    harness.heal(cluster)
    return cluster


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, cluster: EtcdCluster) -> Effects:
    """The effects of the migration led by one instance from start to end, nothing hurt."""
    harness.heal(cluster)
    root = tmp_path_factory.mktemp("reference")
    with harness.running(root, cluster, prefix="/ha/reference", names=("solo",)) as ha:
        ha.driver.start()
        ha.wait_done(MIGRATION)
        done = ha.effects()
    assert done.writes["New-MigrationBatch"] == 4 and done.writes["Complete-MigrationBatch"] == 4, done
    return done


def _verified(ha: Ha) -> str:
    """`stagectl audit verify --config` of the tenant: exit 0 with its sentence."""
    verify = ha.stagectl("audit", "verify", "--config", str(ha.instances["i1"].config))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    return verify.stdout


def _intent_in_flight(chain: list[dict[str, Any]], obj: str) -> dict[str, Any] | None:
    """The newest intent on `obj` that has no result or settlement after it."""
    intents = [r for r in chain if r["phase"] == "intent" and r["action"]["object"] == obj]
    if not intents:
        return None
    closed = {r["key"] for r in chain if r["phase"] in ("result", "settled")}
    return intents[-1] if intents[-1]["key"] not in closed else None


def _settlements(chain: list[dict[str, Any]], intent: dict[str, Any]) -> list[tuple[object, str]]:
    """Who settled `intent` and the verdict ("applied", "not applied") of each settlement record."""
    return [
        (r["instance"], str(r["result"]).split(": ")[1])
        for r in chain
        if r["phase"] == "settled" and r["key"] == intent["key"]
    ]


def _leading(ha: Ha) -> list[str]:
    """The instances that say they lead (leadership.json in their state directories)."""
    return [i.name for i in ha.instances.values() if (i.leadership() or {}).get("leading")]


@pytest.mark.slow
def test_sigkill_of_the_leader_mid_pass_a_standby_takes_over_and_each_effect_happens_once(
    tmp_path: Path, etcd: EtcdCluster, reference: Effects
) -> None:
    """i1 dies (SIGKILL by its own fault point) right after Exchange created Batch2-Sales and before the
    result was recorded: its intent is open in etcd. A standby leads within the lease TTL and an interval,
    settles the intent by observation (applied: never sent again) and finishes the migration."""
    measured = harness.Measurements(tmp_path, "sigkill")
    with harness.running(
        tmp_path, etcd, prefix="/ha/sigkill", faults={"i1": "batch/Batch2-Sales@after"}
    ) as ha:
        killed = ha.instances["i1"]
        ha.driver.start()
        assert killed.wait_exit(timeout=MIGRATION) == -signal.SIGKILL, ha.diagnostics()
        assert killed.exited_at is not None
        open_intent = _intent_in_flight(ha.chain(), "batch/Batch2-Sales")
        assert open_intent is not None and open_intent["instance"] == "i1", ha.chain()[-3:]

        took_over = ha.watch.wait(lambda s: s.leader in STANDBYS, after=killed.exited_at, timeout=3 * TTL)
        measured["takeover"] = took_over.at - killed.exited_at
        first_pass = ha.wait_pass(after=killed.exited_at, timeout=3 * TTL)
        measured["first_pass"] = first_pass - killed.exited_at
        ha.wait_done(MIGRATION)

        assert measured.values["takeover"] <= TAKEOVER_BOUND, ha.diagnostics()
        assert ha.effects() == reference
        chain = ha.chain()
        assert _settlements(chain, open_intent) == [(took_over.leader, "applied")]
        assert {"i1", took_over.leader} <= set(harness.writers(chain))
        verified = _verified(ha)
        assert re.search(rf"{len(chain)} records, chain intact \(written by .*i1 \d+", verified), verified
        assert f"{took_over.leader} " in verified.split("written by")[1], verified
    measured.report()


@pytest.mark.slow
def test_sigstop_of_the_leader_past_its_lease_then_sigcont_it_sends_nothing_more_and_stands_by(
    tmp_path: Path, etcd: EtcdCluster, reference: Effects
) -> None:
    """i1 is paused while Exchange holds its answer to New-MigrationBatch Batch2-Sales (the batch exists,
    i1 has not read that it does). A standby leads once i1's lease expires and settles the intent. After
    SIGCONT i1 reads the answer, but its result is refused by the fence: it writes nothing more to etcd,
    sends nothing more to Exchange or DNS, says it no longer leads and stands by."""
    measured = harness.Measurements(tmp_path, "sigstop")
    with harness.running(tmp_path, etcd, prefix="/ha/sigstop") as ha:
        paused = ha.instances["i1"]
        ha.driver.hold(SALES_STARTS)
        ha.driver.start()
        ha.until(ha.driver.held.is_set, timeout=MIGRATION, what="the early adopters synced")
        # From here Exchange answers each call a second after it took effect: the New-MigrationBatch of
        # Batch2-Sales is caught in between (i1 is paused once the simulator counted it).
        harness.set_latency(ha.world, 1.0)
        ha.driver.release()
        ha.until(
            lambda: harness.writes(ha.world).get("New-MigrationBatch") == 3, timeout=60, what="Sales created"
        )
        stopped = paused.signal(signal.SIGSTOP)
        harness.set_latency(ha.world, 0.0)
        in_flight = _intent_in_flight(ha.chain(), "batch/Batch2-Sales")
        assert in_flight is not None and in_flight["instance"] == "i1", ha.chain()[-3:]

        took_over = ha.watch.wait(lambda s: s.leader in STANDBYS, after=stopped, timeout=3 * TTL)
        measured["takeover"] = took_over.at - stopped
        assert measured.values["takeover"] <= TAKEOVER_BOUND, ha.diagnostics()
        ha.until(
            lambda: _intent_in_flight(ha.chain(), "batch/Batch2-Sales") is None,
            timeout=3 * TTL,
            what="the new leader settles i1's intent",
        )
        written_by_i1 = [r for r in ha.chain() if r["instance"] == "i1"]
        resumed = paused.signal(signal.SIGCONT)
        measured["paused"] = resumed - stopped
        stepped_down = ha.until(paused.stepped_down, timeout=2 * TTL, what="i1 says it no longer leads")
        measured["step_down_after_resume"] = stepped_down - resumed
        ha.until(
            lambda: (paused.leadership() or {}).get("leading") is False, timeout=2 * TTL, what="i1 stands by"
        )
        ha.wait_done(MIGRATION)

        led = {
            s.leader
            for s in ha.watch.since(took_over.at)
            if s.at >= took_over.at and s.leader != harness.UNKNOWN
        }
        assert led == {took_over.leader}, ha.diagnostics()  # i1 never led again
        chain = ha.chain()
        assert [r for r in chain if r["instance"] == "i1"] == written_by_i1  # not one record after SIGCONT
        assert _settlements(chain, in_flight) == [(took_over.leader, "applied")]
        assert ha.effects() == reference
        assert paused.running(), paused.log()[-3000:]
        shown = ha.stagectl("status", "--config", str(paused.config), "--format", "json")
        assert shown.returncode == 0, shown.stderr
        leadership = json.loads(shown.stdout)["leadership"]
        assert leadership["leader"] == took_over.leader
        assert leadership["thisInstance"]["instance"] == "i1"
        assert leadership["thisInstance"]["leading"] is False
        assert "i1" in leadership["instances"]  # a standby again, with a new session
        verified = _verified(ha)
        assert "i1 " in verified and f"{took_over.leader} " in verified, verified
    measured.report()


@pytest.mark.slow
def test_one_etcd_member_killed_the_leader_keeps_leading_and_the_migration_ends(
    tmp_path: Path, etcd: EtcdCluster, reference: Effects
) -> None:
    """The member that is etcd's raft leader dies as the pilot's completion is merged: etcd elects another,
    i1 keeps its session and its leadership (the same key, the same revision) and the migration ends with
    each effect once."""
    measured = harness.Measurements(tmp_path, "member")
    with harness.running(tmp_path, etcd, prefix="/ha/member") as ha:
        ha.driver.hold(PILOT_DONE)
        ha.driver.start()
        ha.until(ha.driver.held.is_set, timeout=MIGRATION, what="the pilot synced")
        won = ha.watch.current()
        assert won is not None and won.leader == "i1"
        member = harness.etcd_leader(etcd)
        killed = time.monotonic()
        etcd.kill(member)
        ha.driver.release()
        measured["first_pass"] = ha.wait_pass(after=killed, timeout=3 * TTL) - killed
        ha.wait_done(MIGRATION)
        measured["to_the_end"] = time.monotonic() - killed

        sightings = ha.watch.since(killed)
        assert {(s.leader, s.revision) for s in sightings if s.leader != harness.UNKNOWN} == {
            ("i1", won.revision)
        }, sightings
        unanswered = [(s.at, n.at) for s, n in itertools.pairwise(sightings) if s.leader == harness.UNKNOWN]
        measured["etcd_unanswered"] = sum(end - start for start, end in unanswered)
        assert not any(i.stepped_down() for i in ha.instances.values()), ha.diagnostics()
        assert ha.effects() == reference
        chain = ha.chain()
        assert set(harness.writers(chain)) == {"i1"}
        assert f"{len(chain)} records, chain intact (written by i1 {len(chain)})" in _verified(ha)
    measured.report()


@pytest.mark.slow
def test_quorum_lost_no_instance_acts_and_one_leads_again_when_it_returns(
    tmp_path: Path, etcd: EtcdCluster, reference: Effects
) -> None:
    """Two members die while the completion of Sales and Finance is merged: there is work, but no write
    reaches etcd, so no intent is recorded and nothing is sent; within the lease TTL the leader says it
    steps down. The members come back: an instance leads again and finishes with each effect once."""
    measured = harness.Measurements(tmp_path, "quorum")
    window = 5.0  # seconds past the lease TTL in which nothing may be sent either
    with harness.running(tmp_path, etcd, prefix="/ha/quorum") as ha:
        ha.driver.hold(LAST_COMPLETIONS)
        ha.driver.start()
        ha.until(ha.driver.held.is_set, timeout=MIGRATION, what="Sales and Finance synced")
        leader = ha.instances["i1"]
        current = ha.watch.current()
        assert current is not None and current.leader == leader.name
        first = harness.etcd_leader(etcd)
        lost = [first, (first + 1) % len(etcd.members)]
        before = ha.effects()
        killed = time.monotonic()
        for member in lost:
            etcd.kill(member)
        ha.driver.release()  # Sales and Finance to complete, then the cutover: work the leader would do

        stepped_down: float | None = None
        while time.monotonic() < killed + TTL + window:
            assert ha.effects() == before, f"sent without a quorum\n{ha.diagnostics()}"
            if stepped_down is None and leader.stepped_down():
                stepped_down = time.monotonic()
            time.sleep(0.2)
        merged = ha.driver.merged_phase(LAST_COMPLETIONS)
        assert merged is not None and merged < killed + TTL, "the work came too late to prove anything"
        assert stepped_down is not None and stepped_down - killed <= STEP_DOWN_BOUND, leader.log()[-3000:]
        measured["step_down"] = stepped_down - killed
        shown = ha.stagectl("status", "--config", str(leader.config), "--format", "json")
        assert json.loads(shown.stdout)["leadership"]["leader"] == "unknown", shown.stdout + shown.stderr

        etcd.start(lost[0])
        etcd.wait_healthy()
        back = time.monotonic()
        measured["outage"] = back - killed
        etcd.start(lost[1])
        leads_again = ha.until(lambda: bool(_leading(ha)), timeout=3 * TTL, what="an instance leads again")
        measured["leads_again"] = leads_again - back
        (resumed,) = _leading(ha)
        measured["first_pass"] = ha.wait_pass(after=back, timeout=3 * TTL) - back
        ha.wait_done(MIGRATION)

        assert ha.effects() == reference
        chain = ha.chain()
        assert {"i1", resumed} <= set(harness.writers(chain))
        assert f"{len(chain)} records, chain intact" in _verified(ha)
        print(f"after the quorum returned {resumed} led (before: {leader.name})")
    measured.report()
