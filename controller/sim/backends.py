"""The simulators as backends, handed to `runtime.backends.open_backends` by the command wiring."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from controller import errors
from controller.exchange.client import ExchangeClient
from controller.sim.dns import DnsSimBackend
from controller.sim.exchange.store import SimRunner, SimStore


class _Simulators:
    """`runtime.backends.Rehearsal` over the Exchange and DNS simulators' state files."""

    def exchange(self, path: Path) -> ExchangeClient:
        if not path.exists():
            raise errors.InvalidInput(
                f"{path}: no simulator state here; create it with `stagectl sim init --state {path}`"
            )
        return ExchangeClient(SimRunner(path))

    def dns(self, path: Path) -> DnsSimBackend:
        return DnsSimBackend(path)

    def clock(self, path: Path) -> Callable[[], datetime]:
        return SimStore(path).now


REHEARSAL = _Simulators()
