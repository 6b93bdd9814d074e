"""Members of a batch from a CSV file in the migration's own format (an `EmailAddress` column).

Only `EmailAddress` is read; other columns are ignored because the controller builds the CSV it
sends to Exchange itself. `Password` and `ForceChangePassword` columns are refused outright.
"""

from __future__ import annotations

import csv
import functools
import io
from typing import NamedTuple

from controller.desired import models
from controller.desired.problems import MAX_PER_FILE

MAX_CSV_BYTES = 10 * 1024 * 1024
_WIDE_BOMS = ((b"\xff\xfe", "UTF-16 or UTF-32"), (b"\xfe\xff", "UTF-16"), (b"\x00\x00\xfe\xff", "UTF-32"))
_REFUSED_COLUMNS = {"password": "Password", "forcechangepassword": "ForceChangePassword"}

Row = tuple[int, str]  # (row number, address or message)
PARSED_CSVS = 256  # more than the 100 batches a tenant may hold, plus a changed revision's
# Only CSVs of a size a batch can have are kept parsed (2,000 rows of a few columns): a hostile 10 MB file
# is parsed again if it comes again, never held 256 times over.
MAX_KEPT_CSV_BYTES = 512 * 1024
# Rows read as addresses: one more than a batch may hold shows it holds too many; the others are counted.
MAX_ROWS = models.MAX_BATCH_MEMBERS + 1
# Rows with a problem read before the others are only counted: with the line saying so, what the loader
# lists of one file.
MAX_PROBLEMS = MAX_PER_FILE - 1


class Members(NamedTuple):
    members: tuple[Row, ...]  # (row, address), the first MAX_ROWS
    problems: tuple[Row, ...]  # (row, message), the first MAX_PROBLEMS
    rows: int  # rows that name a member, all of them


def read_members(data: bytes) -> Members:
    """(row, address) for each member and (row, message) for each problem; rows are 1-based lines.

    Kept by content: a pass over an unchanged repository, or a revision that changes one batch, does not
    parse the other CSVs again (the cost of a pass does not grow with finished batches).
    """
    return _kept(data) if len(data) <= MAX_KEPT_CSV_BYTES else _read(data)


@functools.lru_cache(maxsize=PARSED_CSVS)
def _kept(data: bytes) -> Members:
    return _read(data)


def _read(data: bytes) -> Members:
    members, problems, count = _parse(data)
    return Members(tuple(members), tuple(problems), count)


def _parse(data: bytes) -> tuple[list[Row], list[Row], int]:
    if len(data) > MAX_CSV_BYTES:
        return [], [(1, f"file is larger than {MAX_CSV_BYTES // (1024 * 1024)} MiB")], 0
    for bom, encoding in _WIDE_BOMS:
        if data.startswith(bom):
            return [], [(1, f"{encoding} text (it starts with a byte order mark): save the CSV as UTF-8")], 0
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        return [], [(line, "a NUL byte: binary data or UTF-16 text is not a CSV; save the CSV as UTF-8")], 0
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        return [], [(line, f"not UTF-8 (byte 0x{data[error.start]:02x}): save the CSV as UTF-8")], 0
    members: list[Row] = []
    problems: list[Row] = []
    count = skipped = 0
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
                    return [], problems, 0
                continue
            count += 1
            if len(members) >= MAX_ROWS or len(problems) >= MAX_PROBLEMS:
                skipped += len(problems) >= MAX_PROBLEMS
                continue  # counted, not read: the batch is refused for what is already known
            if len(row) != width:
                problems.append((reader.line_num, f"row has {len(row)} fields, the header has {width}"))
                continue
            try:
                members.append((reader.line_num, models.smtp_address(row[column].strip())))
            except ValueError as error:
                problems.append((reader.line_num, str(error)))
    except csv.Error as error:
        problems.append((reader.line_num or 1, f"not readable as CSV: {error}"))
    if skipped:
        problems.append((problems[-1][0], f"the {skipped:,} rows after this one were not checked"))
    if column < 0 and not problems:
        problems.append((1, "empty CSV: expected a header row with an EmailAddress column"))
    return members, problems, count


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
