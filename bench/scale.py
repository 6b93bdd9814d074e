"""Benchmark whole controller passes at scale through the real PSRP gateway and two real BIND servers.

Run: `.venv/bin/python -m bench.scale [--members-per-batch N] [--batches B]` (100 x 2,000 by default; at
that size it rewrites the scale section of docs/benchmarks.md, between its markers). The controller runs
in a child process as `stagectl run` does (`--pass CONFIG`: wiring.build, then one run_pass per line it
reads, each pass's figures written back as a JSON line), so the gateway, BIND and this process are not in
its peak RSS; between passes this process moves the `live` branch to the next revision. Scenarios: (a) the
example `desired/`; (b) B batches, all but 5 Completed (verified first), 5 Syncing, nothing to do;
(c) one member removed from a Syncing batch; (d) 10% of the members added as new started batches.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "desired"
BATCHES, MEMBERS, UNFINISHED = 100, 2000, 5
HOSTS = 47  # A records; with the MX, the autodiscover CNAME and the SPF TXT: 50 managed RRsets
LATENCY = 0.8  # seconds per cmdlet: what Exchange Online takes per call, about
NAIVE = (10, 200)  # the naive baseline's tenant, extrapolated linearly
CREDENTIALS_ENV = "ONPREM_MIGRATION_CREDENTIALS"
PASSWORD_ENV = "STAGECTL_TEST_GATEWAY_PASSWORD"
STORE = "tenant.db"


@dataclass(frozen=True, slots=True)
class Shape:
    batches: int
    members: int

    @property
    def unfinished(self) -> int:
        return min(UNFINISHED, self.batches // 2)

    @property
    def completed(self) -> int:
        return self.batches - self.unfinished

    @property
    def added(self) -> int:
        """(d): new batches of `members` (10% of the members) in place of as many finished ones."""
        return max(1, self.batches // 10)


def name(batch: int) -> str:
    return f"Wave-{batch:03}"


def address(batch: int, member: int) -> str:
    return f"user{batch:03}.m{member:04}@contoso.com"


# --- the desired state and the tenant ----------------------------------------------------------------

ZONE_RECORDS = "autodiscover 3600 IN CNAME mail.contoso.com.\n" + "".join(
    f"host{i:02} 3600 IN A 198.51.100.{i + 1}\n" for i in range(HOSTS)
)


def zone_yaml() -> str:
    hosts = "".join(
        f'    - {{name: host{i:02}, type: A, ttl: 3600, values: ["198.51.100.{i + 1}"]}}\n'
        for i in range(HOSTS)
    )
    return (
        "apiVersion: stagectl/v1\nkind: DnsZone\nmetadata: {name: contoso.com}\nspec:\n  records:\n"
        '    - {name: "@", type: MX, ttl: 3600, values: ["0 contoso-com.mail.protection.outlook.com."], '
        "cutover: true}\n"
        '    - {name: autodiscover, type: CNAME, ttl: 3600, values: ["autodiscover.outlook.com."], '
        "cutover: true}\n"
        '    - {name: "@", type: TXT, ttl: 3600, spf: "v=spf1 include:spf.protection.outlook.com -all"}\n'
        + hosts
    )


def desired_files(shape: Shape, states: dict[int, str], *, short: int | None = None) -> dict[str, str]:
    """The repository's desired tree: batch index -> state; `short` loses its last member."""
    from tests.support.controller import migration_yaml  # the tests' Migration document, the same endpoint

    files = {"desired/migration.yaml": migration_yaml(), "desired/dns/contoso.com.yaml": zone_yaml()}
    for batch, state in states.items():
        count = shape.members - (batch == short)
        files[f"desired/batches/wave{batch:03}.yaml"] = (
            f"apiVersion: stagectl/v1\nkind: Batch\nmetadata: {{name: {name(batch)}}}\n"
            f"spec: {{state: {state}, membersCsv: wave{batch:03}.csv}}\n"
        )
        rows = "".join(f"{address(batch, m)}\n" for m in range(count))
        files[f"desired/batches/wave{batch:03}.csv"] = "EmailAddress\n" + rows
    return files


