"""The failover scenarios' world (issue 17): a real 3-member etcd cluster, the Exchange simulator behind
`stagectl sim-gateway` over TLS, the DNS simulator, the example migration's repository, and
`stagectl run --instance NAME` processes that share one tenant; an administrator thread moves the
simulated clock and merges the runbook's phases; a watcher reads who leads from etcd.

Time moves as in tests/reliability/crashdrive.py: one step once a pass of the repository's head has seen
the current simulated time (lockstep with the leader), or after `FREE_RUN` seconds without such a pass
(a takeover, a lost quorum: the world goes on while nobody leads). A step is `STEP_HOURS`: the example
converges in 9 steps with the same effects as with crashdrive's 6 h (48 steps).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import yaml

from controller import errors
from controller.coordination import leadership, shared_audit
from controller.coordination.etcd import Etcd
from controller.model.snapshot import Memory
from controller.runtime import status
from controller.runtime.config import EtcdConfig
from controller.sim import pki
from controller.sim.demo import phases, services
from controller.sim.dns import DnsSimBackend
from controller.sim.exchange.simulator import ExchangeSimulator
from controller.sim.exchange.store import SimStore
from tests.reliability import crashdrive
from tests.support.etcd import EtcdCluster, etcd_section

PROJECT = Path(__file__).resolve().parents[2]
TENANT = "contoso"
LEASE_TTL = 10  # seconds: the figure, what a dead leader costs
INTERVAL = 1  # seconds between two passes of the leader
ETCD_TIMEOUT = 2  # seconds: one request to one member (coordination.etcd.timeout)
STEP_HOURS = 48
FREE_RUN = 3.0  # seconds without a pass of the head after which the clock moves anyway
POLL = 0.05
MAX_STEPS = 100  # the example needs ~9; more is a migration that does not converge
UNKNOWN = "unknown"  # a sighting when etcd could not say who leads
GATEWAY_USER = "stagectl"
GATEWAY_PASSWORD_ENV = "STAGECTL_HA_GATEWAY_PASSWORD"
GATEWAY_PASSWORD = "ha-gateway-password"
CREDENTIALS = "CONTOSO\\migration.admin:ha-test-password"
INHERITED_FAULTS = ("STAGECTL_FAULT", "STAGECTL_FAULT_ONCE")
# How an instance says it stopped leading: the supervisor's step down, or the fence refusing a write.
STEPPED_DOWN = (
    r"instance {name} (steps down from tenant {tenant}|cannot confirm its lease on tenant {tenant}"
    r"|no longer leads tenant {tenant}|does not lead tenant {tenant})"
)


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in INHERITED_FAULTS}
    return {
        **env,
        crashdrive.CREDENTIALS_ENV: CREDENTIALS,
        GATEWAY_PASSWORD_ENV: GATEWAY_PASSWORD,
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


# --- the world: simulators, gateway, repository --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class World:
    root: Path
    repo: Path
    sim_state: Path
    dns_state: Path
    gateway_port: int
    gateway_ca: Path


def open_world(stack: ExitStack, root: Path) -> World:
    """The example migration's repository and simulators (as crashdrive makes them) and the gateway
    serving the Exchange simulator over TLS, stopped by `stack`."""
    crashdrive.make(root)  # repo/, exchange.sqlite, dns.json (its stagectl.yaml is not used here)
    certificates = pki.make_pki(root / "pki", name="stagectl HA test CA")
    log = stack.enter_context((root / "gateway.log").open("wb"))
    command = [
        sys.executable, "-m", "controller", "sim-gateway", "--state", str(root / "exchange.sqlite"),
        "--port", "0", "--tls", "--cert", str(certificates.cert), "--key", str(certificates.key),
        "--user", GATEWAY_USER, "--password-ref", f"env:{GATEWAY_PASSWORD_ENV}",
    ]  # fmt: skip
    gateway = subprocess.Popen(
        command,
        cwd=PROJECT,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    stack.callback(_end, gateway)
    assert gateway.stdout is not None
    url = gateway.stdout.readline().strip()
    if not url.startswith("https://127.0.0.1:"):
        raise RuntimeError(f"the simulator gateway did not start (it printed {url!r})")
    return World(
        root=root,
        repo=root / "repo",
        sim_state=root / "exchange.sqlite",
        dns_state=root / "dns.json",
        gateway_port=int(url.rsplit(":", 1)[1].split("/")[0]),
        gateway_ca=certificates.ca,
    )


def _end(process: subprocess.Popen[Any]) -> None:
    """SIGKILL (a paused process too) and reap."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


