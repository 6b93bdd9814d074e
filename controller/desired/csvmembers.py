"""Members of a batch from a CSV file in the migration's own format (an `EmailAddress` column).

Only `EmailAddress` is read; other columns are ignored because the controller builds the CSV it
sends to Exchange itself. `Password` and `ForceChangePassword` columns are refused outright.
"""

from __future__ import annotations

import csv
import functools
import io

from controller.desired import models

MAX_CSV_BYTES = 10 * 1024 * 1024
_REFUSED_COLUMNS = {"password": "Password", "forcechangepassword": "ForceChangePassword"}

Row = tuple[int, str]  # (row number, address or message)
PARSED_CSVS = 256  # more than the 100 batches a tenant may hold, plus a changed revision's


@functools.lru_cache(maxsize=PARSED_CSVS)
def read_members(data: bytes) -> tuple[tuple[Row, ...], tuple[Row, ...]]:
    """(row, address) for each member and (row, message) for each problem; rows are 1-based lines.

    Kept by content: a pass over an unchanged repository, or a revision that changes one batch, does not
    parse the other CSVs again (the cost of a pass does not grow with finished batches).
    """
    members, problems = _parse(data)
    return tuple(members), tuple(problems)


def _parse(data: bytes) -> tuple[list[Row], list[Row]]:
    if len(data) > MAX_CSV_BYTES:
        return [], [(1, f"file is larger than {MAX_CSV_BYTES // (1024 * 1024)} MiB")]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        return [], [(line, f"not UTF-8 (byte 0x{data[error.start]:02x}): save the CSV as UTF-8")]
    members: list[Row] = []
    problems: list[Row] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    column = -1
    width = 0
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if column < 0:
                column, width = _header(row, reader.line_num, problems)
                if column < 0:
                    return [], problems
                continue
            if len(row) != width:
                problems.append((reader.line_num, f"row has {len(row)} fields, the header has {width}"))
                continue
            try:
                members.append((reader.line_num, models.smtp_address(row[column].strip())))
            except ValueError as error:
                problems.append((reader.line_num, str(error)))
    except csv.Error as error:
        problems.append((reader.line_num or 1, f"not readable as CSV: {error}"))
    if column < 0 and not problems:
        problems.append((1, "empty CSV: expected a header row with an EmailAddress column"))
    return members, problems


def _header(row: list[str], line: int, problems: list[Row]) -> tuple[int, int]:
    names = [cell.strip().lower() for cell in row]
    for name in names:
        if name in _REFUSED_COLUMNS:
            problems.append(
                (
                    line,
                    f"column {_REFUSED_COLUMNS[name]} refused: passwords never belong in git; "
                    "remove the column",
                )
            )
    if names.count("emailaddress") != 1:
        found = ", ".join(cell.strip() for cell in row)[:200]
        message = (
            "two EmailAddress columns"
            if "emailaddress" in names
            else f"no EmailAddress column in the header (found: {found})"
        )
        problems.append((line, message))
        return -1, 0
    return names.index("emailaddress"), len(row)
