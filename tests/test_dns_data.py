"""What a server holds at a name, on real BIND: TXT values split into character-strings, wildcard answers."""

from __future__ import annotations

from pathlib import Path

import dns.rdatatype
import pytest

from controller.dns.rfc2136 import Rfc2136Backend
from controller.dns.settings import Rfc2136Settings
from controller.model.snapshot import RRset
from tests.support.bind import ZONE, BindZone, bind_zone
from tests.support.dns import txt_action

EXO_SPF = "v=spf1 include:spf.protection.outlook.com -all"
# An SPF string and a token each stored as two character-strings, as some registrars write them.
SPLIT_TXT = 'lists 3600 IN TXT "v=spf1 ip4:192.0.2.0/24 " "mx -all"\nlists 3600 IN TXT "MS=" "ms999"\n'
OLD_SPF = "v=spf1 ip4:192.0.2.0/24 mx -all"
WILDCARDS = '* 3600 IN TXT "v=spf1 include:wild.example.net -all"\n*.eu 3600 IN CNAME wild.example.net.\n'


def backend(bind: BindZone, tmp_path: Path) -> Rfc2136Backend:
    entry = {"servers": [bind.primary.address], "keyRef": f"file:{bind.key_file(tmp_path / 'k')}"}
    return Rfc2136Backend(Rfc2136Settings.model_validate({"default": {**entry, "timeout": 0.5}}))


def held_strings(bind: BindZone, name: str) -> list[tuple[bytes, ...]]:
    """The TXT records at `name` as the primary holds them: each one's character-strings."""
    answer = bind.primary.query(f"{name}.{ZONE}", "TXT")
    return sorted(
        tuple(rdata.strings)
        for rrset in answer.answer
        if rrset.rdtype == dns.rdatatype.TXT
        for rdata in rrset
    )


@pytest.mark.parametrize("ttl", [3600, 300], ids=["same-ttl", "ttl-change"])
def test_an_spf_string_stored_as_two_strings_is_replaced_in_one_pass(tmp_path: Path, ttl: int) -> None:
    with bind_zone(extra_records=SPLIT_TXT) as bind:
        client = backend(bind, tmp_path)
        before = client.observe({ZONE: [("lists", "TXT")]}).zones[ZONE]
        # Compared joined: the values are the strings as the record means them, however split.
        assert before == [RRset(name="lists", type="TXT", ttl=3600, values=["MS=ms999", OLD_SPF])]
        client.apply(txt_action("lists", ttl, ["MS=ms999", EXO_SPF], previous=before[0]))
        after = client.observe({ZONE: [("lists", "TXT")]}).zones[ZONE]
        # What was asked for is served: the next plan has nothing to change.
        assert after == [RRset(name="lists", type="TXT", ttl=ttl, values=sorted(["MS=ms999", EXO_SPF]))]
        # One SPF record, and the token kept as it was stored.
        assert held_strings(bind, "lists") == [(b"MS=", b"ms999"), (EXO_SPF.encode(),)]


def test_a_wildcard_answer_is_not_data_at_the_name(tmp_path: Path) -> None:
    with bind_zone(extra_records=WILDCARDS) as bind:
        client = backend(bind, tmp_path)
        wanted = {ZONE: [("lists", "TXT"), ("mail", "A"), ("@", "TXT"), ("autodiscover.eu", "CNAME")]}
        result = client.observe(wanted)
        assert result.zones[ZONE] is not None
        # Only data at the names: lists and autodiscover.eu exist only through *.contoso.com and *.eu.
        assert sorted(result.zones[ZONE], key=lambda rrset: rrset.key) == [
            RRset(name="@", type="TXT", ttl=3600, values=["MS=ms12345678", "v=spf1 mx -all"]),
            RRset(name="mail", type="A", ttl=3600, values=["192.0.2.25"]),
        ]
        assert result.findings == (
            f"{ZONE}: lists TXT is answered from the wildcard *.{ZONE}, not data at the name;"
            " taken as absent",
            f"{ZONE}: autodiscover.eu CNAME is answered from a wildcard above it, not data at the name;"
            " taken as absent",
        )
        # Planned as absent, the record is created (its prerequisite, "absent", holds on the server).
        client.apply(txt_action("lists", 3600, [EXO_SPF], previous=None))
        result = client.observe(wanted)
        assert RRset(name="lists", type="TXT", ttl=3600, values=[EXO_SPF]) in (result.zones[ZONE] or [])
        assert len(result.findings) == 1 and "autodiscover.eu" in result.findings[0]