@dataclass(frozen=True, slots=True)
class Effects:
    """What the migration did to the world: Exchange's write calls per cmdlet and the DNS UPDATEs in
    order (the objects they changed)."""

    writes: dict[str, int]
    dns_updates: tuple[str, ...]


def effects(world: World) -> Effects:
    return Effects(
        writes=writes(world), dns_updates=tuple(DnsSimBackend(world.dns_state).updates("contoso.com"))
    )


def writes(world: World) -> dict[str, int]:
    """Calls per cmdlet that change the tenant (every cmdlet but the reads, Get-* and Test-*)."""
    calls = SimStore(world.sim_state).load().state.calls
    return {name: n for name, n in sorted(calls.items()) if not name.startswith(("Get-", "Test-"))}


def set_latency(world: World, seconds: float) -> None:
    """Every Exchange call answers `seconds` later (after it took effect), from the next call on."""
    with SimStore(world.sim_state).transaction() as simulator:
        simulator.set_latency(seconds)


# --- the controllers ------------------------------------------------------------------------------------


def etcd_settings(cluster: EtcdCluster, *, timeout: str = f"{ETCD_TIMEOUT}s") -> dict[str, object]:
    return etcd_section(cluster, timeout=timeout)


def write_config(world: World, cluster: EtcdCluster, *, name: str, prefix: str) -> Path:
    """`cfg-NAME.yaml`: Exchange over PSRP to the gateway, DNS on the simulator, the simulated clock, a
    state directory of its own, and the shared tenant in etcd."""
    config = {
        "apiVersion": "stagectl/v1",
        "kind": "ControllerConfig",
        "source": {"repo": str(world.repo), "branch": "main"},
        "stateDir": str(world.root / f"state-{name}"),
        "clock": "sim",
        "interval": f"{INTERVAL}s",
        "exchange": {
            "backend": "psrp",
            "state": str(world.sim_state),  # the simulated clock only
            "psrp": {
                "host": "127.0.0.1",
                "port": world.gateway_port,
                "ssl": True,
                "caBundle": str(world.gateway_ca),
                "auth": "basic",
                "username": GATEWAY_USER,
                "passwordRef": f"env:{GATEWAY_PASSWORD_ENV}",
                "bootstrap": "none",
                "operationTimeout": 5,
                "readTimeout": 10,
                "connectionTimeout": 5,
            },
        },
        "dns": {"backend": "sim", "state": str(world.dns_state)},
        "coordination": {
            "etcd": etcd_settings(cluster),
            "tenant": TENANT,
            "leaseTtl": f"{LEASE_TTL}s",
            "prefix": prefix,
        },
    }
    path = world.root / f"cfg-{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Instance:
    """One `stagectl run --config cfg-NAME.yaml --instance NAME` process; its stdout and stderr go to
    NAME.log; `exited_at` is when it ended (monotonic)."""

    name: str
    config: Path
    state_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    exited_at: float | None = None
    _log: IO[bytes] | None = None

    def start(self, *, fault: str | None = None) -> None:
        """Start it; `fault` arms a fault point (STAGECTL_FAULT) in it."""
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controller",
                "run",
                "--config",
                str(self.config),
                "--instance",
                self.name,
            ],
            cwd=PROJECT,
            env=_env(**({"STAGECTL_FAULT": fault} if fault else {})),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._reap, args=(self.process,), daemon=True).start()

    def _reap(self, process: subprocess.Popen[bytes]) -> None:
        process.wait()
        self.exited_at = time.monotonic()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: signal.Signals) -> float:
        """Send `signum`; returns when (monotonic)."""
        assert self.process is not None and self.process.poll() is None, f"{self.name} is not running"
        os.kill(self.process.pid, signum)
        return time.monotonic()

    def end(self) -> None:
        if self.process is not None:
            _end(self.process)
        if self._log is not None:
            self._log.close()

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        code = self.process.wait(timeout=timeout)
        while self.exited_at is None:
            time.sleep(0.01)
        return code

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def stepped_down(self) -> bool:
        return re.search(STEPPED_DOWN.format(name=self.name, tenant=TENANT), self.log()) is not None

    def leadership(self) -> dict[str, Any] | None:
        """What the instance last wrote of its leadership (leadership.json in its state directory)."""
        try:
            data = json.loads((self.state_dir / "leadership.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


# --- who leads: read from etcd on a thread --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sighting:
    at: float  # monotonic
    leader: str | None  # the instance; None: nobody leads; UNKNOWN: etcd could not say
    revision: int  # the leadership key's mod revision (0 when none or unknown)


class LeaderWatch:
    """Reads the tenant's leadership key every POLL seconds; keeps every change with its time."""

    def __init__(self, etcd: Etcd, prefix: str) -> None:
        self.etcd, self.prefix = etcd, prefix
        self.sightings: list[Sighting] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-watch", daemon=True)

    def start(self) -> LeaderWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                found = leadership.read_leader(self.etcd, self.prefix, TENANT)
                seen = (None, 0) if found is None else (found.instance, found.revision)
            except errors.ExternalFailure:
                seen = (UNKNOWN, 0)
            with self._lock:
                last = self.sightings[-1] if self.sightings else None
                if last is None or (last.leader, last.revision) != seen:
                    self.sightings.append(Sighting(time.monotonic(), *seen))
            self._stop.wait(POLL)

    def since(self, moment: float) -> list[Sighting]:
        """The sightings from `moment` on, led by the one standing at `moment`."""
        with self._lock:
            earlier = [s for s in self.sightings if s.at < moment]
            later = [s for s in self.sightings if s.at >= moment]
        return earlier[-1:] + later

    def current(self) -> Sighting | None:
        with self._lock:
            return self.sightings[-1] if self.sightings else None

    def wait(self, wanted: Callable[[Sighting], bool], *, after: float, timeout: float) -> Sighting:
        """The first sighting made at `after` or later that is `wanted`."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = next((s for s in self.sightings if s.at >= after and wanted(s)), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"no such leader within {timeout} s; seen: {self.since(after)}")
            time.sleep(POLL / 2)


# --- the administrator and time -------------------------------------------------------------------------


class Administrator(phases.Script):
    """The demo's administrator without the phases that need the controller's memory (the removal 72 h
    after the cutover) or a retry after a fix; directory sync is not held back (as in crashdrive)."""

    def __init__(self, repo: Path, sim_state: Path) -> None:
        super().__init__(repo, sim_state, say=lambda line: None)
        self.phases = tuple(p for p in phases.PHASES if not p.retry and "removed" not in p.states.values())

    def _hold_back(self, sim: ExchangeSimulator) -> list[str]:
        return []

    def upcoming(self) -> phases.Phase | None:
        return None if self.finished else self.phases[self.next_phase]


@dataclass(frozen=True, slots=True)
class PassSeen:
    """The newest status.json among the instances': the last pass any of them finished."""

    observed: datetime
    served: str
    ready: bool
    written: float  # its mtime (wall clock)


def newest_pass(state_dirs: list[Path]) -> PassSeen | None:
    seen: list[PassSeen] = []
    for state_dir in state_dirs:
        try:
            data: dict[str, Any] | None = status.read(state_dir)
            written = (state_dir / status.STATUS_FILE).stat().st_mtime
        except (errors.ExternalFailure, OSError):
            continue
        if data is None:
            continue
        conditions = {c["type"]: c["status"] for c in data["conditions"]}
        seen.append(
            PassSeen(
                observed=datetime.fromisoformat(data["observedAt"]),
                served=data["revision"]["served"],
                ready=bool(conditions.get("Ready")),
                written=written,
            )
        )
    return max(seen, key=lambda p: p.written, default=None)


class Driver:
    """The administrator and time on a thread. Each look: once a pass served the head at the current
    simulated time (or FREE_RUN seconds went by without one), merge the next phase if its moment has come
    (unless it is held), else move the clock one step. Done when every phase is merged and a pass of the
    head at the current time found the tenant converged (Ready)."""

    def __init__(self, world: World, state_dirs: list[Path]) -> None:
        self.world = world
        self.state_dirs = state_dirs
        self.script = Administrator(world.repo, world.sim_state)
        self.head = _head(world.repo)
        self.merged: list[tuple[float, str]] = []  # (monotonic, phase message)
        self.steps = 0
        self.done = threading.Event()
        self.held = threading.Event()  # the held phase's moment has come
        self.error: BaseException | None = None
        self._hold: str | None = None
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="administrator", daemon=True)

    def hold(self, message: str) -> None:
        """Do not merge the phase with this message until `release()` (time still moves)."""
        assert any(p.message == message for p in self.script.phases), message
        self._hold = message

    def release(self) -> None:
        self._hold = None

    def start(self) -> Driver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def merged_phase(self, message: str) -> float | None:
        return next((at for at, m in self.merged if m == message), None)

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and not self.done.is_set():
                self._look()
                self._stop.wait(POLL)
        except BaseException as error:  # the test reads it: a dead driver must not look like a slow one
            self.error = error

    def _look(self) -> None:
        latest = newest_pass(self.state_dirs)
        now = SimStore(self.world.sim_state).now()
        seen = latest is not None and latest.served == self.head and latest.observed >= now
        if not seen and time.monotonic() - self._last < FREE_RUN:
            return
        phase = self.script.upcoming()
        if phase is not None and phase.ready(SimStore(self.world.sim_state).load(), Memory(), None):
            if phase.message == self._hold:
                self.held.set()
            elif self.script.next_commit(Memory()) is not None:
                self.head = _head(self.world.repo)
                self.merged.append((time.monotonic(), phase.message))
                self._last = time.monotonic()
                return
        if seen and latest is not None and latest.ready and self.script.finished:
            self.done.set()
            return
        if self.steps >= MAX_STEPS:
            raise RuntimeError(f"the migration did not converge in {MAX_STEPS} steps of {STEP_HOURS} h")
        services.advance(self.world.sim_state, hours=STEP_HOURS)
        self.steps += 1
        self._last = time.monotonic()


def monotonic(wall: float) -> float:
    """A moment of the wall clock (a file's mtime) on the monotonic clock."""
    return time.monotonic() - (time.time() - wall)


def _head(repo: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def phase_named(start: str) -> str:
    """The message of the administrator's phase that begins with `start`."""
    return next(p.message for p in phases.PHASES if p.message.startswith(start))


# --- the harness ----------------------------------------------------------------------------------------


@dataclass
class Ha:
    world: World
    cluster: EtcdCluster
    prefix: str
    etcd: Etcd
    instances: dict[str, Instance]
    watch: LeaderWatch
    driver: Driver
    started: float = field(default_factory=time.monotonic)

    @property
    def tenant_prefix(self) -> str:
        return leadership.tenant_prefix(self.prefix, TENANT)

    def stagectl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "controller", *args],
            cwd=PROJECT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def effects(self) -> Effects:
        return effects(self.world)

    def chain(self) -> list[dict[str, Any]]:
        """The tenant's audit chain in etcd, every leader's records in order."""
        return [json.loads(line) for line in shared_audit.shared_lines(self.etcd, self.tenant_prefix)]

    def live_instances(self) -> list[str]:
        root = f"{self.prefix}/instances/"
        return sorted(kv.key.removeprefix(root) for kv in self.etcd.prefix(root))

    def wait_done(self, timeout: float) -> None:
        """Until the administrator says the migration converged (its error, if it died, is raised)."""
        deadline = time.monotonic() + timeout
        while not self.driver.done.wait(0.2):
            if self.driver.error is not None:
                raise AssertionError(f"the administrator failed: {self.driver.error!r}\n{self.diagnostics()}")
            assert time.monotonic() < deadline, f"not converged in {timeout} s\n{self.diagnostics()}"

    def wait_pass(self, *, after: float, timeout: float) -> float:
        """Until some instance finishes a pass (writes status.json) after `after` (monotonic); returns
        when it wrote it (monotonic, from the file's time)."""
        deadline = time.monotonic() + timeout
        while True:
            latest = newest_pass([i.state_dir for i in self.instances.values()])
            if latest is not None and monotonic(latest.written) > after:
                return monotonic(latest.written)
            assert time.monotonic() < deadline, f"no pass within {timeout} s\n{self.diagnostics()}"
            time.sleep(POLL)

    def until(self, condition: Callable[[], bool], *, timeout: float, what: str) -> float:
        """Poll `condition`; returns when it held (monotonic)."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"{what}: not within {timeout} s\n{self.diagnostics()}"
            time.sleep(POLL)
        return time.monotonic()

    def diagnostics(self) -> str:
        """What a failing scenario needs to be understood: who led when, each instance's log tail."""
        start = self.started
        sightings = ", ".join(f"{s.at - start:.1f}s {s.leader}" for s in self.watch.since(start))
        logs = "\n".join(f"--- {i.name} ---\n{i.log()[-4000:]}" for i in self.instances.values())
        merged = ", ".join(f"{at - start:.1f}s {m[:30]}" for at, m in self.driver.merged)
        return (
            f"leaders: {sightings}\nmerged: {merged}; steps {self.driver.steps}\n{logs}\n"
            f"{self.cluster.logs(tail=1500)}"
        )


def shared_etcd(cluster: EtcdCluster) -> Etcd:
    """The product's own etcd client (fails over between members), for the test's reads."""
    return Etcd(EtcdConfig.model_validate(etcd_settings(cluster, timeout="1s")))


def heal(cluster: EtcdCluster) -> None:
    """Every member running, none paused, and a quorum that takes writes (a scenario before may have
    killed some)."""
    for i in range(len(cluster.members)):
        if cluster.alive(i):
            cluster.resume(i)
        else:
            cluster.start(i)
    cluster.wait_healthy()


def etcd_leader(cluster: EtcdCluster) -> int:
    """The index of the member that is the cluster's raft leader, as the members' status says."""
    ids: dict[str, int] = {}
    leader = ""
    for i in range(len(cluster.members)):
        answer = cluster.client(i).status()
        ids[str(answer["header"]["member_id"])] = i
        leader = str(answer["leader"])
    return ids[leader]


@contextmanager
def running(
    root: Path,
    cluster: EtcdCluster,
    *,
    prefix: str,
    names: tuple[str, ...] = ("i1", "i2", "i3"),
    faults: Mapping[str, str] | None = None,
) -> Iterator[Ha]:
    """The world, the watcher, and one instance per name: the first started alone until it leads (so it
    is the one a scenario hurts), the others then, until all are registered in etcd. The administrator
    is created, not started. On exit every process is SIGKILLed (a paused one too) and reaped; on an
    error the diagnostics are printed."""
    faults = faults or {}
    with ExitStack() as stack:
        world = open_world(stack, root / "world")
        etcd = shared_etcd(cluster)
        watch = LeaderWatch(etcd, prefix).start()
        stack.callback(watch.stop)
        instances = {
            name: Instance(
                name=name,
                config=write_config(world, cluster, name=name, prefix=prefix),
                state_dir=world.root / f"state-{name}",
                log_path=root / f"{name}.log",
            )
            for name in names
        }
        for instance in instances.values():
            stack.callback(instance.end)
        driver = Driver(world, [i.state_dir for i in instances.values()])
        stack.callback(driver.stop)
        ha = Ha(world, cluster, prefix, etcd, instances, watch, driver)
        try:
            first, *others = instances.values()
            first.start(fault=faults.get(first.name))
            watch.wait(lambda s: s.leader == first.name, after=ha.started, timeout=60)
            for instance in others:
                instance.start(fault=faults.get(instance.name))
            ha.until(
                lambda: ha.live_instances() == sorted(names), timeout=60, what="every instance registered"
            )
            yield ha
        except BaseException:
            print(ha.diagnostics())
            raise


class Measurements:
    """Seconds measured by a scenario: printed as one `HA-MEASURE scenario k=v ...` line and written to
    ha-measurements.json in the test's directory."""

    def __init__(self, directory: Path, scenario: str) -> None:
        self.path = directory / "ha-measurements.json"
        self.scenario = scenario
        self.values: dict[str, float] = {}

    def __setitem__(self, key: str, seconds: float) -> None:
        self.values[key] = round(seconds, 2)

    def report(self) -> None:
        self.path.write_text(json.dumps({self.scenario: self.values}, indent=2) + "\n", encoding="utf-8")
        print(f"HA-MEASURE {self.scenario} " + " ".join(f"{k}={v:.1f}s" for k, v in self.values.items()))


def writers(chain: list[dict[str, Any]]) -> Counter[str]:
    return Counter(str(record.get("instance")) for record in chain)
