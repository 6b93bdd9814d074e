"""The PSRP gateway in-process for tests: a throwaway CA and server cert, a fake runner, client settings."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from controller.exchange import errors
from controller.exchange.psrp import PsrpSettings
from controller.exchange.runner import CmdletRunner, project
from controller.sim.gateway.server import PsrpGateway, server_ssl_context
from controller.sim.pki import Pki, make_pki  # noqa: F401 - the tests' CA is the demo's

USER = "gateway-user"
PASSWORD = "correct horse battery staple"


class FakeRunner:
    """A scripted CmdletRunner: canned rows per cmdlet, errors to raise, warnings to write."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, object]]] = {}
        self.raises: dict[str, errors.ExchangeError] = {}
        self.warnings: list[str] = []
        self.warn_on: dict[str, str] = {}
        self.calls: list[tuple[str, dict[str, object]]] = []
        self.selected: list[tuple[str, ...]] = []  # each call's Select-Object properties

    def run(
        self, cmdlet: str, parameters: Mapping[str, object], select: Sequence[str] = ()
    ) -> list[dict[str, object]]:
        self.calls.append((cmdlet, dict(parameters)))
        self.selected.append(tuple(select))
        if cmdlet in self.warn_on:
            self.warnings.append(self.warn_on[cmdlet])
        if cmdlet in self.raises:
            raise self.raises[cmdlet]
        return project([dict(row) for row in self.rows.get(cmdlet, [])], select)

    def close(self) -> None:
        pass


# The endpoint of the example migration as Get-MigrationEndpoint returns it.
ENDPOINT_ROW: dict[str, object] = {
    "Identity": "StagedEndpoint",
    "EndpointType": "ExchangeOutlookAnywhere",
    "ExchangeServer": "mail.contoso.com",
    "RpcProxyServer": "mail.contoso.com",
    "UseAutoDiscover": False,
    "Authentication": "Basic",
    "EmailAddress": "migration.admin@contoso.com",
    "MaxConcurrentMigrations": 20,
}


def psrp_section(gateway: PsrpGateway, **overrides: object) -> dict[str, object]:
    """The `exchange.psrp` settings for a gateway started by `running_gateway` (Basic auth, no bootstrap)."""
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": gateway.port,
        "ssl": gateway.url.startswith("https"),
        "auth": "basic",
        "username": USER,
        "passwordRef": "env:STAGECTL_TEST_GATEWAY_PASSWORD",
        "bootstrap": "none",
        "operationTimeout": 5,
        "readTimeout": 10,
        "connectionTimeout": 5,
    }
    values.update(overrides)
    return values


def settings_for(gateway: PsrpGateway, **overrides: object) -> PsrpSettings:
    """Client settings for a gateway started by `running_gateway`."""
    return PsrpSettings.model_validate(psrp_section(gateway, **overrides))


@contextmanager
def running_gateway(
    runner: CmdletRunner, *, pki: Pki | None = None, **options: object
) -> Iterator[PsrpGateway]:
    """The gateway on 127.0.0.1 and a free port, in a thread, stopped on exit."""
    context = server_ssl_context(str(pki.cert), str(pki.key)) if pki is not None else None
    gateway = PsrpGateway(runner, username=USER, password=PASSWORD, ssl_context=context, **options)  # type: ignore[arg-type]
    with gateway:
        yield gateway


def controller_psrp(
    gateway: PsrpGateway, *, password_env: str = "STAGECTL_TEST_GATEWAY_PASSWORD"
) -> dict[str, object]:
    """A controller configuration's `exchange.psrp` for a gateway started by `running_gateway` (plain
    HTTP on loopback, Basic auth, no bootstrap); the password comes from `password_env`."""
    return {
        "host": "127.0.0.1",
        "port": gateway.port,
        "ssl": False,
        "auth": "basic",
        "username": USER,
        "passwordRef": f"env:{password_env}",
        "bootstrap": "none",
    }
