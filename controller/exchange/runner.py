"""The seam to Exchange: run one cmdlet with named parameters and get its output objects as dicts.

A runner never receives PowerShell text. Parameter values are plain data: str, int, bool (a switch is
True), datetime (UTC), list[str], bytes (CSVData) or `secrets.Credential`. Errors are `errors.ExchangeError`s.
The simulator (`simulator.SimRunner`) and pypsrp (`psrp.PsrpRunner`) implement it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class CmdletRunner(Protocol):
    def run(self, cmdlet: str, parameters: Mapping[str, object]) -> list[dict[str, object]]:
        """Run `cmdlet` with `parameters`; return its output objects; raise an ExchangeError on error."""
        ...

    def close(self) -> None: ...
