"""Open the Exchange and DNS backends and the clock named on the command line or in the configuration.

`--exchange sim:FILE` / `--exchange psrp://HOST:PORT` and `--dns sim:FILE`; anything richer (auth,
TSIG keys, CA bundles) comes from the configuration file. Imports are lazy so that `stagectl validate`
never loads pypsrp or dnspython.

The simulators are not imported here: production code never imports the rehearsal tools. The command
wiring passes them in as a `Rehearsal` (`controller.sim.backends.REHEARSAL`); without one, a `sim`
backend is refused with a sentence that says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel

from controller import errors
from controller.dns.base import DnsBackend
from controller.runtime.config import ControllerConfig

if TYPE_CHECKING:  # imported where a backend is opened: `stagectl validate` never loads them
    from controller.exchange.client import ExchangeClient
    from controller.exchange.runner import CmdletRunner

SettingsT = TypeVar("SettingsT", bound="BaseModel")


@dataclass(frozen=True, slots=True)
class Backends:
    exchange: ExchangeClient
    dns: DnsBackend
    clock: Callable[[], datetime]
    exchange_sim: Path | None = None  # the simulator's state file, when Exchange is simulated

    def close(self) -> None:
        self.exchange.close()


class Rehearsal(Protocol):
    """The simulators, opened from their state files (implemented by `controller.sim.backends`)."""

    def exchange(self, path: Path) -> ExchangeClient:
        """An ExchangeClient over the Exchange Online simulator's state file."""
        ...

    def dns(self, path: Path) -> DnsBackend:
        """The DNS simulator over its state file."""
        ...

    def clock(self, path: Path) -> Callable[[], datetime]:
        """The Exchange simulator's virtual time: `make demo` runs weeks of migration in a minute."""
        ...


def system_clock() -> datetime:
    return datetime.now(UTC)


def _rehearsal(rehearsal: Rehearsal | None, what: str) -> Rehearsal:
    if rehearsal is None:
        raise errors.InvalidInput(f"{what}: the simulators are not available to this command")
    return rehearsal


def open_exchange(
    spec: str | None, config: ControllerConfig | None, *, rehearsal: Rehearsal | None = None
) -> tuple[ExchangeClient, Path | None]:
    from controller.exchange.client import ExchangeClient

    if spec is not None and spec.startswith("sim:"):
        path = Path(spec.removeprefix("sim:"))
        return _rehearsal(rehearsal, f"--exchange {spec}").exchange(path), path
    if spec is not None and spec.startswith("psrp://"):
        parts = urlsplit(spec)
        overrides = {"host": parts.hostname, **({"port": parts.port} if parts.port else {})}
        settings = _with_paths(config, config.exchange.psrp or {}) if config is not None else {}
        return ExchangeClient(_psrp_runner({**settings, **overrides})), None
    if spec is not None:
        raise errors.InvalidInput(f"--exchange {spec}: expected sim:FILE or psrp://HOST:PORT")
    if config is None:
        raise errors.InvalidInput(
            "name the Exchange backend: --exchange sim:FILE | psrp://HOST:PORT, or --config FILE"
        )
    if config.exchange.backend == "sim":
        if not config.exchange.state:
            raise errors.InvalidInput(
                "exchange.state: the simulator's state file is required for backend sim"
            )
        path = config.path(config.exchange.state)
        return _rehearsal(rehearsal, "exchange.backend: sim").exchange(path), path
    return ExchangeClient(_psrp_runner(_with_paths(config, config.exchange.psrp or {}))), None


_PATH_SETTINGS = (
    "caBundle",
    "ca_bundle",
    "certificatePem",
    "certificate_pem",
    "certificateKeyPem",
    "certificate_key_pem",
)


def _with_paths(config: ControllerConfig, settings: dict[str, Any]) -> dict[str, Any]:
    """File settings are relative to the configuration file, like every path in it."""
    return {
        key: str(config.path(value)) if key in _PATH_SETTINGS and isinstance(value, str) else value
        for key, value in settings.items()
    }


def _psrp_runner(settings: dict[str, Any]) -> CmdletRunner:
    from controller.exchange.psrp import PsrpRunner, PsrpSettings

    return PsrpRunner(_settings(PsrpSettings, settings, where="exchange.psrp"))


def _settings(model: type[SettingsT], data: dict[str, Any], *, where: str) -> SettingsT:
    """`load_config` has checked the file's sections with their lines; this catches `psrp://` overrides."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = [
            f"{where}.{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
        ]
        raise errors.InvalidInput(problems[0], problems) from None


def open_dns(
    spec: str | None, config: ControllerConfig | None, *, rehearsal: Rehearsal | None = None
) -> DnsBackend:
    if spec is not None and spec.startswith("sim:"):
        return _rehearsal(rehearsal, f"--dns {spec}").dns(Path(spec.removeprefix("sim:")))
    if spec is not None:
        raise errors.InvalidInput(f"--dns {spec}: expected sim:FILE (RFC 2136 servers come from --config)")
    if config is None:
        raise errors.InvalidInput("name the DNS backend: --dns sim:FILE, or --config FILE")
    if config.dns.backend == "sim":
        if not config.dns.state:
            raise errors.InvalidInput("dns.state: the simulator's state file is required for backend sim")
        return _rehearsal(rehearsal, "dns.backend: sim").dns(config.path(config.dns.state))
    from controller.dns.rfc2136 import Rfc2136Backend
    from controller.dns.settings import Rfc2136Settings

    return Rfc2136Backend(_settings(Rfc2136Settings, config.dns.rfc2136 or {}, where="dns.rfc2136"))


def open_backends(
    *,
    exchange: str | None,
    dns: str | None,
    config: ControllerConfig | None,
    now: datetime | None = None,
    rehearsal: Rehearsal | None = None,
) -> Backends:
    client, sim_path = open_exchange(exchange, config, rehearsal=rehearsal)
    dns_backend = open_dns(dns, config, rehearsal=rehearsal)
    if now is not None:
        clock: Callable[[], datetime] = lambda: now  # noqa: E731 - a fixed --now
    elif config is not None and config.clock == "sim":
        if not config.exchange.state:
            raise errors.InvalidInput("clock: sim needs exchange.state, the simulator's state file")
        clock = _rehearsal(rehearsal, "clock: sim").clock(config.path(config.exchange.state))
    elif sim_path is not None and config is None:
        clock = _rehearsal(rehearsal, "--exchange sim:").clock(sim_path)
    else:
        clock = system_clock
    return Backends(exchange=client, dns=dns_backend, clock=clock, exchange_sim=sim_path)
