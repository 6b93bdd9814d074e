"""The simulator's migration endpoint cmdlets: New-, Set- and Get-MigrationEndpoint (exchange-facts §4)."""

from __future__ import annotations

from controller.secrets import Credential
from controller.sim.exchange import engine
from controller.sim.exchange import state as s
from controller.sim.exchange.params import Bound, fail, not_found

# The settings New- and Set-MigrationEndpoint both take.
SETTINGS = (
    "Credentials",
    "EmailAddress",
    "ExchangeServer",
    "RpcProxyServer",
    "Authentication",
    "MaxConcurrentMigrations",
)


def _endpoint_output(endpoint: s.Endpoint) -> dict[str, object]:
    return {
        "Identity": endpoint.name,
        "EndpointType": "ExchangeOutlookAnywhere",
        "ExchangeServer": endpoint.exchange_server,
        "RpcProxyServer": endpoint.rpc_proxy_server,
        "UseAutoDiscover": endpoint.autodiscover,
        "Authentication": endpoint.authentication,
        "EmailAddress": endpoint.email_address,
        "MaxConcurrentMigrations": endpoint.max_concurrent,
        "Username": endpoint.username,
    }


def _endpoint_settings(b: Bound, endpoint: s.Endpoint) -> None:
    """Apply and check the settings New- and Set-MigrationEndpoint share (exchange-facts §4)."""
    credentials = b.values.get("Credentials")
    if credentials is not None:
        if not isinstance(credentials, Credential) or not credentials.username:
            raise fail(b.cmdlet, "ParameterBindingException", "Cannot bind parameter 'Credentials'.")
        endpoint.username = credentials.username
    for name, field in (
        ("ExchangeServer", "exchange_server"),
        ("RpcProxyServer", "rpc_proxy_server"),
        ("EmailAddress", "email_address"),
    ):
        if b.has(name):
            setattr(endpoint, field, b.text(name))
    authentication = b.text("Authentication")
    if authentication is not None:
        if authentication.lower() not in ("basic", "ntlm"):
            raise fail(
                b.cmdlet, "ParameterBindingValidationException", "Authentication must be Basic or NTLM."
            )
        endpoint.authentication = "Basic" if authentication.lower() == "basic" else "NTLM"
    limit = b.integer("MaxConcurrentMigrations")
    if limit is not None:
        if not 1 <= limit <= s.MAX_CONCURRENT_LIMIT:
            raise fail(
                b.cmdlet,
                "ParameterBindingValidationException",
                f"MaxConcurrentMigrations must be between 1 and {s.MAX_CONCURRENT_LIMIT}.",
            )
        endpoint.max_concurrent = limit
    # MigrationJobConnectionSettingsIncomplete (exchange-facts §9.2): manual settings need both servers.
    missing = [
        n
        for n, v in (
            ("ExchangeServer", endpoint.exchange_server),
            ("RpcProxyServer", endpoint.rpc_proxy_server),
        )
        if not v
    ]
    if endpoint.autodiscover:
        missing = [] if endpoint.email_address else ["EmailAddress"]
    if missing:
        raise fail(
            b.cmdlet,
            "MigrationPermanentException",
            f'MigrationJobConnectionSettingsIncomplete("{missing[0]}"): the endpoint needs {missing[0]}.',
        )


def new_endpoint(state: s.SimState, b: Bound) -> list[dict[str, object]]:
    if not b.switch("ExchangeOutlookAnywhere"):
        raise fail(
            b.cmdlet, "ParameterBindingException", "The simulator serves ExchangeOutlookAnywhere only."
        )
    name = b.text("Name", required=True) or ""
    if b.values.get("Credentials") is None:
        raise fail(b.cmdlet, "ParameterBindingException", "-Credentials is required.")
    if s.key(name) in state.endpoints:
        raise fail(
            b.cmdlet, "MigrationPermanentException", f'A migration endpoint named "{name}" already exists.'
        )
    endpoint = s.Endpoint(name=name, autodiscover=b.switch("Autodiscover"))
    _endpoint_settings(b, endpoint)
    state.endpoints[s.key(name)] = endpoint
    return [_endpoint_output(endpoint)]


def set_endpoint(state: s.SimState, b: Bound) -> list[dict[str, object]]:
    identity = b.text("Identity", required=True) or ""
    current = state.endpoints.get(s.key(identity))
    if current is None:
        raise not_found(b.cmdlet, identity)
    endpoint = current.model_copy(deep=True)
    _endpoint_settings(b, endpoint)  # on a copy: a refused change leaves the endpoint as it was
    state.endpoints[s.key(identity)] = endpoint
    engine.advance_to(state, state.now)  # a larger MaxConcurrentMigrations frees slots at once
    return []


def get_endpoint(state: s.SimState, b: Bound) -> list[dict[str, object]]:
    identity = b.text("Identity")
    if identity is None:
        return [_endpoint_output(endpoint) for endpoint in state.endpoints.values()]
    endpoint = state.endpoints.get(s.key(identity))
    if endpoint is None:
        raise not_found(b.cmdlet, identity)
    return [_endpoint_output(endpoint)]
