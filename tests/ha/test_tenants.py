"""Issue 17 end to end: ten tenants shared by three `stagectl run --tenants DIR --instance NAME` processes
on a real 3-member etcd cluster. They spread the tenants evenly (also when they start one after the other,
so the first must hand over most of what it took), take a SIGKILLed instance's tenants after its lease TTL,
take a SIGTERMed one's at once (even soon after a rebalance, as in a rolling restart), and one instance's
/metrics says which tenants it leads.

Every scenario prints one `HA-MEASURE ...` line (pytest -s)."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

import pytest
import yaml
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import Etcd3Exception
from prometheus_client.parser import text_string_to_metric_families

from tests.support.controller import Workspace, make_workspace
from tests.support.etcd import EtcdCluster, etcd_cluster, etcd_section, free_ports
from tests.support.gitrepo import git_env

TENANTS = tuple(f"t{n:02d}" for n in range(10))
INSTANCES = ("i0", "i1", "i2")
LEASE_TTL = 10  # seconds, the default: a SIGKILLed instance's tenants wait for it
INTERVAL = "3s"  # between two passes of one tenant; a hand-over happens between two passes
PREFIX = "/stagectl"
STAGGER = 4.0  # seconds between two instances' starts in the staggered scenario
SETTLE = 60.0  # bounds the wait for an even spread: an upper bound for a stuck fleet, not an expectation
STABLE = 2.0  # seconds a spread must stay the same to count as settled
POLL = 0.1
HANDOVER_SLACK = 5.0  # after the TTL: etcd expires leases every 0.5 s, the instances recount their share
# and the standbys campaign once a second each
CLEAN_HANDOVER = 5.0  # a SIGTERMed instance's tenants: resigned in well under 1 s, taken in ~1 s (0.7-0.9 s)
STOP = 30.0  # bounds a clean stop

# Both batches started in the repository: a tenant's first pass creates the endpoint and both batches,
# and nothing more is ever sent (the simulated clock stands still), whoever leads it and however often.
FIRST_PASS = Counter({"New-MigrationEndpoint": 1, "New-MigrationBatch": 2})


@dataclass
class Instance:
    """One `stagectl run --tenants` process: its own directory of the ten configurations (the same but for
    the state directories, which are its own) and its stderr log."""

    name: str
    tenants_dir: Path
    state_root: Path
    log: Path
    metrics_port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def state_dir(self, tenant: str) -> Path:
        return self.state_root / tenant

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def leadership_file(self, tenant: str) -> dict[str, object] | None:
        try:
            data = json.loads((self.state_dir(tenant) / "leadership.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):  # not written yet
            return None
        return data if isinstance(data, dict) else None

    def passed_since(self, tenant: str, moment: float) -> bool:
        """Whether a pass of `tenant` wrote its status in this instance's state directory after `moment`
        (wall clock)."""
        try:
            return (self.state_dir(tenant) / "status.json").stat().st_mtime >= moment
        except FileNotFoundError:
            return False

    def log_tail(self, size: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-size:]
        except FileNotFoundError:
            return ""


@dataclass
class Fleet:
    """The etcd cluster, the ten tenants' workspaces and the three instances; what etcd and the instances'
    state directories say."""

    root: Path
    cluster: EtcdCluster
    workspaces: dict[str, Workspace]
    env: dict[str, str]
    instances: dict[str, Instance] = field(default_factory=dict)
    _outputs: list[IO[bytes]] = field(default_factory=list)
    _etcd: Etcd3Client | None = None

    def start(self, name: str, *, metrics: bool = False) -> Instance:
        instance = self.instances[name]
        command = [sys.executable, "-m", "controller", "run", "--tenants", str(instance.tenants_dir)]
        command += ["--instance", name]
        if metrics:
            [instance.metrics_port] = free_ports(1)
            command += ["--metrics-port", str(instance.metrics_port)]
        output = instance.log.open("ab")
        self._outputs.append(output)
        instance.started_at = time.time()
        instance.process = subprocess.Popen(
            command,
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        return instance

    def running(self) -> list[Instance]:
        return [instance for instance in self.instances.values() if instance.running()]

    def kill(self, name: str) -> None:
        process = self.instances[name].process
        assert process is not None and process.poll() is None, f"{name} is not running"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=STOP)

    def close(self) -> None:
        """SIGKILL and reap every instance still running: the test failed or is done with them."""
        for instance in self.instances.values():
            if instance.process is not None and instance.process.poll() is None:
                instance.process.kill()
                instance.process.wait(timeout=STOP)
        for output in self._outputs:
            output.close()

    def under(self, prefix: str) -> dict[str, bytes]:
        """The keys (as text) and values under `prefix` in etcd, read through member 0 (one client kept, so
        that ten polls a second are not ten TLS handshakes)."""
        if self._etcd is None:
            self._etcd = self.cluster.client()
        return {bytes(meta["key"]).decode(): value for value, meta in self._etcd.get_prefix(prefix)}

    def leader_keys(self) -> dict[str, dict[str, object]]:
        """tenant -> its leadership key's JSON body (tenants nobody leads are absent)."""
        return {
            key.split("/")[-2]: json.loads(value)
            for key, value in self.under(f"{PREFIX}/tenants/").items()
            if key.endswith("/leader")
        }

    def leaders(self) -> dict[str, str]:
        """tenant -> the instance its leadership key names."""
        return {tenant: str(body["instance"]) for tenant, body in self.leader_keys().items()}

    def members(self) -> set[str]:
        """The instances whose membership keys (on their session leases) are in etcd."""
        return {key.rsplit("/", 1)[-1] for key in self.under(f"{PREFIX}/instances/")}

    def claims(self) -> dict[str, list[str]]:
        """tenant -> the running instances whose leadership.json says they lead it."""
        return {
            tenant: [i.name for i in self.running() if (i.leadership_file(tenant) or {}).get("leading")]
            for tenant in TENANTS
        }

    def logs(self) -> str:
        return "\n".join(f"--- {i.name} ({i.log}) ---\n{i.log_tail()}" for i in self.instances.values())


