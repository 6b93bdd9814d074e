"""The DnsBackend contract, run against real BIND (RFC 2136 backend) and against the DNS simulator."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import dns.query
import dns.tsig
import dns.update
import pytest

from controller.dns.base import DnsBackend, DnsPermanentError, DnsTransientError
from controller.dns.rfc2136 import Rfc2136Backend
from controller.dns.settings import Rfc2136Settings
from controller.dns.wire import to_rdatas
from controller.model.snapshot import RRset
from controller.sim.dns import DnsSimBackend
from tests.support.bind import ZONE, BindZone, bind_zone
from tests.support.dns import rrset_action as action

WANTED = {ZONE: [("@", "MX"), ("@", "TXT"), ("autodiscover", "CNAME"), ("mail", "A"), ("www", "A")]}
SEED = [
    RRset(name="@", type="NS", ttl=3600, values=["ns1.contoso.com."]),
    RRset(name="ns1", type="A", ttl=3600, values=["127.0.0.1"]),
    RRset(name="@", type="MX", ttl=3600, values=["10 mail.contoso.com."]),
    RRset(name="@", type="TXT", ttl=3600, values=["MS=ms12345678", "v=spf1 mx -all"]),
    RRset(name="mail", type="A", ttl=3600, values=["192.0.2.25"]),
]
EXO_MX = "0 contoso-com.mail.protection.outlook.com."
EXO_SPF = "v=spf1 include:spf.protection.outlook.com -all"


class World(Protocol):
    backend: DnsBackend

    def edit_by_hand(self, name: str, rdtype: str, ttl: int, values: Sequence[str]) -> None: ...
    def take_down(self) -> None: ...


@dataclass
class BindWorld:
    zone: BindZone
    backend: Rfc2136Backend

    def edit_by_hand(self, name: str, rdtype: str, ttl: int, values: Sequence[str]) -> None:
        """Another administrator's change, sent straight to the primary."""
        key = dns.tsig.Key(self.zone.key_name, self.zone.secret, dns.tsig.HMAC_SHA256)
        update = dns.update.UpdateMessage(ZONE, keyring={key.name: key}, keyname=key.name)
        update.replace(name, ttl, *to_rdatas(rdtype, values))
        response = dns.query.tcp(update, "127.0.0.1", port=self.zone.primary.port, timeout=3)
        assert response.rcode() == 0

    def take_down(self) -> None:
        self.zone.primary.stop()


@dataclass
class SimWorld:
    backend: DnsSimBackend

    def edit_by_hand(self, name: str, rdtype: str, ttl: int, values: Sequence[str]) -> None:
        self.backend.edit(ZONE, name, rdtype, ttl=ttl, values=values)

    def take_down(self) -> None:
        self.backend.set_reachable(ZONE, False)


def rfc2136_backend(zone: BindZone, key_file: Path, *, secondary: bool = False) -> Rfc2136Backend:
    servers = [zone.primary.address] + ([zone.secondary.address] if secondary and zone.secondary else [])
    settings = Rfc2136Settings.model_validate(
        # A short timeout: the unreachable-server tests wait for it once.
        {
            "default": {
                "servers": servers,
                "primary": zone.primary.address,
                "keyRef": f"file:{key_file}",
                "timeout": 0.5,
            }
        }
    )
    return Rfc2136Backend(settings)


