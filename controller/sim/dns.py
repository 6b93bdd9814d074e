"""The DNS simulator: a DnsBackend over a JSON state file that behaves like the RFC 2136 backend on BIND.

Each call is one fcntl-locked load, modify and save, so the controller, a test and `edit()` (a person
changing a record by hand, for drift tests) can share the file. Every change bumps the zone's serial.

The state file (seeded by `seed_zone` or `stagectl sim dns-seed`):

    {"zones": {"contoso.com": {"serial": 1, "reachable": true, "rrsets": [
        {"name": "@", "type": "MX", "ttl": 3600, "values": ["10 mail.contoso.com."]},
        {"name": "@", "type": "TXT", "ttl": 3600, "values": ["\"v=spf1 mx \" \"-all\"", "\"MS=ms1\""]}]}}}

A TXT value is kept as the wire keeps it: character-strings, written quoted as in a zone file, so one
SPF string may be split in two (`"v=spf1 mx " "-all"`). A TXT value seeded without a leading quote is
one value, stored as quoted character-strings of at most 255 bytes. Observed, a TXT value is its strings
joined, unquoted (`v=spf1 mx -all`), and values compare joined, as the RFC 2136 backend does.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dns.exception
import dns.rdata
import dns.rdataclass

from controller import faults, fence
from controller.dns.base import DnsObserved, DnsPermanentError, DnsTransientError
from controller.dns.wildcards import questions_without_wildcards
from controller.dns.wire import MessageCounts, describe, same_data, to_rdata, to_text
from controller.model.actions import DnsAction
from controller.model.snapshot import RRset

State = dict[str, Any]


def _key(name: str, rdtype: str) -> tuple[str, str]:
    return (name.lower(), rdtype.upper())


def _is_txt(rdtype: str) -> bool:
    return rdtype.upper() in ("TXT", "SPF")


def character_strings(rdtype: str, value: str) -> str:
    """A TXT value as the state file keeps it: quoted character-strings; other types as given.

    Raises ValueError naming the value when quoted text does not parse as a zone file's TXT data."""
    if not _is_txt(rdtype):
        return value
    if not value.startswith('"'):
        return to_rdata(rdtype, value).to_text()
    try:
        return dns.rdata.from_text(dns.rdataclass.IN, rdtype.upper(), value).to_text()
    except dns.exception.DNSException as error:
        raise ValueError(f"{value!r} is not TXT data as in a zone file ({error})") from None


def joined(rdtype: str, value: str) -> str:
    """A value as observed: a TXT value's character-strings joined, unquoted."""
    if not _is_txt(rdtype) or not value.startswith('"'):
        return value
    return to_text(dns.rdata.from_text(dns.rdataclass.IN, rdtype.upper(), value))


