"""`make bench`: every benchmark in turn; each prints its figures and the command that reruns it alone."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path


def main() -> None:
    here = Path(__file__).parent
    for module in sorted(
        info.name for info in pkgutil.iter_modules([str(here)]) if not info.name.startswith("_")
    ):
        print(f"== bench.{module} (.venv/bin/python -m bench.{module})", flush=True)
        importlib.import_module(f"bench.{module}").main()
        print(flush=True)


if __name__ == "__main__":
    main()
