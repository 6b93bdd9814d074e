"""The RFC 2136 backend's settings: per zone, where it is served and which TSIG key signs its updates."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controller.desired import models
from controller.dns.tsig import is_key_ref
from controller.dns.wire import Server


class Rfc2136ZoneSettings(BaseModel):
    """Where a zone is served and how to sign updates to it."""

    # hide_input_in_errors: a secret pasted where a reference belongs must not come back in the error.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    servers: list[str] | None = Field(
        default=None,
        min_length=1,
        description="host:port of each authoritative server (in any order; with several, `primary` or the"
        " SOA MNAME by host name says which is the primary); optional with `resolver`",
    )
    resolver: str | None = Field(
        default=None,
        description="host:port through which the zone's NS records (the servers, asked on this port)"
        " and its SOA MNAME (the primary) are looked up",
    )
    primary: str | None = Field(
        default=None, description="host:port of the primary: updates go there and its answers are the truth"
    )
    keyRef: str | None = Field(
        default=None, description="file:/path/to/bind.key[#keyname] or env:NAME (name:algorithm:base64secret)"
    )
    timeout: float = Field(default=3.0, gt=0, le=60, description="seconds per DNS message")

    @field_validator("servers")
    @classmethod
    def _servers(cls, value: list[str] | None) -> list[str] | None:
        for text in value or ():
            Server.parse(text)
        return value

    @field_validator("resolver", "primary")
    @classmethod
    def _server(cls, value: str | None) -> str | None:
        if value is not None:
            Server.parse(value)
        return value

    @model_validator(mode="after")
    def _somewhere(self) -> Rfc2136ZoneSettings:
        if self.servers is None and self.resolver is None:
            raise ValueError(
                "a zone needs `servers` or a `resolver` through which its NS records give the servers"
            )
        return self

    @field_validator("keyRef")
    @classmethod
    def _key_ref(cls, value: str | None) -> str | None:
        if value is not None and not is_key_ref(value):
            raise ValueError(
                "keyRef must be a reference (file:/path/to/bind.key or env:NAME), never a secret"
            )
        return value


class Rfc2136Settings(BaseModel):
    """Per zone settings, or `default` for every zone not listed."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    default: Rfc2136ZoneSettings | None = None
    zones: dict[str, Rfc2136ZoneSettings] = {}

    @field_validator("zones")
    @classmethod
    def _zone_names(cls, value: dict[str, Rfc2136ZoneSettings]) -> dict[str, Rfc2136ZoneSettings]:
        """Zones are named as the desired state names them once loaded: A-labels (IDNA 2008). One zone
        written twice (in Unicode and in A-labels, or in two cases) is refused, never one entry dropped."""
        zones: dict[str, Rfc2136ZoneSettings] = {}
        for name, settings in value.items():
            key = models.hostname(name.rstrip(".")).lower()
            if key in zones:
                raise ValueError(f"zone {name!r} is listed twice (as {key})")
            zones[key] = settings
        return zones

    def for_zone(self, zone: str) -> Rfc2136ZoneSettings | None:
        key = zone.lower().rstrip(".")
        for name, settings in self.zones.items():
            if name.lower().rstrip(".") == key:
                return settings
        return self.default
