"""Benchmark: what coordination costs. The example migration (`desired/`, merged phase by phase as
`make demo` does) driven to the end twice on the simulators: once by a single-machine reconciler, once by
a leader on a real 3-member etcd cluster (TLS, client certificates) through the shared store and audit
chain. Counted: etcd requests and transactions of each pass (the keep-alive thread's apart), the time of a
pass in both modes, and what etcd holds at the end.

Run: `.venv/bin/python -m bench.coordination`. etcd comes from Debian (`make etcd`).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from controller.coordination.etcd import Etcd
from controller.coordination.leadership import Leadership
from controller.coordination.session import Session
from controller.coordination.shared_audit import SharedAudit
from controller.coordination.shared_store import SharedStore
from controller.runtime import wiring
from controller.runtime.config import load_config
from controller.runtime.reconciler import Reconciler
from controller.sim.backends import REHEARSAL
from controller.sim.demo import phases, services
from tests.reliability import crashdrive
from tests.support.etcd import etcd_cluster, etcd_section

STEP_HOURS = crashdrive.STEP_HOURS


class Counted:
    """Counts the requests the driving thread makes through one Etcd client (the keep-alive's are apart)."""

    def __init__(self, etcd: Etcd) -> None:
        self.requests = 0
        self.transactions = 0
        self._thread = threading.get_ident()
        call = etcd.call

        def counted(path: str, body: Any, **kwargs: Any) -> dict[str, Any]:
            if threading.get_ident() == self._thread:
                self.requests += 1
                self.transactions += path == "/kv/txn"
            return call(path, body, **kwargs)

        etcd.call = counted  # type: ignore[method-assign]


def drive(root: Path, build: Callable[[], Reconciler]) -> list[tuple[float, int, int, int]]:
    """The migration to its end; per pass: seconds, actions, etcd requests, etcd transactions."""
    reconciler = build()
    script = crashdrive._Script(root / "repo", root / "exchange.sqlite")
    counter: Counted | None = getattr(reconciler, "counted", None)
    passes = []
    try:
        for _ in range(crashdrive.MAX_PASSES):
            script.next_commit(reconciler.store.load_memory())
            before = (counter.requests, counter.transactions) if counter else (0, 0)
            started = time.perf_counter()
            result = reconciler.run_pass()
            seconds = time.perf_counter() - started
            after = (counter.requests, counter.transactions) if counter else (0, 0)
            passes.append((seconds, len(result.report.outcomes), after[0] - before[0], after[1] - before[1]))
            if script.finished and phases.converged(result):
                return passes
            services.advance(root / "exchange.sqlite", hours=STEP_HOURS)
        raise SystemExit("bench.coordination: the migration did not converge")
    finally:
        wiring.close(reconciler)


def main() -> None:
    os.environ.setdefault(crashdrive.CREDENTIALS_ENV, "CONTOSO\\migadmin:rehearsal-only")
    with tempfile.TemporaryDirectory(prefix="stagectl-bench-coordination-") as temp, ExitStack() as stack:
        root = Path(temp)
        alone_config = crashdrive.make(root / "alone")
        alone = drive(root / "alone", lambda: wiring.build(load_config(alone_config), rehearsal=REHEARSAL))

        cluster = stack.enter_context(etcd_cluster(root / "etcd"))
        path = crashdrive.make(root / "shared")
        data = yaml.safe_load(path.read_text())
        data["coordination"] = {
            "etcd": etcd_section(cluster),
            "tenant": "contoso",
        }
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        config = load_config(path)
        assert config.coordination is not None
        etcd = Etcd(config.coordination.etcd)
        session = Session(etcd, instance="bench", ttl=10, prefix="/stagectl").start()
        stack.callback(session.close)
        while not session.held():
            time.sleep(0.05)
        claim = Leadership(session, "contoso")
        assert claim.campaign()
        counted = Counted(etcd)

        def build() -> Reconciler:
            reconciler = wiring.build(
                config,
                rehearsal=REHEARSAL,
                store=lambda d: SharedStore.open_shared(d, claim, clock=lambda: datetime.now(UTC)),
                audit_log=lambda p: SharedAudit(p, claim),
            )
            reconciler.fence = claim.check
            reconciler.counted = counted  # type: ignore[attr-defined]
            return reconciler

        shared = drive(root / "shared", build)
        keys = list(etcd.prefix("/stagectl/"))
        report(alone, shared, keys=len(keys), size=sum(len(kv.value) for kv in keys))


def report(
    alone: list[tuple[float, int, int, int]], shared: list[tuple[float, int, int, int]], **held: int
) -> None:
    acting = [p for p in shared if p[1]]
    steady = [p for p in shared if not p[1]]
    print(f"passes to converge: {len(alone)} single-machine, {len(shared)} coordinated")
    print(
        f"actions: {sum(p[1] for p in alone)} single-machine, {sum(p[1] for p in shared)} coordinated "
        "(the same migration: equal)"
    )
    for name, rows in (("steady pass (no action)", steady), ("pass that acts", acting)):
        if rows:
            print(
                f"etcd per {name}: median {statistics.median(p[2] for p in rows):.0f} requests, "
                f"{statistics.median(p[3] for p in rows):.0f} transactions (max {max(p[2] for p in rows)}; "
                f"{len(rows)} passes)"
            )
    per_action = sum(p[3] for p in acting) / max(1, sum(p[1] for p in acting))
    print(
        f"etcd transactions per action sent (intent, audit intent, result, audit result, …): {per_action:.1f}"
    )
    print(
        f"pass time: median {statistics.median(p[0] for p in alone) * 1000:.0f} ms single-machine, "
        f"{statistics.median(p[0] for p in shared) * 1000:.0f} ms coordinated"
    )
    print(f"etcd at the end: {held['keys']} keys, {held['size'] / 1024:.0f} KiB of values")


if __name__ == "__main__":
    main()
