"""The DNS simulator: a DnsBackend over a JSON state file that behaves like the RFC 2136 backend on BIND.

Each call is one fcntl-locked load, modify and save, so the controller, a test and `edit()` (a person
changing a record by hand, for drift tests) can share the file. Every change bumps the zone's serial.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from controller.dns.base import DnsObserved, DnsPermanentError, DnsTransientError
from controller.dns.wire import MessageCounts, describe, same_data
from controller.model.actions import DnsAction
from controller.model.snapshot import RRset

State = dict[str, Any]


def _key(name: str, rdtype: str) -> tuple[str, str]:
    return (name.lower(), rdtype.upper())


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
        """Create or replace a zone with these RRsets."""
        with self._locked(write=True) as state:
            state["zones"][zone.lower().rstrip(".")] = {
                "serial": serial,
                "reachable": True,
                "rrsets": [rrset.model_dump() for rrset in rrsets],
            }

    def edit(
        self, zone: str, name: str, rdtype: str, *, ttl: int = 3600, values: Sequence[str] | None
    ) -> None:
        """Change one RRset by hand, outside the controller (values None: delete it)."""
        with self._locked(write=True) as state:
            data = self._zone(state, zone)
            if data is None:
                raise KeyError(zone)
            self._put(data, name, rdtype, ttl, values)

    def set_reachable(self, zone: str, reachable: bool) -> None:
        """Simulate the zone's primary going down (observe: unknown; apply: transient)."""
        with self._locked(write=True) as state:
            data = self._zone(state, zone)
            if data is None:
                raise KeyError(zone)
            data["reachable"] = reachable

    def rrsets(self, zone: str) -> list[RRset] | None:
        with self._locked(write=False) as state:
            data = self._zone(state, zone)
            return None if data is None else [RRset.model_validate(item) for item in data["rrsets"]]

    def serial(self, zone: str) -> int | None:
        with self._locked(write=False) as state:
            data = self._zone(state, zone)
            return None if data is None else int(data["serial"])

    @staticmethod
    def _find(data: dict[str, Any], name: str, rdtype: str) -> RRset | None:
        for item in data["rrsets"]:
            if _key(item["name"], item["type"]) == _key(name, rdtype):
                return RRset.model_validate(item)
        return None

    @staticmethod
    def _put(data: dict[str, Any], name: str, rdtype: str, ttl: int, values: Sequence[str] | None) -> None:
        rrsets = [item for item in data["rrsets"] if _key(item["name"], item["type"]) != _key(name, rdtype)]
        if values:
            rrsets.append(RRset(name=name, type=rdtype.upper(), ttl=ttl, values=sorted(values)).model_dump())
        data["rrsets"] = rrsets
        data["serial"] = int(data["serial"]) + 1

    # -- DnsBackend ------------------------------------------------------------------------------------

    def observe(self, wanted: Mapping[str, Sequence[tuple[str, str]]]) -> DnsObserved:
        zones: dict[str, list[RRset] | None] = {}
        findings: list[str] = []
        with self._locked(write=False) as state:
            for zone, names in wanted.items():
                data = self._zone(state, zone)
                self.messages.queries += 1  # the SOA read
                if data is None or not data.get("reachable", True):
                    why = "is not served" if data is None else "could not be read (unreachable)"
                    findings.append(f"{zone}: the primary {why}; the zone is unknown")
                    zones[zone] = None
                    continue
                found: list[RRset] = []
                for name, rdtype in dict.fromkeys(_key(n, t) for n, t in names):
                    self.messages.queries += 1
                    rrset = self._find(data, name, rdtype)
                    if rrset is not None:
                        found.append(rrset)
                zones[zone] = found
        return DnsObserved(zones=zones, findings=tuple(findings))

    def apply(self, action: DnsAction) -> None:
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
            self.messages.queries += 1  # the verify read