def build_fleet(root: Path, cluster: EtcdCluster) -> Fleet:
    """Ten tenants, each its own repository and simulator files (both batches started), and for each of the
    three instances a directory of the ten configurations pointing at them, with its own state directories."""
    workspaces = {
        tenant: make_workspace(root / "tenants" / tenant, pilot="started", wave="started")
        for tenant in TENANTS
    }
    coordination = {
        "etcd": etcd_section(cluster),
        "leaseTtl": f"{LEASE_TTL}s",
        "prefix": PREFIX,
    }
    fleet = Fleet(
        root=root,
        cluster=cluster,
        workspaces=workspaces,
        env={**git_env(root), **workspaces[TENANTS[0]].env, "PYTHONUNBUFFERED": "1"},
    )
    for name in INSTANCES:
        instance = Instance(
            name=name,
            tenants_dir=root / name / "tenants",
            state_root=root / name / "state",
            log=root / name / "stagectl.log",
        )
        instance.tenants_dir.mkdir(parents=True)
        for tenant, workspace in workspaces.items():
            config = yaml.safe_load(workspace.config_path.read_text(encoding="utf-8"))
            config.update(
                stateDir=str(instance.state_dir(tenant)), interval=INTERVAL, coordination=coordination
            )
            (instance.tenants_dir / f"{tenant}.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        fleet.instances[name] = instance
    return fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with etcd_cluster(tmp_path / "etcd") as cluster:
        built = build_fleet(tmp_path / "fleet", cluster)
        try:
            yield built
        finally:
            built.close()  # before the cluster goes: no instance is left behind, whatever failed


def measure(line: str) -> None:
    print(f"HA-MEASURE {line}", flush=True)


def poll(
    fleet: Fleet,
    what: str,
    check: Callable[[], str | None],
    timeout: float,
    *,
    leaving: str | None = None,
) -> float:
    """Call `check()` (a reason it does not hold yet, or None) until it holds; the seconds it took.
    An etcd request that failed counts as not yet; an instance that exited unasked (any running one but
    `leaving`) fails at once."""
    start = time.monotonic()
    expected = {i.name for i in fleet.running()} - {leaving}
    reason = "not checked yet"
    while time.monotonic() - start < timeout:
        exited = expected - {i.name for i in fleet.running()}
        if exited:
            raise AssertionError(f"{sorted(exited)} exited before {what}\n{fleet.logs()}")
        try:
            found = check()
        except Etcd3Exception as error:
            found = f"etcd: {error}"
        if found is None:
            return time.monotonic() - start
        reason = found
        time.sleep(POLL)
    raise AssertionError(f"{what}: not within {timeout} s ({reason})\n{fleet.logs()}")


def uneven(fleet: Fleet) -> str | None:
    """Why the running instances do not (yet) share the tenants evenly, each led once, each with passes."""
    running = {i.name: i for i in fleet.running()}
    leaders = fleet.leaders()
    claims = fleet.claims()
    share = math.ceil(len(TENANTS) / len(running))
    for tenant in TENANTS:
        leader = leaders.get(tenant)
        if leader not in running:
            return f"{tenant} is led by {leader}, not a running instance"
        claimed = claims[tenant]
        if claimed != [leader]:
            return f"{tenant}: led by {leader} in etcd, leadership.json of {claimed} says leading"
        if not running[leader].passed_since(tenant, 0):
            return f"{tenant}: no pass yet in {leader}'s state directory"
        if fleet.workspaces[tenant].writes() != FIRST_PASS:
            return f"{tenant}: the simulator saw {dict(fleet.workspaces[tenant].writes())}"
    counts = Counter(leaders.values())
    if max(counts.values()) > share:
        return f"more than {share} tenants for one instance: {dict(counts)}"
    if fleet.members() != set(running):
        return f"membership keys {sorted(fleet.members())}, running {sorted(running)}"
    return None


def settle(fleet: Fleet, scenario: str) -> dict[str, str]:
    """Wait until the spread is even and has stayed the same for STABLE seconds; its leaders. The time
    printed is until the spread that stayed was first seen."""
    start = time.monotonic()
    even: list[tuple[float, dict[str, str]]] = []  # since when, and the spread seen then

    def settled() -> str | None:
        found = uneven(fleet)
        if found is not None:
            even.clear()
            return found
        leaders = fleet.leaders()
        if not even or even[0][1] != leaders:
            even[:] = [(time.monotonic(), leaders)]
        if time.monotonic() - even[0][0] < STABLE:
            return f"even, not yet for {STABLE} s"
        return None

    poll(fleet, f"{scenario}: an even spread", settled, SETTLE)
    since, leaders = even[0]
    counts = Counter(leaders.values())
    spread = ",".join(f"{name}:{counts[name]}" for name in sorted(counts))
    measure(f"{scenario} settled={since - start:.1f}s spread={spread}")
    return leaders


def led_by(leaders: dict[str, str], instance: str) -> set[str]:
    return {tenant for tenant, leader in leaders.items() if leader == instance}


def scrape(instance: Instance) -> dict[str, dict[str, float]]:
    """metric name -> tenant -> value, from the instance's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{instance.metrics_port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "tenant" in sample.labels:
                found.setdefault(sample.name, {})[sample.labels["tenant"]] = sample.value
    return found


def timestamp(since: object) -> float:
    return datetime.fromisoformat(str(since).replace("Z", "+00:00")).timestamp()


def start_first_alone(fleet: Fleet, *, metrics: bool = False) -> Instance:
    """i0 alone, until it leads all ten tenants (its share is all of them) and each made its first pass."""
    first = fleet.start("i0", metrics=metrics)
    poll(
        fleet,
        "i0 leads all ten",
        lambda: None if led_by(fleet.leaders(), "i0") == set(TENANTS) else f"i0 leads {fleet.leaders()}",
        SETTLE,
    )
    poll(
        fleet,
        "a first pass of every tenant",
        lambda: next((f"{t}: no pass" for t in TENANTS if not first.passed_since(t, 0)), None),
        SETTLE,
    )
    return first


@pytest.mark.slow
def test_instances_started_one_after_the_other_end_evenly_spread_and_metrics_say_who_leads(
    fleet: Fleet,
) -> None:
    first = start_first_alone(fleet, metrics=True)
    fleet.start("i1")
    time.sleep(STAGGER)
    fleet.start("i2")

    leaders = settle(fleet, "tenants-spread-staggered")  # timed from the last start

    assert set(leaders.values()) == set(INSTANCES)
    assert max(Counter(leaders.values()).values()) <= 4  # so the first handed over at least six
    assert "instance i0 steps down from tenant" in first.log_tail(100_000)
    # Every tenant's actions were sent once, whichever instance led it when.
    assert all(workspace.writes() == FIRST_PASS for workspace in fleet.workspaces.values())

    # The first instance's /metrics: 1 exactly for the tenants it leads, 0 for those it handed over.
    metrics = scrape(first)
    keys = fleet.leader_keys()
    assert fleet.leaders() == leaders, "the spread moved while the metrics were read"
    mine = led_by(leaders, "i0")
    # It led every tenant once, so each has a sample: 1 for those it leads, 0 for those it handed over.
    assert metrics["stagectl_leader"] == {t: (1.0 if t in mine else 0.0) for t in TENANTS}
    for tenant in TENANTS:
        since = metrics["stagectl_leader_since_timestamp_seconds"][tenant]
        assert since == (timestamp(keys[tenant]["since"]) if tenant in mine else 0), tenant
    measure(f"tenants-metrics i0 leads={sorted(mine)} stagectl_leader=1 for exactly those")


@pytest.mark.slow
def test_instances_started_together_spread_evenly(fleet: Fleet) -> None:
    for name in INSTANCES:
        fleet.start(name)

    leaders = settle(fleet, "tenants-spread-together")

    assert set(leaders.values()) == set(INSTANCES)
    assert max(Counter(leaders.values()).values()) <= 4
    # `stagectl status` of a tenant, from a state directory of an instance that does not lead it.
    tenant = TENANTS[0]
    standby = next(name for name in INSTANCES if name != leaders[tenant])
    config = fleet.instances[standby].tenants_dir / f"{tenant}.yaml"
    shown = fleet.workspaces[tenant].stagectl("status", "--config", str(config), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    leadership = json.loads(shown.stdout)["leadership"]
    assert leadership["tenant"] == tenant
    assert leadership["leader"] == leaders[tenant]
    assert leadership["since"] == fleet.leader_keys()[tenant]["since"]
    assert leadership["instances"] == sorted(INSTANCES)
    assert (leadership["thisInstance"] or {"leading": False})["leading"] is False


@pytest.mark.slow
def test_a_killed_instance_s_tenants_are_taken_over_within_the_lease_ttl(fleet: Fleet) -> None:
    for name in INSTANCES:
        fleet.start(name)
    before = settle(fleet, "tenants-sigkill")
    victim = max(INSTANCES, key=lambda name: len(led_by(before, name)))  # the one with four
    orphans = led_by(before, victim)

    killed_at, killed_wall = time.monotonic(), time.time()
    fleet.kill(victim)
    moments: dict[str, float] = {}  # seconds after the kill: each first seen

    def taken_over() -> str | None:
        now = time.monotonic() - killed_at
        leaders = fleet.leaders()  # read before the members: a takeover seen here means the lease expired
        if victim not in fleet.members():
            moments.setdefault("expired", now)
        waiting = sorted(t for t in orphans if leaders.get(t) in (None, victim))
        if len(waiting) < len(orphans):
            moments.setdefault("first", now)
        return f"{waiting} not yet taken" if waiting else None

    poll(fleet, f"{victim}'s tenants taken over", taken_over, LEASE_TTL + HANDOVER_SLACK + 5)
    handover = time.monotonic() - killed_at

    def passed_by_new_leaders() -> str | None:
        leaders = fleet.leaders()
        waiting = sorted(
            t
            for t in orphans
            if t not in leaders or not fleet.instances[leaders[t]].passed_since(t, killed_wall)
        )
        return f"no pass of {waiting} by their new leaders yet" if waiting else None

    poll(fleet, "a pass by each new leader", passed_by_new_leaders, SETTLE)
    passed = time.monotonic() - killed_at
    measure(
        f"tenants-sigkill handover={handover:.1f}s expired={moments['expired']:.1f}s "
        f"first={moments['first']:.1f}s passes={passed:.1f}s tenants={len(orphans)} leaseTtl={LEASE_TTL}s"
    )
    assert moments.get("expired", math.inf) <= moments["first"], (
        "a tenant taken while its leader's lease lived"
    )
    assert handover <= LEASE_TTL + HANDOVER_SLACK

    # The survivors: five each (at most ceil(10/2)), each tenant one leader.
    after = settle(fleet, "tenants-sigkill-after")
    assert sorted(Counter(after.values()).values()) == [5, 5]
    assert set(after.values()) == set(INSTANCES) - {victim}
    assert {t for t, leader in before.items() if leader != victim} <= {
        t for t in TENANTS if after[t] == before[t]
    }, "a survivor's tenant moved"
    assert all(workspace.writes() == FIRST_PASS for workspace in fleet.workspaces.values())


@pytest.mark.slow
def test_a_clean_stop_soon_after_a_rebalance_hands_its_tenants_over_at_once(fleet: Fleet) -> None:
    start_first_alone(fleet)
    fleet.start("i1")
    fleet.start("i2")
    # Stopped as soon as the spread is even (a rolling restart does this): i1 leads only tenants that i0
    # handed over less than a lease TTL ago, and i0, left with room for one more, must take one back.
    poll(fleet, "an even spread", lambda: uneven(fleet), SETTLE)
    leaving = "i1"
    handed = led_by(fleet.leaders(), leaving)
    process = fleet.instances[leaving].process
    assert process is not None

    stopped_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    after_start = time.time() - fleet.instances[leaving].started_at
    moments: dict[str, float] = {}  # seconds after the signal: each first seen

    def handed_over() -> str | None:
        now = time.monotonic() - stopped_at
        leaders = fleet.leaders()
        if not handed & led_by(leaders, leaving):
            moments.setdefault("resigned", now)
        if process.poll() is not None:
            moments.setdefault("exit", now)
        if all(leaders.get(tenant) not in (None, leaving) for tenant in handed):
            moments.setdefault("handover", now)
        missing = {"resigned", "exit", "handover"} - moments.keys()
        return f"not yet: {sorted(missing)}" if missing else None

    poll(fleet, f"{leaving}'s tenants taken over", handed_over, LEASE_TTL + HANDOVER_SLACK, leaving=leaving)
    measure(
        f"tenants-sigterm handover={moments['handover']:.1f}s resigned={moments['resigned']:.1f}s "
        f"exit={moments['exit']:.1f}s tenants={len(handed)} stopped {after_start:.1f}s after its start"
    )
    assert process.returncode == 0, fleet.instances[leaving].log_tail()
    assert moments["handover"] <= CLEAN_HANDOVER, "its tenants were not taken at once"

    log = fleet.instances[leaving].log_tail(100_000)
    for tenant in handed:
        assert f"instance {leaving} resigned tenant {tenant}" in log
        assert fleet.instances[leaving].leadership_file(tenant) == {
            "tenant": tenant,
            "instance": leaving,
            "leading": False,
            "since": None,
        }
    after = settle(fleet, "tenants-sigterm-after")
    assert sorted(Counter(after.values()).values()) == [5, 5]
    assert leaving not in fleet.members()