def base_states(shape: Shape) -> dict[int, str]:
    return {b: "completed" if b < shape.completed else "started" for b in range(shape.batches)}


def seed(
    shape: Shape, desired_dir: Path, dns_settings: dict[str, Any], golden: Path, *, now: datetime
) -> None:
    """The tenant as the controller left it: its own plan applied on an empty tenant (endpoint, batches
    created and started, SPF coexistence, cutover TTLs lowered), then the completed batches finished by
    hand as if their migration had run (the engine would take minutes for 190,000 syncs), then the 5
    started ones syncing. `golden/base.db` is that tenant; `golden/d.db` the same with (d)'s room made."""
    from controller.desired import loader
    from controller.dns.rfc2136 import Rfc2136Backend
    from controller.dns.settings import Rfc2136Settings
    from controller.exchange.client import ExchangeClient
    from controller.model.snapshot import Memory
    from controller.planner.plan import plan
    from controller.runtime.applier import apply_plan
    from controller.runtime.observe import observe
    from controller.sim.exchange import state as s
    from controller.sim.exchange.simulator import ExchangeSimulator, LocalRunner
    from controller.sim.exchange.store import SimStore

    simulator = ExchangeSimulator(now=now)
    simulator.state.sync_seconds_default = timedelta(days=30).total_seconds()  # the started ones stay Syncing
    for batch in range(shape.batches + shape.added):
        for member in range(shape.members):
            simulator.add_recipient(address(batch, member))
    desired = loader.load_directory(desired_dir, revision="seed")
    client = ExchangeClient(
        LocalRunner(simulator), resolve_secret=lambda ref: "CONTOSO\\m:x", sleep=lambda _: None
    )
    dns = Rfc2136Backend(Rfc2136Settings.model_validate(dns_settings))
    snapshot, _ = observe(desired, exchange=client, dns=dns, memory=Memory(), now=now)
    report = apply_plan(plan(desired, snapshot, now), exchange=client, dns=dns)
    if report.failed is not None:
        raise SystemExit(f"seeding the tenant failed: {report.failed}")
    for batch in range(shape.completed):
        found = simulator.state.batches[name(batch).lower()]
        found.phase, found.transition_at = s.BatchPhase.COMPLETED, None
        for key, user in found.users.items():
            user.status, user.due, user.last_sync = s.UserStatus.COMPLETED, None, now
            simulator.state.recipients[key].type = s.RecipientType.USER_MAILBOX
    simulator.advance(timedelta(minutes=30))
    golden.mkdir()
    SimStore(golden / "base.db").create(simulator)
    for batch in range(shape.added):  # removed by an administrator (or retention) before (d)
        simulator.call("Remove-MigrationBatch", {"Identity": name(batch)}, by_hand=True)
    simulator.advance(timedelta(minutes=10))
    SimStore(golden / "d.db").create(simulator)


# --- one controller pass, in a child process ---------------------------------------------------------


@dataclass
class Pass:
    """One measured pass: what the gateway saw and what the controller process reported."""

    calls: Counter[str]
    rows: Counter[str]
    response_bytes: int
    round_trips: int
    child: dict[str, Any]
    state: Path  # the controller's state directory after the pass
    store: Path  # the tenant's database after the pass
    gateway_cpu: float  # CPU seconds of this process (the gateway, the simulator) during the pass
    slow: dict[str, Any] | None = None  # the same pass at LATENCY per call

    def observation(self) -> Counter[str]:
        return Counter({c: n for c, n in self.calls.items() if c.startswith("Get-")})

    def changes(self) -> Counter[str]:
        return Counter({c: n for c, n in self.calls.items() if not c.startswith("Get-")})


