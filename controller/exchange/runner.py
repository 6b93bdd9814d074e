"""The seam to Exchange: run one cmdlet with named parameters and get its output objects as dicts.

A runner never receives PowerShell text. Parameter values are plain data: str, int, bool (a switch is
True), datetime (UTC), list[str], bytes (CSVData) or `secrets.Credential`. Errors are `errors.ExchangeError`s.
`select` projects the output in the same pipeline (`Select-Object -Property`), so a bulk read carries
only the properties the planner uses. The simulator (`store.SimRunner`) and pypsrp (`psrp.PsrpRunner`)
implement it; both return a `CmdletOutput`, so the warnings a call wrote travel with its objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol


class CmdletRunner(Protocol):
    def run(
        self, cmdlet: str, parameters: Mapping[str, object], select: Sequence[str] = ()
    ) -> list[dict[str, object]]:
        """Run `cmdlet` with `parameters`; return its output objects; raise an ExchangeError on error.

        `select` names the only properties wanted: `| Select-Object -Property ...` in the same pipeline
        (a second command, never script text). Empty: every property.
        """
        ...

    def close(self) -> None: ...


class CmdletOutput(list[dict[str, object]]):
    """One call's output objects plus the warnings it wrote (e.g. "Micro delay applied")."""

    def __init__(self, rows: Iterable[dict[str, object]] = (), *, warnings: list[str] | None = None) -> None:
        super().__init__(rows)
        self.warnings: list[str] = warnings if warnings is not None else []


def project(rows: list[dict[str, object]], select: Sequence[str]) -> list[dict[str, object]]:
    """What `Select-Object -Property` leaves of each row: the named properties, None where one is absent.

    The warnings of a `CmdletOutput` stay with the projected rows.
    """
    if not select:
        return rows
    warnings = list(getattr(rows, "warnings", []))
    return CmdletOutput(({name: row.get(name) for name in select} for row in rows), warnings=warnings)
