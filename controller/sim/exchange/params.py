"""Parameter binding for the simulator's cmdlets: names as PowerShell binds them, values, and CSVData.

Values arrive as a client sends them (str, int, bool for a switch, datetime, list[str], bytes, Credential);
a wrong name or value fails as PowerShell's parameter binder would, so client bugs show up in tests.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from controller.exchange.errors import CmdletError
from controller.sim.exchange import state as s

ADDRESS = re.compile(r"^[^@\s,;<>\"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
BATCH_NAME = re.compile(r"^[A-Za-z0-9-]+$")
CSV_COLUMNS = frozenset({"emailaddress", "password", "forcechangepassword"})


def fail(cmdlet: str, exception_type: str, message: str) -> CmdletError:
    return CmdletError(cmdlet, exception_type, message, category=f"Cmdlet-{exception_type}")


def not_found(cmdlet: str, identity: str) -> CmdletError:
    return fail(
        cmdlet,
        "ManagementObjectNotFoundException",
        f'Couldn\'t find object "{identity}". Please make sure that it was spelled correctly or specify a '
        "different object.",
    )


@dataclass(frozen=True, slots=True)
class Bound:
    """The parameters of one call under their canonical names; `None` values count as absent."""

    cmdlet: str
    values: Mapping[str, object]

    def has(self, name: str) -> bool:
        return self.values.get(name) is not None

    def text(self, name: str, *, required: bool = False) -> str | None:
        value = self.values.get(name)
        if value is None or value == "":
            if required:
                raise fail(
                    self.cmdlet,
                    "ParameterBindingValidationException",
                    f"Cannot validate argument on parameter '{name}'. The argument is null or empty.",
                )
            return None
        if not isinstance(value, str):
            raise self._bad(name, value)
        return value

    def switch(self, name: str) -> bool:
        value = self.values.get(name)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self._bad(name, value)
        return value

    def integer(self, name: str) -> int | None:
        value = self.values.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise self._bad(name, value)
        try:
            return int(value)
        except ValueError:
            raise self._bad(name, value) from None

    def strings(self, name: str) -> list[str] | None:
        value = self.values.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            return [value]
        if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
            return list(value)
        raise self._bad(name, value)

    def moment(self, name: str) -> datetime | None:
        """A DateTime; one without a time zone is UTC, as in Exchange Online (exchange-facts §1)."""
        value = self.values.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise self._bad(name, value) from None
        if not isinstance(value, datetime):
            raise self._bad(name, value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def data(self, name: str) -> bytes | None:
        value = self.values.get(name)
        if value is None:
            return None
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        if isinstance(value, list) and all(isinstance(item, int) and 0 <= item < 256 for item in value):
            return bytes(value)
        raise self._bad(name, value)

    def _bad(self, name: str, value: object) -> CmdletError:
        return fail(
            self.cmdlet,
            "ParameterBindingException",
            f"Cannot bind parameter '{name}'. Cannot convert value of type {type(value).__name__}.",
        )


def unconfirmed(cmdlet: str, parameters: Mapping[str, object]) -> CmdletError | None:
    """A destructive cmdlet (Remove-*) pauses for confirmation unless it is `-Confirm:$false` (the Exchange
    cmdlet reference, -Confirm); a remote session has no one to answer, so PowerShell fails it with a
    HostException (its text as PowerShell words it). The simulator's remote paths (the gateway and the
    controller's `sim` backend) call this; an administrator's own console calls do not."""
    confirm = next((v for n, v in parameters.items() if n.lstrip("-").lower() == "confirm"), None)
    if cmdlet.lower().startswith("remove-") and confirm is not False:
        return fail(cmdlet, "HostException", HOST_PROMPT)
    return None


HOST_PROMPT = (
    "A command that prompts the user failed because the host program or the command type does not support "
    "user interaction. The host was attempting to request confirmation with the following message: "
    "Are you sure you want to perform this action?"
)


def bind(cmdlet: str, parameters: Mapping[str, object], allowed: tuple[str, ...]) -> Bound:
    """Match names case-insensitively to the cmdlet's parameters; an unknown name fails the call. Every
    cmdlet that changes something takes the common `-Confirm` switch."""
    if not cmdlet.startswith("Get-"):
        allowed = (*allowed, "Confirm")
    canonical = {name.lower(): name for name in allowed}
    values: dict[str, object] = {}
    for name, value in parameters.items():
        known = canonical.get(name.lstrip("-").lower())
        if known is None:
            raise fail(
                cmdlet,
                "ParameterBindingException",
                f"A parameter cannot be found that matches parameter name '{name}'.",
            )
        values[known] = value
    return Bound(cmdlet, values)


def parse_csv(cmdlet: str, data: bytes, *, allow_unknown_columns: bool = False) -> list[str]:
    """The EmailAddress column of a staged CSV, checked as the service checks it (exchange-facts §9.3).

    The check texts are undocumented; these say what is wrong. Repeated rows count once (assumption).
    """

    def bad(reason: str) -> CmdletError:
        return fail(cmdlet, "MigrationCSVValidationException", f"The CSV file isn't valid: {reason}")

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise bad("it must be saved as UTF-8.") from None
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        raise bad("it is empty.")
    header = [cell.strip().lower() for cell in rows[0]]
    if "emailaddress" not in header:
        raise bad("it has no EmailAddress column header.")
    unknown = [cell for cell in header if cell not in CSV_COLUMNS]
    if unknown and not allow_unknown_columns:
        raise bad(f"unknown column {unknown[0]!r}.")
    body = rows[1:]
    if not body:
        raise bad("it has a header but no rows.")
    if len(body) > s.MAX_CSV_ROWS:
        raise bad(f"it has {len(body)} rows; a batch can contain at most {s.MAX_CSV_ROWS}.")
    column = header.index("emailaddress")
    addresses: list[str] = []
    seen: set[str] = set()
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise bad(f"row {number} has {len(row)} columns; the header has {len(header)}.")
        address = row[column].strip()
        if not ADDRESS.match(address):
            raise bad(f"row {number}: EmailAddress {address!r} isn't a valid SMTP address.")
        if s.key(address) not in seen:
            seen.add(s.key(address))
            addresses.append(address)
    return addresses


def check_batch_name(cmdlet: str, name: str) -> None:
    if len(name) > s.MAX_BATCH_NAME or not BATCH_NAME.match(name):
        raise fail(
            cmdlet,
            "ParameterBindingValidationException",
            f"Cannot validate argument on parameter 'Name'. The batch name {name[:80]!r} must be at most "
            f"{s.MAX_BATCH_NAME} characters of letters, digits and '-'.",
        )


def result_size(bound: Bound) -> int | None:
    """`-ResultSize`: 1000 by default, `Unlimited` for all (None)."""
    value = bound.values.get("ResultSize")
    if value is None:
        return s.DEFAULT_RESULT_SIZE
    if isinstance(value, str) and value.strip().lower() == "unlimited":
        return None
    size = bound.integer("ResultSize")
    if size is None or size < 1:
        raise bound._bad("ResultSize", value)
    return size
