"""Benchmark: `stagectl init` and `stagectl lint` on a generated inventory of 200,000 mailboxes and 500,000
grants (tests/support/inventory.py: departments with an org chart, shared mailboxes and delegations mostly
inside a team, 2% of grants anywhere).

Run: `.venv/bin/python -m bench.readiness [MAILBOXES GRANTS]`; prints each command's wall time and peak
memory (ru_maxrss of the child process) and what init planned.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.inventory import DOMAIN, generate

MAILBOXES, GRANTS = 200_000, 500_000


# The command in a child that reports its own peak RSS (RUSAGE_CHILDREN would give the largest child so far).
_CHILD = (
    "import resource, sys\n"
    "from controller.commands import cli\n"
    "code = cli.main(sys.argv[1:])\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _timed(args: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in MiB of the child, and its stdout."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    return elapsed, int(done.stderr.split()[-1]) // 1024, done.stdout  # ru_maxrss is in KiB on Linux


def main() -> None:
    mailboxes, grants = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) == 3 else (MAILBOXES, GRANTS)
    with tempfile.TemporaryDirectory(prefix="stagectl-bench-") as temp:
        org = generate(Path(temp) / "inventory", mailboxes=mailboxes, grants=grants)
        repo = Path(temp) / "repo"
        sources = ["--mailboxes", str(org.mailboxes), "--permissions", str(org.permissions)]
        seconds, peak, out = _timed(["init", "--domain", DOMAIN, "--out", str(repo), *sources, "--no-dns"])
        summary = [line for line in out.splitlines() if not line.startswith(" ")]
        print(f"init: {mailboxes:,} mailboxes, {grants:,} grants in {seconds:.1f} s, peak RSS {peak} MiB")
        for line in summary[:4]:
            print(f"  {line}")
        inventory = ["--inventory", str(org.mailboxes), "--permissions", str(org.permissions)]
        seconds, peak, out = _timed(["lint", str(repo / "desired"), *inventory])
        print(f"lint of the first 100 batches: {seconds:.1f} s, peak RSS {peak} MiB; {out.splitlines()[-1]}")
    print(f"Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
