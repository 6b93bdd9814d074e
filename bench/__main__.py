"""`make bench`: every benchmark in turn; each prints its figures and the command that reruns it alone."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path


def main() -> None:
    here = Path(__file__).parent
    failed: list[str] = []
    timings: list[str] = []
    for module in sorted(
        info.name for info in pkgutil.iter_modules([str(here)]) if not info.name.startswith("_")
    ):
        loaded = importlib.import_module(f"bench.{module}")
        if not hasattr(loaded, "main"):
            continue  # a part of another benchmark (bench.naive is run by bench.scale)
        print(f"== bench.{module} (.venv/bin/python -m bench.{module})", flush=True)
        started = time.perf_counter()
        try:
            loaded.main()
        except Exception:  # one broken benchmark must not hide the others' figures (or bench.scale's doc)
            traceback.print_exc()
            failed.append(module)
        timings.append(f"bench.{module} {time.perf_counter() - started:.0f} s")
        print(flush=True)
    print(f"== wall time: {', '.join(timings)}", flush=True)
    if failed:
        sys.exit(f"failed: {', '.join(f'bench.{m}' for m in failed)}")


if __name__ == "__main__":
    main()
