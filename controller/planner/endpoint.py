"""The Outlook Anywhere endpoint: create it, or set only the settings that differ. Pure."""

from __future__ import annotations

from controller.desired.models import Endpoint
from controller.model.actions import CredentialRef, ExchangeAction, ParameterValue
from controller.model.snapshot import ObservedEndpoint
from controller.planner.draft import Draft


def plan_endpoint(draft: Draft, endpoint: Endpoint, observed: list[ObservedEndpoint] | None) -> str | None:
    """Plan the endpoint; return why batches cannot be created yet, or None when they can."""
    obj = f"endpoint/{endpoint.name}"
    if observed is None:
        draft.block(obj, "unknown", "migration endpoints could not be read; nothing is planned for them")
        return "the migration endpoint could not be read"
    found = next((e for e in observed if e.Identity.lower() == endpoint.name.lower()), None)
    if found is None:
        draft.act(
            ExchangeAction("New-MigrationEndpoint", _create_parameters(endpoint), obj, "absent -> create")
        )
        return None
    if found.EndpointType and found.EndpointType != "ExchangeOutlookAnywhere":
        draft.block(
            obj,
            "transitions",
            f"an endpoint named {endpoint.name} exists with type {found.EndpointType}; "
            "a staged migration needs ExchangeOutlookAnywhere",
        )
        return f"endpoint {endpoint.name} is of type {found.EndpointType}"
    draft.correct_settings(
        "Set-MigrationEndpoint", identity=endpoint.name, obj=obj, changes=_differences(endpoint, found)
    )
    return None


def _create_parameters(endpoint: Endpoint) -> tuple[tuple[str, ParameterValue], ...]:
    parameters: list[tuple[str, ParameterValue]] = [
        ("ExchangeOutlookAnywhere", True),
        ("Name", endpoint.name),
        ("Credentials", CredentialRef(endpoint.credentials_ref)),
        ("EmailAddress", endpoint.email_address),
    ]
    if endpoint.autodiscover:
        parameters.append(("Autodiscover", True))
    else:
        parameters += [
            ("ExchangeServer", endpoint.exchange_server or ""),
            ("RpcProxyServer", endpoint.rpc_proxy_server or ""),
        ]
    parameters += [
        ("Authentication", endpoint.authentication.value),
        ("MaxConcurrentMigrations", endpoint.max_concurrent_migrations),
    ]
    return tuple(parameters)


def _differences(endpoint: Endpoint, found: ObservedEndpoint) -> list[tuple[str, ParameterValue]]:
    """Only properties Exchange reported are compared: an unreported one is unknown, not different."""
    changes: list[tuple[str, ParameterValue]] = []
    if not endpoint.autodiscover:
        for name, want, have in (
            ("ExchangeServer", endpoint.exchange_server, found.ExchangeServer),
            ("RpcProxyServer", endpoint.rpc_proxy_server, found.RpcProxyServer),
        ):
            if have is not None and want is not None and want.lower().rstrip(".") != have.lower().rstrip("."):
                changes.append((name, want))
    if (
        found.Authentication is not None
        and found.Authentication.lower() != endpoint.authentication.value.lower()
    ):
        changes.append(("Authentication", endpoint.authentication.value))
    if (
        found.MaxConcurrentMigrations is not None
        and found.MaxConcurrentMigrations != endpoint.max_concurrent_migrations
    ):
        changes.append(("MaxConcurrentMigrations", endpoint.max_concurrent_migrations))
    return changes
