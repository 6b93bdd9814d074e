"""The seam to DNS: read the managed RRsets of each zone, and apply one RRset change."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from controller.model.actions import DnsAction
from controller.model.snapshot import RRset


class DnsError(Exception):
    """Base of every DNS failure."""


class DnsTransientError(DnsError):
    """Timeouts, refused connections, a prerequisite that no longer holds: observe again, then retry."""


class DnsIndeterminateError(DnsTransientError):
    """The UPDATE was sent and its response lost (a timeout, the connection cut): the primary may have
    applied it. Never re-sent blindly: the next observation decides."""


class DnsPermanentError(DnsError):
    """TSIG rejected, update refused, zone not served there: needs a person."""


@dataclass(frozen=True, slots=True)
class DnsObserved:
    """Per zone the managed RRsets found (absent ones left out), or None when the zone could not be read.

    `findings` are facts for the operator that do not change the plan, such as two authoritative
    servers that disagree while a change propagates.
    """

    zones: Mapping[str, list[RRset] | None]
    findings: tuple[str, ...] = ()
    errors: Mapping[str, str] = field(default_factory=dict)  # zone -> why it could not be read


class DnsBackend(Protocol):
    def observe(self, wanted: Mapping[str, Sequence[tuple[str, str]]]) -> DnsObserved:
        """Read, per zone, the RRsets named by (relative name, TYPE)."""
        ...

    def apply(self, action: DnsAction) -> None:
        """Make the RRset hold `action.values` at `action.ttl`; raise a DnsError when it cannot."""
        ...
