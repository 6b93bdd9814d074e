"""CSV exports as administrators make them (`Export-Csv` from the Exchange Management Shell), read row by row
with the line each row starts on: UTF-8 with or without a byte order mark, or UTF-16 with one (Windows
PowerShell's `Out-File` default), the `#TYPE` line `Export-Csv` writes without `-NoTypeInformation`
skipped, columns found by name without case, unknown columns ignored."""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from controller.desired import models
from controller.desired.problems import Problems
from controller.desired.shown import shown

MAX_BYTES = 512 * 1024 * 1024  # an export of 200,000 mailboxes is about 40 MB
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class _Reader(Protocol):
    line_num: int

    def __iter__(self) -> Iterator[list[str]]: ...

    def __next__(self) -> list[str]: ...


class Unreadable(ValueError):
    """The file as a whole cannot be read as a CSV table (its problems are in the `Problems` given)."""


@dataclass(frozen=True, slots=True)
class Header:
    """Where each wanted column is: its index, or -1 when the export does not have it."""

    path: str
    line: int
    index: dict[str, int]  # wanted column (as spelled in `wanted`) -> index or -1
    width: int

    def missing(self) -> list[str]:
        return [name for name, at in self.index.items() if at < 0]


def lines(path: str, data: bytes, problems: Problems) -> Iterator[str]:
    """The lines of an export, decoded one at a time (a 40 MB export is never held twice); raises Unreadable
    (with the problem added) when it is not text. A line that is not UTF-8 ends the lines with a problem."""
    if len(data) > MAX_BYTES:
        problems.at(models.Source(path), f"file is larger than {MAX_BYTES // (1024 * 1024)} MiB")
        raise Unreadable(path)
    if data.startswith(_UTF16_BOMS):
        try:
            return iter(data.decode("utf-16").splitlines(keepends=True))
        except UnicodeDecodeError as error:
            problems.at(models.Source(path, 1, 1), f"UTF-16 text that does not decode: {error.reason}")
            raise Unreadable(path) from None
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        problems.at(
            models.Source(path, line, 1),
            "a NUL byte: binary data or UTF-16 text without a byte order mark; export with -Encoding UTF8",
        )
        raise Unreadable(path)
    return _utf8_lines(path, data, problems)


def _utf8_lines(path: str, data: bytes, problems: Problems) -> Iterator[str]:
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    number = 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end + 1
        number += 1
        try:
            yield data[start:end].decode("utf-8")
        except UnicodeDecodeError as error:
            byte = data[start + error.start]
            problems.at(
                models.Source(path, number, 1), f"not UTF-8 (byte 0x{byte:02x}): export with -Encoding UTF8"
            )
            return
        start = end


def rows(
    path: str, text: Iterator[str], wanted: Sequence[str], required: Sequence[str], problems: Problems
) -> tuple[Header, Iterator[tuple[int, list[str]]]]:
    """The header (wanted columns found by name, without case) and an iterator of (line, cells) for each
    row that is not blank; a row of another width than the header is a problem at its line, not yielded.
    Raises Unreadable when the header is missing, lacks a required column or names a column twice."""
    reader = csv.reader(text)
    header_line = 0
    names: list[str] = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if not names and row[0].startswith("#TYPE"):
                continue  # Export-Csv's type line (Windows PowerShell without -NoTypeInformation)
            header_line, names = reader.line_num, [cell.strip().lower() for cell in row]
            break
    except csv.Error as error:
        problems.at(models.Source(path, reader.line_num or 1, 1), f"not readable as CSV: {error}")
        raise Unreadable(path) from None
    if not names:
        problems.at(models.Source(path, 1, 1), f"empty CSV: expected a header row with {', '.join(wanted)}")
        raise Unreadable(path)
    index: dict[str, int] = {}
    twice = [name for name in wanted if names.count(name.lower()) > 1]
    for name in twice:
        problems.at(models.Source(path, header_line, 1), f"two {name} columns in the header")
    for name in wanted:
        index[name] = names.index(name.lower()) if name.lower() in names else -1
    absent = [name for name in required if index[name] < 0]
    if absent:
        found = shown(", ".join(names), 200)
        problems.at(
            models.Source(path, header_line, 1),
            f"no {' or '.join(absent)} column in the header (found: {found})",
        )
    if absent or twice:
        raise Unreadable(path)
    header = Header(path, header_line, index, len(names))
    return header, _body(header, reader, problems)


def _body(header: Header, reader: _Reader, problems: Problems) -> Iterator[tuple[int, list[str]]]:
    start = reader.line_num + 1
    try:
        for row in reader:
            line, start = start, reader.line_num + 1
            if len(row) != header.width:
                if not row:
                    continue  # a blank line
                problems.at(
                    models.Source(header.path, line, 1),
                    f"row has {len(row)} fields, the header has {header.width}",
                )
                continue
            if not any(row):
                continue  # a row of empty cells
            yield line, row
    except csv.Error as error:
        problems.at(models.Source(header.path, start, 1), f"not readable as CSV: {error}")
