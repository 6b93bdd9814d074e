"""The seam to Exchange: run one cmdlet with named parameters and get its output objects as dicts.

A runner never receives PowerShell text. Parameter values are plain data: str, int, bool (a switch is
True), datetime (UTC), list[str], bytes (CSVData) or `secrets.Credential`. Errors are `errors.ExchangeError`s.
The simulator (`store.SimRunner`) and pypsrp (`psrp.PsrpRunner`) implement it; both return a
`CmdletOutput`, so the warnings a call wrote travel with its objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol


class CmdletRunner(Protocol):
    def run(self, cmdlet: str, parameters: Mapping[str, object]) -> list[dict[str, object]]:
        """Run `cmdlet` with `parameters`; return its output objects; raise an ExchangeError on error."""
        ...

    def close(self) -> None: ...


class CmdletOutput(list[dict[str, object]]):
    """One call's output objects plus the warnings it wrote (e.g. "Micro delay applied")."""

    def __init__(self, rows: Iterable[dict[str, object]] = (), *, warnings: list[str] | None = None) -> None:
        super().__init__(rows)
        self.warnings: list[str] = warnings if warnings is not None else []
