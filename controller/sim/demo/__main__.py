"""`make demo`: the example migration of contoso.com driven by commits, end to end on real parts.

The Exchange simulator is served over real PSRP (WSMan over HTTPS, `stagectl sim-gateway`) and reached
with pypsrp; DNS is a real BIND `named` on loopback with TSIG when it is installed (the DNS simulator
otherwise, and the demo says which). An administrator's pull requests are commits to a temporary git
repository; the simulator's clock runs six hours per pass so weeks of migration take a minute.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from controller.model.actions import Plan
from controller.runtime import audit, status, wiring
from controller.runtime.config import load_config
from controller.sim.backends import REHEARSAL
from controller.sim.demo import phases, services
from controller.sim.exchange.store import SimStore

STEP_HOURS = 6
MAX_PASSES = 120
EXAMPLE = Path(__file__).resolve().parents[3] / "desired"


def main() -> int:
    workspace = Path(tempfile.mkdtemp(prefix="stagectl-demo-"))
    os.environ.setdefault(
        "ONPREM_MIGRATION_CREDENTIALS", "CONTOSO\\migration.admin:" + secrets.token_urlsafe(12)
    )
    os.environ["STAGECTL_GATEWAY_PASSWORD"] = secrets.token_urlsafe(16)
    print(f"stagectl demo: the staged migration of contoso.com, in {workspace}\n")
    try:
        with contextlib.ExitStack() as stack:
            exchange = services.start_exchange(stack, workspace, example=EXAMPLE)
            dns = services.start_dns(stack, workspace)
            print(f"  Exchange Online  simulator behind the PSRP gateway at {exchange.url}")
            print(f"  DNS              {dns.description}")
            repo = phases.create_repository(workspace / "migration-repo", EXAMPLE)
            config_path = services.write_config(workspace, repo=repo, exchange=exchange, dns=dns)
            print(f"  Repository       {repo} (branch main)\n")
            converged = drive(config_path, repo, exchange.sim_state)
            report(config_path)
            count_calls(exchange.sim_state)
            return 0 if converged else 1
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def drive(config_path: Path, repo: Path, sim_state: Path) -> bool:
    config = load_config(config_path)
    reconciler = wiring.build(config, rehearsal=REHEARSAL)
    printer = phases.Printer(sim_state)
    script = phases.Script(repo, sim_state, failing=True, say=printer.say)
    last: Plan | None = None
    try:
        for number in range(1, MAX_PASSES + 1):
            merged = script.next_commit(reconciler.store.load_memory(), last)
            result = reconciler.run_pass()
            last = result.plan
            printer.show(number, result, merged=merged)
            if script.finished and phases.converged(result):
                print(f"\nConverged after {number} passes.\n")
                return True
            services.advance(sim_state, hours=STEP_HOURS)
        print(f"\nNot converged after {MAX_PASSES} passes.", file=sys.stderr)
        return False
    finally:
        wiring.close(reconciler)


def report(config_path: Path) -> None:
    config = load_config(config_path)
    state_dir = config.path(config.state_dir)
    print("$ stagectl status")
    data = status.read(state_dir)
    if data is not None:
        print(status.as_text(data))
    print("$ stagectl audit show  (the results; each follows its intent, recorded before it was sent)")
    records = [r for r in audit.show(audit.path_in(state_dir)) if r.get("phase") != "intent"]
    for record in records:
        action = record["action"]
        assert isinstance(action, dict)
        print(
            f"  {record['seq']:>3} {str(record['revision'])[:10]} {record['author']}: {audit.summary(action)}"
            f" -> {record['result']}"
        )
    dns_updates: Counter[str] = Counter()
    for record in records:
        action = record["action"]
        if isinstance(action, dict) and action.get("system") == "dns":
            dns_updates[str(action["object"]).split("/", 2)[2]] += 1  # "dns/<zone>/" dropped
    listed = ", ".join(f"{name} {n}" for name, n in sorted(dns_updates.items()))
    print(f"\nDNS updates: {sum(dns_updates.values())} ({listed})")
    broken = audit.verify(audit.path_in(state_dir))
    print(f"audit chain: {'intact' if broken is None else f'broken at record {broken}'}")
    repo = str(config.source.repo if config.source else ".")
    print("$ git log --notes=stagectl  (each merge, and what the controller did for it)")
    subprocess.run(["git", "-C", repo, "log", "--notes=stagectl", "--format=%h %s (%an)%n%N"], check=False)


def count_calls(sim_state: Path) -> None:
    """What the migration cost in Exchange: each write is a distinct change; reads are one per kind a pass."""
    calls = SimStore(sim_state).load().state.calls
    # Test-MigrationServerAvailability (the preflight's connection test) changes nothing: a read.
    read_verbs = ("Get-", "Test-")
    writes = {name: n for name, n in sorted(calls.items()) if not name.startswith(read_verbs)}
    reads = sum(n for name, n in calls.items() if name.startswith(read_verbs))
    listed = ", ".join(f"{name} {n}" for name, n in writes.items())
    print(f"Exchange cmdlet calls: {sum(writes.values())} writes ({listed}); {reads} reads")


if __name__ == "__main__":
    raise SystemExit(main())