@dataclass
class World:
    """Everything a controller runs against. A run is one controller process doing passes in turn, as
    `stagectl run` does (the loaded revision and the PSRP session kept between passes), each on a
    revision of the repository the benchmark moves the `live` branch to, from copies of a tenant and a
    state directory."""

    work: Path
    repo: Any  # tests.support.gitrepo.GitRepo
    pki: Any
    dns: dict[str, Any]
    env: dict[str, str]
    runs: list[float] = field(default_factory=list)

    def run(
        self,
        store: Path,
        state: Path | None,
        revisions: list[str],
        *,
        latency: float = 0.0,
        profile: int | None = None,
    ) -> list[Pass]:
        """One pass per revision; the pass at index `profile` under cProfile."""
        from controller.sim.exchange.store import SimRunner, SimStore
        from tests.support.gateway import psrp_section, running_gateway

        run = self.work / f"run{len(self.runs):02}"
        run.mkdir()
        if state is not None:
            shutil.copytree(state, run / "state")
        live = self.work / STORE  # one database: the gateway's process keeps one tenant, not one per run
        _backup(store, live)  # written through SQLite: the store sees a new tenant and reads it afresh
        with SimStore(live).transaction() as simulator:  # read now, not by the first call of a pass
            simulator.set_latency(latency)
        runner = SimRunner(live)
        started = time.perf_counter()
        with running_gateway(runner, pki=self.pki) as gateway, (run / "stderr").open("w") as errors:
            psrp = psrp_section(
                gateway, caBundle=str(self.pki.ca), operationTimeout=20, readTimeout=60, connectionTimeout=10
            )
            config = {
                "apiVersion": "stagectl/v1",
                "kind": "ControllerConfig",
                "source": {"repo": str(self.repo.path), "branch": "live"},
                "stateDir": str(run / "state"),
                "exchange": {"backend": "psrp", "psrp": psrp},
                "dns": {"backend": "rfc2136", "rfc2136": self.dns},
            }
            (run / "stagectl.yaml").write_text(json.dumps(config))  # JSON is YAML
            self.repo.git("branch", "--force", "live", revisions[0])
            command = [sys.executable, "-m", "bench.scale", "--pass", str(run / "stagectl.yaml")]
            child = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
            assert child.stdin is not None and child.stdout is not None
            passes = []
            for index, revision in enumerate(revisions):
                self.repo.git("branch", "--force", "live", revision)  # a commit merged while it runs
                seen, trips, sent = len(gateway.received), gateway.round_trips, gateway.response_bytes
                rows, cpu = Counter(gateway.rows_written), time.process_time()
                child.stdin.write("profile\n" if index == profile else "pass\n")
                child.stdin.flush()
                line = child.stdout.readline()
                if not line:
                    child.wait()
                    raise SystemExit(
                        f"the controller in {run} failed:\n{(run / 'stderr').read_text()[-3000:]}"
                    )
                passes.append(
                    Pass(
                        calls=Counter(call.cmdlet for call in gateway.received[seen:]),
                        rows=Counter(gateway.rows_written) - rows,
                        response_bytes=gateway.response_bytes - sent,
                        round_trips=gateway.round_trips - trips,
                        child=json.loads(line),
                        gateway_cpu=time.process_time() - cpu,
                        state=run / "state",
                        store=run / STORE,
                    )
                )
            child.stdin.close()
            if child.wait() != 0:
                raise SystemExit(f"the controller in {run} failed:\n{(run / 'stderr').read_text()[-3000:]}")
        self.runs.append(time.perf_counter() - started)
        _backup(live, run / STORE)
        summary = ", ".join(
            f"{r} {sum(p.calls.values())} calls {p.child['seconds']:.1f} s"
            for r, p in zip(revisions, passes, strict=True)
        )
        print(f"  run {len(self.runs)} at latency {latency}: {summary}", file=sys.stderr, flush=True)
        return passes


def _backup(source: Path, target: Path) -> None:
    """A consistent copy of a tenant database, its write-ahead log included (SQLite's backup API)."""
    with (
        contextlib.closing(sqlite3.connect(source)) as db,
        contextlib.closing(sqlite3.connect(target)) as copy,
    ):
        db.backup(copy)


