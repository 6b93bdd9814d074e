"""Benchmark: load and validate 100 batches x 2,000 members (200,000 CSV rows) generated in a temp dir.

Run: `.venv/bin/python -m bench.load`; prints wall time and peak memory (ru_maxrss of the process).
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

from controller.desired import loader

BATCHES = 100
MEMBERS = 2000

MIGRATION = """apiVersion: stagectl/v1
kind: Migration
metadata: {name: contoso}
spec:
  endpoint:
    name: StagedEndpoint
    exchangeServer: mail.contoso.com
    rpcProxyServer: mail.contoso.com
    emailAddress: migration.admin@contoso.com
    credentialsRef: env:ONPREM_MIGRATION_CREDENTIALS
"""


def generate(directory: Path) -> None:
    (directory / "migration.yaml").write_text(MIGRATION)
    batches = directory / "batches"
    batches.mkdir()
    for batch in range(BATCHES):
        (batches / f"wave{batch:03}.yaml").write_text(
            f"apiVersion: stagectl/v1\nkind: Batch\nmetadata: {{name: Wave-{batch:03}}}\n"
            f"spec: {{state: planned, membersCsv: wave{batch:03}.csv}}\n"
        )
        rows = "".join(f"User{batch:03}.Member{member:04}@contoso.com\n" for member in range(MEMBERS))
        (batches / f"wave{batch:03}.csv").write_text("EmailAddress\n" + rows)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="stagectl-bench-") as temp:
        directory = Path(temp)
        generate(directory)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        state = loader.load_directory(directory)
        elapsed = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    members = sum(len(batch.members) for batch in state.batches)
    print(f"load+validate: {len(state.batches)} batches, {members:,} members in {elapsed:.2f} s")
    print(f"peak RSS: {peak / 1024:.0f} MiB (before loading: {before / 1024:.0f} MiB)")
    print(f"Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
