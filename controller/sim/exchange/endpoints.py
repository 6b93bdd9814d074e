"""The simulator's migration endpoint cmdlets: New-, Set- and Get-MigrationEndpoint and
Test-MigrationServerAvailability (exchange-facts §4, §9.0, §9.2)."""

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


# Test-MigrationServerAvailability's parameters for an Outlook Anywhere source (exchange-facts §4): the
# TestEndpoint set (-Endpoint: the settings stored in an endpoint, the cmdlet reference's Example 4), and
# the ExchangeOutlookAnywhere sets with the settings themselves.
TEST_PARAMETERS = (
    "Endpoint",
    "ExchangeOutlookAnywhere",
    "Autodiscover",
    "ExchangeServer",
    "RPCProxyServer",
    "Credentials",
    "Authentication",
    "EmailAddress",
    "MailboxPermission",
    "TestMailbox",
)
# The documented wrapper (exchange-facts §9.2, [S28][S11b]) and the NSPI error its `--->` chain names (§9.2,
# [S3]): what a failed test says when `stagectl sim endpoint-check --fail` gives no detail of its own.
CONNECTION_FAILED = "The connection to the server '{server}' could not be completed."
DEFAULT_FAILURE = (
    "Microsoft.Exchange.Data.Storage.Management.MigrationTransientException: We weren't able to connect to "
    "the remote server. Please verify that the migration endpoint settings are correct and your certificate "
    "is valid, and then try again. Consider using the Exchange Remote Connectivity Analyzer to diagnose the "
    "connectivity issues. ---> Microsoft.Exchange.Rpc.ServerUnavailableException: Error 0x6ba (The RPC "
    "server is unavailable) from cli_NspiBind"
)


def test_availability(state: s.SimState, b: Bound) -> list[dict[str, object]]:
    """exchange-facts §9.0: Test-MigrationServerAvailability does not throw on a failed connection; it
    returns an object with Result (Success or Failed), Message, ConnectionSettings, SupportsCutover,
    ErrorDetail (the full `--->` chain) and IsValid. A missing -Endpoint is the documented not-found error
    (§9.2: "The migration endpoint '<name>' couldn't be found. …")."""
    name = b.text("Endpoint")
    if name is not None:
        endpoint = state.endpoints.get(s.key(name))
        if endpoint is None:
            raise fail(
                b.cmdlet,
                "ManagementObjectNotFoundException",
                f"The migration endpoint '{name}' couldn't be found. Reason: The migration endpoint "
                f"'{name}' couldn't be found.",
            )
        server = endpoint.rpc_proxy_server or endpoint.exchange_server or endpoint.email_address or name
        settings: dict[str, object] = {
            "ExchangeServer": endpoint.exchange_server,
            "RpcProxyServer": endpoint.rpc_proxy_server,
            "Authentication": endpoint.authentication,
        }
    else:
        if not b.switch("ExchangeOutlookAnywhere"):
            raise fail(
                b.cmdlet,
                "ParameterBindingException",
                "The simulator tests -Endpoint or -ExchangeOutlookAnywhere sources only.",
            )
        if b.values.get("Credentials") is None:
            raise fail(b.cmdlet, "ParameterBindingException", "-Credentials is required.")
        server = b.text("RPCProxyServer") or b.text("ExchangeServer") or b.text("EmailAddress") or ""
        settings = {
            "ExchangeServer": b.text("ExchangeServer"),
            "RpcProxyServer": b.text("RPCProxyServer"),
            "Authentication": b.text("Authentication") or "Basic",
        }
    failure = state.endpoint_check_failure
    if failure is None:
        return [
            {
                "Result": "Success",
                "Message": "",
                "ConnectionSettings": settings,
                "SupportsCutover": False,
                "ErrorDetail": "",
                "IsValid": True,
            }
        ]
    return [
        {
            "Result": "Failed",
            "Message": CONNECTION_FAILED.format(server=server),
            "ConnectionSettings": settings,
            "SupportsCutover": False,
            "ErrorDetail": failure or DEFAULT_FAILURE,
            "IsValid": False,
        }
    ]
