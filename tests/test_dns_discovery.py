"""Where a zone is served, on real BIND: NS records through a resolver; the SOA MNAME or a set primary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from controller.dns.base import DnsPermanentError, DnsTransientError
from controller.dns.rfc2136 import Rfc2136Backend
from controller.dns.settings import Rfc2136Settings
from controller.model.snapshot import RRset, ServerAnswer
from tests.support.bind import ZONE, BindZone, bind_zone, free_port
from tests.support.dns import MX, bare, lower_mx_ttl

LOWERED = RRset(name="@", type="MX", ttl=300, values=MX.values)
WANTED = {ZONE: [("@", "MX"), ("@", "TXT")]}
# A second name server that sorts first and never answers (TEST-NET-2): read on the resolver's port.
SILENT_NS = "@ 3600 IN NS a-ns.contoso.com.\na-ns 3600 IN A 198.51.100.53\n"


def backend(**entry: Any) -> Rfc2136Backend:
    return Rfc2136Backend(Rfc2136Settings.model_validate({"default": {"timeout": 0.5, **entry}}))


def key(bind: BindZone, tmp_path: Path) -> str:
    return f"file:{bind.key_file(tmp_path / 'k')}"


def test_servers_are_the_ns_records_through_the_resolver(tmp_path: Path) -> None:
    with bind_zone() as bind:
        client = backend(resolver=bind.primary.address, keyRef=key(bind, tmp_path))
        assert client.observe(WANTED) == client.observe(WANTED)
        result = client.observe(WANTED)
        assert result.findings == () and result.zones[ZONE] is not None and MX in result.zones[ZONE]
        client.apply(lower_mx_ttl())  # to ns1.contoso.com, 127.0.0.1 on the resolver's port
        assert bind.primary.query(ZONE, "MX").answer[0].ttl == 300
        client.messages.reset()
        result = client.observe(WANTED)
        assert result.zones[ZONE] is not None and LOWERED in result.zones[ZONE]
        # Discovery is kept for the records' TTL: this pass asked the one server for the SOA and two RRsets.
        assert client.messages.queries == 1 + 2


def test_the_mname_is_the_primary_among_discovered_servers(tmp_path: Path) -> None:
    with bind_zone(extra_records=SILENT_NS) as bind:
        port = bind.primary.port
        client = backend(resolver=bind.primary.address, keyRef=key(bind, tmp_path))
        result = client.observe(WANTED)
        # a-ns sorts first, yet the SOA MNAME ns1 is the primary: the zone is read, the other is a finding.
        assert MX in bare(result.zones[ZONE])
        assert len(result.findings) == 1  # timed out, or no route to it where the network has none
        assert result.findings[0].startswith(
            f"{ZONE}: the secondary 198.51.100.53:{port} could not be read ("
        )
        client.apply(lower_mx_ttl())
        assert bind.primary.query(ZONE, "MX").answer[0].ttl == 300


def test_the_mname_is_the_primary_even_when_configured_second(tmp_path: Path) -> None:
    with bind_zone(secondary=True, notify=False) as bind:
        assert bind.secondary is not None
        client = backend(
            servers=[bind.secondary.address, bind.primary.address],
            resolver=bind.primary.address,
            keyRef=key(bind, tmp_path),
        )
        client.apply(lower_mx_ttl())
        assert bind.primary.query(ZONE, "MX").answer[0].ttl == 300
        result = client.observe(WANTED)
        assert LOWERED in bare(result.zones[ZONE])
        assert any(f"SOA serial 2 on the primary {bind.primary.address}" in f for f in result.findings)


def test_an_explicit_primary_wins_over_the_mname(tmp_path: Path) -> None:
    with bind_zone(secondary=True, notify=False) as bind:
        assert bind.secondary is not None
        client = backend(
            resolver=bind.primary.address, primary=bind.secondary.address, keyRef=key(bind, tmp_path)
        )
        mx = next(rrset for rrset in client.observe(WANTED).zones[ZONE] or [] if rrset.key == ("@", "MX"))
        assert mx.servers[0] == ServerAnswer(
            server=bind.secondary.address, primary=True, serial=1, ttl=3600, values=MX.values
        )
        backend(resolver=bind.primary.address, keyRef=key(bind, tmp_path)).apply(lower_mx_ttl())
        result = client.observe(WANTED)
        assert result.zones == {ZONE: None}  # the MNAME's server is ahead: the set primary looks stale
        assert result.errors[ZONE].startswith(f"the primary {bind.secondary.address} looks stale")
        with pytest.raises(DnsPermanentError, match=bind.secondary.address):
            client.apply(lower_mx_ttl())  # updates go to the configured primary; a secondary refuses them


def test_a_name_server_without_an_address_is_a_finding(tmp_path: Path) -> None:
    with bind_zone(extra_records="@ 3600 IN NS ns9.example.net.\n") as bind:
        result = backend(resolver=bind.primary.address).observe(WANTED)
        assert result.zones[ZONE] is not None and MX in result.zones[ZONE]
        assert result.findings == (
            f"{ZONE}: the name server ns9.example.net. has no address through the resolver"
            f" {bind.primary.address}; it is not read",
        )


def test_failed_discovery_makes_the_zone_unknown_with_a_finding(tmp_path: Path) -> None:
    silent = f"127.0.0.1:{free_port()}"
    result = backend(resolver=silent).observe(WANTED)
    assert result.zones == {ZONE: None}
    assert len(result.findings) == 1
    assert result.findings[0].startswith(
        f"{ZONE}: its servers could not be found through the resolver {silent} ("
    )
    assert result.findings[0].endswith("); the zone is unknown")
    with bind_zone() as bind:
        with pytest.raises(DnsTransientError, match="could not be found through the resolver"):
            backend(resolver=silent, keyRef=key(bind, tmp_path)).apply(lower_mx_ttl())
        client = backend(resolver=bind.primary.address, keyRef=key(bind, tmp_path))
        result = client.observe({"fabrikam.com": [("@", "MX")]})
        assert result.zones == {"fabrikam.com": None}
        assert result.findings == (
            f"fabrikam.com: its servers could not be found through the resolver {bind.primary.address}"
            " (no NS records (REFUSED)); the zone is unknown",
        )
        with pytest.raises(DnsPermanentError, match=r"fabrikam\.com: its servers could not be found"):
            client.apply(lower_mx_ttl("fabrikam.com"))


def test_a_zone_needs_servers_or_a_resolver() -> None:
    with pytest.raises(ValidationError, match="needs `servers` or a `resolver`"):
        Rfc2136Settings.model_validate({"default": {"keyRef": "env:K"}})
    settings = Rfc2136Settings.model_validate({"default": {"servers": ["127.0.0.1:53"]}})
    assert settings.default is not None and settings.default.resolver is None


def test_an_mname_naming_none_of_the_servers_makes_the_zone_unknown(tmp_path: Path) -> None:
    """The SOA MNAME is ns1.contoso.com; both servers are configured as `localhost`: no guess."""
    with bind_zone(secondary=True) as bind:
        assert bind.secondary is not None
        configured = f"localhost:{bind.primary.port}"
        servers = [configured, f"localhost:{bind.secondary.port}"]
        client = backend(servers=servers, keyRef=key(bind, tmp_path))
        result = client.observe(WANTED)
        assert result.zones == {ZONE: None}
        why = (
            f"the SOA MNAME ns1.contoso.com. names none of its servers ({', '.join(servers)}): set"
            " `primary:` for this zone so that a secondary is never read as the truth"
        )
        assert result.errors == {ZONE: why}
        assert result.findings == (f"{ZONE}: {why}; the zone is unknown",)
        with pytest.raises(DnsPermanentError, match="set `primary:`"):
            client.apply(lower_mx_ttl())
        assert bind.primary.query(ZONE, "MX").answer[0].ttl == 3600
        named = backend(servers=servers, primary=configured, keyRef=key(bind, tmp_path))
        assert MX in bare(named.observe(WANTED).zones[ZONE])


def test_one_configured_server_is_the_primary(tmp_path: Path) -> None:
    """A single server leaves nothing to choose, whatever name it is configured by."""
    with bind_zone() as bind:
        client = backend(servers=[f"localhost:{bind.primary.port}"], keyRef=key(bind, tmp_path))
        result = client.observe(WANTED)
        assert result.findings == () and MX in (result.zones[ZONE] or [])
        client.apply(lower_mx_ttl())
        assert bind.primary.query(ZONE, "MX").answer[0].ttl == 300


def test_addresses_without_a_primary_are_never_taken_in_list_order(tmp_path: Path) -> None:
    """A lagging secondary listed first is not the truth: addresses cannot be matched to the MNAME."""
    with bind_zone(secondary=True, notify=False) as bind:
        assert bind.secondary is not None
        backend(servers=[bind.primary.address], keyRef=key(bind, tmp_path)).apply(lower_mx_ttl())
        servers = [bind.secondary.address, bind.primary.address]
        client = backend(servers=servers, keyRef=key(bind, tmp_path))
        result = client.observe(WANTED)
        assert result.zones == {ZONE: None}
        why = (
            f"its servers are given as addresses ({', '.join(servers)}), which cannot be matched to the"
            " SOA MNAME ns1.contoso.com. without a `resolver`: set `primary:` for this zone so that a"
            " secondary is never read as the truth"
        )
        assert result.errors == {ZONE: why}
        assert result.findings == (f"{ZONE}: {why}; the zone is unknown",)
        with pytest.raises(DnsPermanentError, match="set `primary:`"):
            client.apply(lower_mx_ttl())
        named = backend(servers=servers, primary=bind.primary.address, keyRef=key(bind, tmp_path))
        result = named.observe(WANTED)
        assert LOWERED in bare(result.zones[ZONE])
        assert any(f"SOA serial 2 on the primary {bind.primary.address}" in f for f in result.findings)


def test_a_primary_behind_a_secondary_looks_stale_and_the_zone_is_unknown(tmp_path: Path) -> None:
    """`primary:` names the lagging server: a server ahead of it puts the truth in doubt."""
    with bind_zone(secondary=True, notify=False) as bind:
        assert bind.secondary is not None
        backend(servers=[bind.primary.address], keyRef=key(bind, tmp_path)).apply(lower_mx_ttl())
        client = backend(
            servers=[bind.primary.address, bind.secondary.address],
            primary=bind.secondary.address,
            keyRef=key(bind, tmp_path),
        )
        result = client.observe(WANTED)
        assert result.zones == {ZONE: None}
        why = (
            f"the primary {bind.secondary.address} looks stale: it serves SOA serial 1 but"
            f" {bind.primary.address} serves 2, so the truth is in doubt; check `primary:` for this zone"
        )
        assert result.errors == {ZONE: why}
        assert result.findings == (f"{ZONE}: {why}; the zone is unknown",)
        assert not any("propagation in progress" in f for f in result.findings)


def test_every_unknown_zone_says_why(tmp_path: Path) -> None:
    silent = f"127.0.0.1:{free_port()}"
    unconfigured = Rfc2136Backend(Rfc2136Settings.model_validate({"zones": {}})).observe(WANTED)
    assert unconfigured.errors == {ZONE: "no DNS servers are configured for this zone"}
    undiscovered = backend(resolver=silent).observe(WANTED)
    assert undiscovered.errors == {
        ZONE: f"its servers could not be found through the resolver {silent} (timed out)"
    }
    unread = backend(servers=[silent]).observe(WANTED)
    assert unread.errors == {ZONE: f"the primary {silent} could not be read (timed out)"}
