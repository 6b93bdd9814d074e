"""Checks of a DnsZone's records beyond their types: names inside the zone, values that parse for
their record type, one SPF string, CNAMEs alone at their name, one RRset per (name, type).

Normalisation: record names become relative and lower case ("@" for the apex; an absolute name
ending in the zone with a trailing dot is accepted and made relative); host names inside MX,
CNAME and SRV values are lower-cased and A/AAAA addresses written in their canonical form, so that
they compare equal to what DNS answers. Names and host names written in Unicode become their
A-labels (IDNA 2008, `controller.desired.idn`), as DNS carries them. TXT values keep their spelling.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from controller.desired import idn, models
from controller.desired.models import RecordType
from controller.desired.shown import shown

Problem = tuple[tuple[str | int, ...], str]  # (path inside the document, message)

_LABEL = r"(\*|[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)"
_RELATIVE_NAME = re.compile(rf"^{_LABEL}(\.[a-z0-9_]([a-z0-9_-]{{0,61}}[a-z0-9_])?)*$")
_TARGET = re.compile(r"^([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)+$")
CUTOVER_TYPES = (RecordType.MX, RecordType.CNAME)
SPF_PREFIX = "v=spf1"


def record_name(name: str, zone: str) -> tuple[str | None, str | None]:
    """(relative name, None) or (None, message)."""
    try:
        lowered = idn.to_ascii(name).lower()
    except ValueError as error:
        return None, f"record name {error}"
    if lowered == "@":
        return "@", None
    if lowered.endswith("."):
        absolute = lowered[:-1]
        if absolute == zone:
            return "@", None
        if not absolute.endswith("." + zone):
            return None, f"record name {shown(name)} is outside the zone {zone}"
        lowered = absolute[: -len(zone) - 1]
    elif lowered == zone or lowered.endswith("." + zone):
        relative = lowered[: -len(zone) - 1] or "@"
        return None, (
            f"record name {shown(name)} is relative, so it would mean {lowered}.{zone}: "
            f"write {shown(relative)} or {shown(lowered + '.')}"
        )
    if len(lowered) + len(zone) > 252 or not _RELATIVE_NAME.match(lowered):
        return None, f"record name {shown(name)} is malformed: use '@' or a name relative to {zone}"
    return lowered, None


def _target(host: str) -> str:
    """A host name in a record value as lower-case A-labels; ValueError unless fully qualified with a dot."""
    lowered = idn.to_ascii(host).lower()
    if len(lowered) > 254 or not _TARGET.match(lowered):
        raise ValueError(f"{shown(host)} is not a fully qualified host name ending with '.'")
    return lowered


def _u16(text: str, what: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(f"{what} {shown(text)} is not a number from 0 to 65535")
    return int(text)


def _mx(value: str) -> str:
    parts = value.split()
    if len(parts) != 2:
        raise ValueError(f"MX value {shown(value)} is not '<preference> <host>.'")
    return f"{_u16(parts[0], 'preference')} {_target(parts[1])}"


def _srv(value: str) -> str:
    parts = value.split()
    if len(parts) != 4:
        raise ValueError(f"SRV value {shown(value)} is not '<priority> <weight> <port> <host>.'")
    numbers = [
        str(_u16(text, what)) for text, what in zip(parts, ("priority", "weight", "port"), strict=False)
    ]
    return " ".join((*numbers, _target(parts[3])))


def _ip(version: int) -> Callable[[str], str]:
    def parse(value: str) -> str:
        try:
            address = ipaddress.ip_address(value.strip())
        except ValueError:
            address = None
        if address is None or address.version != version:
            raise ValueError(f"{shown(value)} is not an IPv{version} address")
        return str(address)

    return parse


def _txt(value: str) -> str:
    if len(value.encode()) > 4000:
        raise ValueError("TXT value is longer than 4000 bytes")
    return value


_VALUE_PARSERS: dict[RecordType, Callable[[str], str]] = {
    RecordType.MX: _mx,
    RecordType.CNAME: _target,
    RecordType.TXT: _txt,
    RecordType.A: _ip(4),
    RecordType.AAAA: _ip(6),
    RecordType.SRV: _srv,
}


def check_record(spec: models.RecordSpec, index: int) -> tuple[tuple[str, ...], list[Problem]]:
    """The normalised values of one record and the problems of its values, spf and cutover."""
    here: tuple[str | int, ...] = ("spec", "records", index)
    problems: list[Problem] = []
    values: list[str] = []
    for position, value in enumerate(spec.values):
        try:
            normalised = _VALUE_PARSERS[spec.type](value)
        except ValueError as error:
            problems.append(((*here, "values", position), str(error)))
            continue
        if normalised in values:
            problems.append(((*here, "values", position), f"duplicate value {shown(value)}"))
        values.append(normalised)
    if spec.type is RecordType.CNAME and len(spec.values) > 1:
        problems.append(((*here, "values"), "a CNAME has exactly one value"))
    if spec.spf is not None:
        if spec.type is not RecordType.TXT:
            problems.append(((*here, "spf"), f"spf belongs on a TXT record, not {spec.type.value}"))
        elif not _is_spf(spec.spf):
            problems.append(((*here, "spf"), f"SPF value must start with {shown(SPF_PREFIX)}"))
    spf_values = [position for position, value in enumerate(spec.values) if _is_spf(value)]
    if len(spf_values) + (spec.spf is not None) > 1:
        where = (*here, "values", spf_values[-1]) if spf_values else (*here, "spf")
        problems.append((where, "two SPF strings for one name: a name has exactly one v=spf1 string"))
    if not spec.values and spec.spf is None:
        problems.append(((*here, "values"), f"a {spec.type.value} record needs at least one value"))
    if spec.cutover and spec.type not in CUTOVER_TYPES:
        problems.append(
            ((*here, "cutover"), f"cutover applies to MX and CNAME records, not {spec.type.value}")
        )
    return tuple(values), problems


def _is_spf(value: str) -> bool:
    return value.lower() == SPF_PREFIX or value.lower().startswith(SPF_PREFIX + " ")


def check_zone(
    zone: str, specs: list[models.RecordSpec], lines: Callable[[int], int]
) -> tuple[list[tuple[int, str, tuple[str, ...]]], list[Problem]]:
    """(index, relative name, values) for each good record of a zone, and the zone's problems.

    `lines(index)` is the line of a record, to name the other place in messages."""
    good: list[tuple[int, str, tuple[str, ...]]] = []
    problems: list[Problem] = []
    seen: dict[tuple[str, RecordType], int] = {}
    types_at: dict[str, dict[RecordType, int]] = {}
    for index, spec in enumerate(specs):
        name, message = record_name(spec.name, zone)
        if name is None:
            problems.append((("spec", "records", index, "name"), str(message)))
            continue
        values, record_problems = check_record(spec, index)
        problems += record_problems
        if (name, spec.type) in seen:
            first = lines(seen[(name, spec.type)])
            problems.append(
                (
                    ("spec", "records", index),
                    f"{spec.type.value} at {shown(name)} is already defined at line {first}: "
                    "one entry per name and type",
                )
            )
            continue
        seen[(name, spec.type)] = index
        types_at.setdefault(name, {})[spec.type] = index
        if not record_problems:
            good.append((index, name, values))
    for name, types in types_at.items():
        cname = types.get(RecordType.CNAME)
        if cname is None:
            continue
        if name == "@":
            problems.append((("spec", "records", cname), "a CNAME cannot be at the zone apex '@'"))
        others = [f"{kind.value} at line {lines(index)}" for kind, index in types.items() if index != cname]
        if others:
            problems.append(
                (
                    ("spec", "records", cname),
                    f"CNAME at {shown(name)} beside other data ({', '.join(others)})",
                )
            )
    return good, problems