@pytest.fixture(params=["bind", "sim"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    if request.param == "bind":
        with bind_zone() as zone:
            yield BindWorld(zone, rfc2136_backend(zone, zone.key_file(tmp_path / "bind.key")))
    else:
        backend = DnsSimBackend(tmp_path / "dns.json")
        backend.seed_zone(ZONE, SEED)
        yield SimWorld(backend)


def observed(world: World) -> dict[tuple[str, str], RRset]:
    zone = world.backend.observe(WANTED).zones[ZONE]
    assert zone is not None
    return {rrset.key: rrset for rrset in zone}


def test_observe_reads_the_managed_rrsets_and_leaves_absent_ones_out(world: World) -> None:
    result = world.backend.observe(WANTED)
    assert result.findings == ()
    assert sorted(result.zones[ZONE] or [], key=lambda r: r.key) == [
        RRset(name="@", type="MX", ttl=3600, values=["10 mail.contoso.com."]),
        RRset(name="@", type="TXT", ttl=3600, values=["MS=ms12345678", "v=spf1 mx -all"]),
        RRset(name="mail", type="A", ttl=3600, values=["192.0.2.25"]),
    ]


def test_an_unreachable_primary_makes_the_zone_unknown_not_empty(world: World) -> None:
    world.take_down()
    result = world.backend.observe(WANTED)
    assert result.zones == {ZONE: None}
    assert any("unknown" in finding for finding in result.findings)
    with pytest.raises(DnsTransientError):
        world.backend.apply(action("@", "MX", 300, ["10 mail.contoso.com."], previous=SEED[2], kind="ttl"))


def test_create_an_rrset(world: World) -> None:
    world.backend.apply(action("www", "A", 600, ["192.0.2.80"], previous=None, kind="create"))
    assert observed(world)[("www", "A")] == RRset(name="www", type="A", ttl=600, values=["192.0.2.80"])


def test_autodiscover_cname_is_created_where_the_name_had_no_data(world: World) -> None:
    world.backend.apply(
        action("autodiscover", "CNAME", 3600, ["autodiscover.outlook.com."], previous=None, kind="create")
    )
    assert observed(world)[("autodiscover", "CNAME")].values == ["autodiscover.outlook.com."]


def test_replace_values_and_ttl(world: World) -> None:
    before = observed(world)[("@", "MX")]
    world.backend.apply(action("@", "MX", 300, [EXO_MX], previous=before))
    assert observed(world)[("@", "MX")] == RRset(name="@", type="MX", ttl=300, values=[EXO_MX])


def test_ttl_only_change_keeps_the_values(world: World) -> None:
    before = observed(world)[("@", "MX")]
    world.backend.apply(action("@", "MX", 300, before.values, previous=before, kind="ttl"))
    assert observed(world)[("@", "MX")] == RRset(name="@", type="MX", ttl=300, values=before.values)


@pytest.mark.parametrize("ttl", [3600, 300], ids=["same-ttl", "ttl-change"])
def test_spf_swap_keeps_the_verification_token(world: World, ttl: int) -> None:
    before = observed(world)[("@", "TXT")]
    world.backend.apply(action("@", "TXT", ttl, ["MS=ms12345678", EXO_SPF], previous=before))
    assert observed(world)[("@", "TXT")] == RRset(
        name="@", type="TXT", ttl=ttl, values=sorted(["MS=ms12345678", EXO_SPF])
    )


def test_a_long_spf_string_round_trips(world: World) -> None:
    """Over 255 bytes a TXT string is split into character-strings and joined again when read."""
    long_spf = "v=spf1 " + " ".join(f"ip4:198.51.100.{i}" for i in range(1, 25)) + " -all"
    assert len(long_spf) > 255
    before = observed(world)[("@", "TXT")]
    world.backend.apply(action("@", "TXT", 3600, ["MS=ms12345678", long_spf], previous=before))
    assert observed(world)[("@", "TXT")].values == sorted(["MS=ms12345678", long_spf])


def test_a_change_between_observe_and_apply_fails_as_transient(world: World) -> None:
    before = observed(world)[("@", "MX")]
    world.edit_by_hand("@", "MX", 3600, ["20 backup.example.net."])
    with pytest.raises(DnsTransientError, match="changed meanwhile; observe again"):
        world.backend.apply(action("@", "MX", 300, [EXO_MX], previous=before))
    assert observed(world)[("@", "MX")].values == ["20 backup.example.net."]


def test_a_token_added_meanwhile_fails_the_spf_swap_and_survives(world: World) -> None:
    before = observed(world)[("@", "TXT")]
    world.edit_by_hand("@", "TXT", 3600, [*before.values, "google-site-verification=abc"])
    with pytest.raises(DnsTransientError):
        world.backend.apply(action("@", "TXT", 3600, ["MS=ms12345678", EXO_SPF], previous=before))
    assert "google-site-verification=abc" in observed(world)[("@", "TXT")].values


def test_a_create_that_someone_else_did_first_fails_as_transient(world: World) -> None:
    world.edit_by_hand("www", "A", 3600, ["192.0.2.99"])
    with pytest.raises(DnsTransientError):
        world.backend.apply(action("www", "A", 600, ["192.0.2.80"], previous=None, kind="create"))


def test_data_beside_a_cname_is_caught_by_the_verify_step(world: World) -> None:
    """BIND answers NOERROR and ignores a CNAME added where other data lives."""
    with pytest.raises(DnsPermanentError, match="beside a CNAME"):
        world.backend.apply(action("mail", "CNAME", 300, ["mail.outlook.com."], previous=None, kind="create"))
    assert observed(world)[("mail", "A")].values == ["192.0.2.25"]


def test_messages_are_counted(world: World) -> None:
    counts = world.backend.messages  # type: ignore[attr-defined]
    counts.reset()
    world.backend.observe(WANTED)
    # The SOA, one query per RRset, and whether *.contoso.com exists (mail has data below the apex).
    assert counts.queries == 1 + len(WANTED[ZONE]) + 1
    before = observed(world)[("@", "MX")]
    counts.reset()
    world.backend.apply(action("@", "MX", 300, [EXO_MX], previous=before))
    assert (counts.updates, counts.queries) == (1, 1)  # one UPDATE, one verify read