def child_pass(config_path: Path) -> None:
    """`stagectl run`, one pass per line read ("pass" or "profile"), each pass's figures written as one
    JSON line: plan() and observe() timed, the peak RSS of the pass (VmHWM, reset before it)."""
    import cProfile

    from controller.planner import plan as planning
    from controller.runtime import observe as observing
    from controller.runtime import reconciler as reconciling
    from controller.runtime import wiring
    from controller.runtime.config import load_config
    from controller.sim.backends import REHEARSAL

    spent: dict[str, float] = {}
    planned: list[tuple[Any, ...]] = []

    def timed(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - started
                planned[:] = [args] if label == "plan" else planned

        return call

    pure_plan = planning.plan
    reconciling.plan = timed("plan", pure_plan)  # type: ignore[attr-defined]
    reconciling.observe = timed("observe", observing.observe)  # type: ignore[attr-defined]
    reconciler = wiring.build(load_config(config_path), rehearsal=REHEARSAL)
    dns = getattr(reconciler.backends.dns, "messages", None)
    for line in sys.stdin:
        spent.clear()
        planned.clear()
        if dns is not None:
            dns.reset()
        with contextlib.suppress(OSError):  # VmHWM from here on: this pass's peak
            Path("/proc/self/clear_refs").write_text("5")
        profiler = cProfile.Profile() if line.strip() == "profile" else None
        started, cpu = time.perf_counter(), time.process_time()
        with profiler if profiler is not None else contextlib.nullcontext():
            result = reconciler.run_pass()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        report, peak = result.report, _peak_rss_kib()
        plans = [spent.get("plan", 0.0)]
        for _ in range(3 if planned and profiler is None else 0):  # plan() is pure: the same call again
            again = time.perf_counter()
            pure_plan(*planned[0])
            plans.append(time.perf_counter() - again)
        figures = {
            "seconds": seconds,
            "cpu": cpu,
            "plan": sorted(plans)[len(plans) // 2],  # the median: this machine is shared
            "observe": spent.get("observe", 0.0),
            "peak_rss_kib": peak,
            "dns_queries": getattr(dns, "queries", None),
            "dns_updates": getattr(dns, "updates", None),
            "actions": [
                getattr(o.action, "cmdlet", None) or f"dns {o.action.object}" for o in report.outcomes
            ],
            "failed": None if report.failed is None else str(report.failed),
            "waiting": len(result.plan.waiting),
            "blocked": len(result.plan.blocked),
            "unknown": dict(getattr(result.plan, "unknown", {}) or {}),
            "finished": len(reconciler.store.load_memory().finished),
            "profile": _top(profiler) if profiler is not None else None,
        }
        print(json.dumps(figures), flush=True)
    wiring.close(reconciler)


def _peak_rss_kib() -> int:
    """VmHWM, this process's peak resident set. Not ru_maxrss: Linux carries that over from the parent
    across fork and exec, so a child of the gateway's process would report the gateway's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _top(profiler: Any) -> dict[str, list[tuple[str, int, float, float]]]:
    """The profile's top 10 by cumulative time and top 5 by own time: where, calls, own s, cumulative s."""
    import pstats

    entries = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = [(_where(*key), value[1], value[2], value[3]) for key, value in entries.items()]
    rows = [row for row in rows if not row[0].startswith("bench/")]  # the timers around plan and observe
    return {
        "cumulative": sorted(rows, key=lambda row: row[3], reverse=True)[:10],
        "own": sorted(rows, key=lambda row: row[2], reverse=True)[:5],
    }


def _where(file: str, line: int, function: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{file}:{line}({function})" if line else function


# --- the scenarios -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A pass in a scenario's table, with the minimum it is held to: the reads one per object kind
    the pass needs and one per unfinished batch, and the distinct Exchange changes the scenario needs."""

    label: str
    run: Pass
    reads: int
    changes: int


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    columns: list[Column]


@contextlib.contextmanager
def bind_pair(work: Path, records: str) -> Iterator[dict[str, Any]]:
    """A BIND primary and a secondary (NOTIFY/IXFR) serving contoso.com; yields the rfc2136 settings."""
    from controller.sim.bind import bind_zone

    with bind_zone(secondary=True, notify=True, extra_records=records) as bind:
        assert bind.secondary is not None
        key = bind.key_file(work / f"tsig-{bind.primary.port}.key")
        servers = [bind.primary.address, bind.secondary.address]
        yield {"default": {"servers": servers, "primary": bind.primary.address, "keyRef": f"file:{key}"}}


def example(world: World, work: Path) -> Scenario:
    """(a) The repository's example as committed, on an empty tenant whose members are mail users: the
    first pass and the next, run from the start at latency 0 and again at LATENCY (fresh BIND each)."""
    from controller.desired import loader
    from controller.sim.exchange.simulator import ExchangeSimulator
    from controller.sim.exchange.store import SimStore

    tenant = work / "example.db"
    simulator = ExchangeSimulator(now=datetime.now(UTC))
    for batch in loader.load_directory(EXAMPLE).batches:
        for member in batch.members:
            simulator.add_recipient(member.address)
    SimStore(tenant).create(simulator)
    runs: dict[float, list[Pass]] = {}
    for latency in (0.0, LATENCY):
        with bind_pair(work, "autodiscover 3600 IN CNAME mail.contoso.com.\n") as dns:
            world.dns = dns
            runs[latency] = world.run(tenant, None, ["example", "example"], latency=latency)
    for fast, slow in zip(runs[0.0], runs[LATENCY], strict=True):
        fast.slow = slow.child
    first, second = runs[0.0]
    return Scenario(
        "a",
        "(a) the example (4 batches, 525 members, 3 managed RRsets), from an empty tenant",
        [
            # the endpoint, the batch list and the directory: no batch exists yet; the endpoint and the
            # two started batches created (New-MigrationBatch -AutoStart)
            Column("first pass", first, 3, 3),
            # the endpoint, the batch list and the two started batches' users (the planned batches' readiness
            # was seen in the first pass)
            Column("next pass", second, 4, 0),
        ],
    )


def at_scale(world: World, shape: Shape, golden: Path) -> list[Scenario]:
    """(b), (c), (d) on the seeded tenant; the controller's state comes from its own passes."""
    (first,) = world.run(golden / "base.db", None, ["main"])
    warm = first
    for _ in range(2):  # until the completed batches are verified (the first pass should do it)
        if warm.child["finished"] >= shape.completed:
            break
        (warm,) = world.run(warm.store, warm.state, ["main"])
    reads = 2 + shape.unfinished  # the endpoint, the batch list, the users of each unfinished batch
    # After a pass that warms the controller up: (b) the next pass, then (c)'s commit; again at LATENCY,
    # and (b) once more under cProfile.
    _, b, c = world.run(warm.store, warm.state, ["main", "main", "c"])
    _, b.slow, c.slow = (
        p.child for p in world.run(warm.store, warm.state, ["main", "main", "c"], latency=LATENCY)
    )
    b.child["profile"] = world.run(warm.store, warm.state, ["main", "main"], profile=1)[1].child["profile"]
    # (d)'s commit after a pass on the tenant where finished batches were removed; ~100 s a run, so not run
    # again at LATENCY (computed), and once more under cProfile.
    _, d = world.run(golden / "d.db", warm.state, ["d-prep", "d"])
    d.child["profile"] = world.run(golden / "d.db", warm.state, ["d-prep", "d"], profile=1)[1].child[
        "profile"
    ]
    return [
        Scenario(
            "b",
            f"(b) {shape.batches} x {shape.members:,}: {shape.completed} Completed, {shape.unfinished} "
            "Syncing, nothing to do",
            [
                Column("first pass (nothing verified yet)", first, 2 + shape.batches, 0),
                Column("steady pass", b, reads, 0),
            ],
        ),
        Scenario("c", "(c) the same, one member removed from a Syncing batch", [Column("pass", c, reads, 1)]),
        Scenario(
            "d",
            f"(d) the same, {shape.added * shape.members:,} members (10%) added as {shape.added} new started "
            f"batches in place of {shape.added} finished ones",
            [Column("pass", d, reads + 1, shape.added)],  # and the directory, for the new members
        ),
    ]


def run(shape: Shape, work: Path) -> Results:
    from bench import naive
    from controller.sim.pki import make_pki
    from tests.support.gateway import PASSWORD
    from tests.support.gitrepo import GitRepo

    started = time.perf_counter()
    repo = GitRepo(work / "repo")
    repo.commit(desired_files(shape, base_states(shape)), message="steady state")
    _branch(repo, "c", "main", desired_files(shape, base_states(shape), short=shape.batches - 1))
    prep = base_states(shape) | dict.fromkeys(range(shape.added), "removed")
    _branch(repo, "d-prep", "main", desired_files(shape, prep))
    added = dict.fromkeys(range(shape.batches, shape.batches + shape.added), "started")
    _branch(repo, "d", "d-prep", desired_files(shape, prep | added))
    repo.git("checkout", "--quiet", "-b", "example", "main")
    repo.git("rm", "-r", "--quiet", "desired")
    shutil.copytree(EXAMPLE, repo.path / "desired")
    repo.commit(message="the example")
    repo.git("checkout", "--quiet", "main")
    os.environ[PASSWORD_ENV] = PASSWORD  # the naive baseline's client runs in this process
    credentials = "CONTOSO\\m:" + secrets.token_hex(8)
    env = {**os.environ, **repo.env, PASSWORD_ENV: PASSWORD, CREDENTIALS_ENV: credentials}
    world = World(work=work, repo=repo, pki=make_pki(work / "pki"), dns={}, env=env)
    scenarios = [example(world, work)]
    with bind_pair(work, ZONE_RECORDS) as dns:
        world.dns = dns
        seeding = time.perf_counter()
        now = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        seed(shape, repo.path / "desired", dns, work / "golden", now=now)
        seeded = time.perf_counter() - seeding
        print(f"  tenant seeded in {seeded:.1f} s", file=sys.stderr, flush=True)
        scenarios += at_scale(world, shape, work / "golden")
    batches, members = min(NAIVE[0], shape.batches), min(NAIVE[1], shape.members)
    baseline = naive.measure(work, world.pki, batches=batches, members=members)
    return Results(
        shape=shape,
        scenarios=scenarios,
        naive=baseline,
        seeding=seeded,
        passes=world.runs,
        total=time.perf_counter() - started,
        load=os.getloadavg()[0],
    )


def _branch(repo: Any, branch: str, start: str, files: dict[str, str]) -> None:
    repo.git("checkout", "--quiet", "-b", branch, start)
    repo.commit(files, message=branch)
    repo.git("checkout", "--quiet", "main")


# --- the report --------------------------------------------------------------------------------------

BEGIN, END = "<!-- bench.scale:begin -->", "<!-- bench.scale:end -->"
HEADING = "## Scale: whole passes through the gateway and BIND"
MB = 1_000_000


@dataclass
class Results:
    shape: Shape
    scenarios: list[Scenario]
    naive: Any  # bench.naive.Naive
    seeding: float
    passes: list[float]
    total: float
    load: float

    def column(self, key: str, index: int = -1) -> Column:
        return next(s for s in self.scenarios if s.key == key).columns[index]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=BATCHES)
    parser.add_argument("--members-per-batch", type=int, default=MEMBERS)
    parser.add_argument("--pass", dest="config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.config is not None:
        child_pass(args.config)
        return
    shape = Shape(args.batches, args.members_per_batch)
    if not (2 <= shape.batches <= BATCHES and 1 <= shape.members <= MEMBERS):
        parser.error(f"at most {BATCHES} batches of at most {MEMBERS} members, at least 2 batches")
    with tempfile.TemporaryDirectory(prefix="stagectl-bench-scale-") as temp:
        results = run(shape, Path(temp))
    from bench.scale_report import render, write_doc  # the report reads this module's types

    text = render(results)
    print(text)
    if (shape.batches, shape.members) == (BATCHES, MEMBERS):
        write_doc(ROOT / "docs" / "benchmarks.md", text)
        print("(written to docs/benchmarks.md)")
    else:
        print("(docs/benchmarks.md is written at full size only)")


if __name__ == "__main__":
    main()