class DnsSimBackend:
    """Zones in `path`: {"zones": {zone: {"serial": n, "reachable": bool, "rrsets": [RRset…]}}}."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.messages = MessageCounts()

    # -- the state file --------------------------------------------------------------------------------

    @contextmanager
    def _locked(self, *, write: bool) -> Iterator[State]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state: State = json.loads(self.path.read_text()) if self.path.exists() else {"zones": {}}
                yield state
                if write:
                    # Write beside and rename, so a reader without the lock never sees half a file.
                    temporary = self.path.with_name(self.path.name + ".tmp")
                    temporary.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
                    os.replace(temporary, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _zone(state: State, zone: str) -> dict[str, Any] | None:
        zones: dict[str, dict[str, Any]] = state["zones"]
        return zones.get(zone.lower().rstrip("."))

    # -- helpers for tests and the demo ----------------------------------------------------------------

    def seed_zone(self, zone: str, rrsets: Sequence[RRset], *, serial: int = 1) -> None:
        """Create or replace a zone with these RRsets (TXT values as in the module docstring)."""
        stored = [
            {
                **rrset.model_dump(exclude={"servers"}),
                "values": [character_strings(rrset.type, v) for v in rrset.values],
            }
            for rrset in rrsets
        ]
        with self._locked(write=True) as state:
            state["zones"][zone.lower().rstrip(".")] = {"serial": serial, "reachable": True, "rrsets": stored}

    def edit(
        self, zone: str, name: str, rdtype: str, *, ttl: int = 3600, values: Sequence[str] | None
    ) -> None:
        """Change one RRset by hand, outside the controller (values None: delete it)."""
        with self._locked(write=True) as state:
            data = self._zone(state, zone)
            if data is None:
                raise KeyError(zone)
            self._put(data, name, rdtype, ttl, values)

    def updates(self, zone: str) -> list[str]:
        """The objects of the UPDATEs this zone applied, in order (a person's `edit` is not one)."""
        with self._locked(write=False) as state:
            data = self._zone(state, zone)
            return list(data.get("updates", [])) if data is not None else []

    def set_reachable(self, zone: str, reachable: bool) -> None:
        """Simulate the zone's primary going down (observe: unknown; apply: transient)."""
        with self._locked(write=True) as state:
            data = self._zone(state, zone)
            if data is None:
                raise KeyError(zone)
            data["reachable"] = reachable

    def rrsets(self, zone: str) -> list[RRset] | None:
        """The zone's RRsets as observed (TXT values joined)."""
        with self._locked(write=False) as state:
            data = self._zone(state, zone)
            return None if data is None else [self._observed(item) for item in data["rrsets"]]

    def serial(self, zone: str) -> int | None:
        with self._locked(write=False) as state:
            data = self._zone(state, zone)
            return None if data is None else int(data["serial"])

    @staticmethod
    def _observed(item: dict[str, Any]) -> RRset:
        values = sorted(joined(item["type"], value) for value in item["values"])
        return RRset(name=item["name"], type=item["type"], ttl=item["ttl"], values=values)

    @staticmethod
    def _held(data: dict[str, Any], name: str, rdtype: str) -> dict[str, Any] | None:
        for item in data["rrsets"]:
            if _key(item["name"], item["type"]) == _key(name, rdtype):
                held: dict[str, Any] = item
                return held
        return None

    def _find(self, data: dict[str, Any], name: str, rdtype: str) -> RRset | None:
        held = self._held(data, name, rdtype)
        return None if held is None else self._observed(held)

    def _put(
        self, data: dict[str, Any], name: str, rdtype: str, ttl: int, values: Sequence[str] | None
    ) -> None:
        """Make the RRset hold `values` (joined); a TXT value kept keeps its character-strings as held."""
        held = self._held(data, name, rdtype)
        kept = {joined(rdtype, value): value for value in (held or {}).get("values", [])}
        stored = sorted(kept.get(value) or character_strings(rdtype, value) for value in values or ())
        rrsets = [item for item in data["rrsets"] if _key(item["name"], item["type"]) != _key(name, rdtype)]
        if stored:
            rrsets.append({"name": name, "type": rdtype.upper(), "ttl": ttl, "values": stored})
        data["rrsets"] = rrsets
        data["serial"] = int(data["serial"]) + 1

    # -- DnsBackend ------------------------------------------------------------------------------------

    def observe(self, wanted: Mapping[str, Sequence[tuple[str, str]]]) -> DnsObserved:
        zones: dict[str, list[RRset] | None] = {}
        findings: list[str] = []
        errors: dict[str, str] = {}
        with self._locked(write=False) as state:
            for zone, names in wanted.items():
                data = self._zone(state, zone)
                self.messages.queries += 1  # the SOA read
                if data is None or not data.get("reachable", True):
                    why = (
                        "the zone is not served there"
                        if data is None
                        else "the primary could not be read (unreachable)"
                    )
                    findings.append(f"{zone}: {why}; the zone is unknown")
                    errors[zone] = why
                    zones[zone] = None
                    continue
                found: list[RRset] = []
                for name, rdtype in dict.fromkeys(_key(n, t) for n, t in names):
                    self.messages.queries += 1
                    rrset = self._find(data, name, rdtype)
                    if rrset is not None:
                        found.append(rrset)
                # The RFC 2136 backend's questions for wildcards; the simulator holds none.
                self.messages.queries += questions_without_wildcards({rrset.name for rrset in found})
                zones[zone] = found
        return DnsObserved(zones=zones, findings=tuple(findings), errors=errors)

    def apply(self, action: DnsAction) -> None:
        fence.check()  # as the RFC 2136 backend does before its UPDATE
        with self._locked(write=True) as state:
            data = self._zone(state, action.zone)
            if data is None:
                raise DnsPermanentError(f"{action.object}: the zone {action.zone} is not served there")
            if not data.get("reachable", True):
                raise DnsTransientError(
                    f"{action.object}: the primary of {action.zone} did not answer in time"
                )
            self.messages.updates += 1
            current = self._find(data, action.name, action.type)
            if action.previous_values is None:
                changed = current is not None
            else:
                changed = current is None or not same_data(
                    action.type, current.values, action.previous_values
                )
            if changed:
                raise DnsTransientError(
                    f"{action.object}: the RRset changed meanwhile; observe again (now {describe(current)})"
                )
            # As BIND does: data beside a CNAME is not added (the RFC 2136 backend's verify reports it).
            others = {
                item["type"]
                for item in data["rrsets"]
                if item["name"].lower() == action.name.lower() and item["type"] != action.type.upper()
            }
            if action.values and (("CNAME" in others) or (action.type.upper() == "CNAME" and others)):
                self.messages.queries += 1  # the verify read
                raise DnsPermanentError(
                    f"{action.object}: the primary accepted the update but serves {describe(current)}"
                    f" instead of ttl {action.ttl} [{', '.join(action.values)}]"
                    " (is there other data beside a CNAME at that name?)"
                )
            self._put(data, action.name, action.type, action.ttl, action.values)
            # The updates applied, kept in the state file: the reliability tests count each effect.
            data.setdefault("updates", []).append(action.object)
            self.messages.queries += 1  # the verify read
        faults.point("during")  # applied and saved; the controller has not taken the answer yet
