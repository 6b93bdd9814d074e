"""The RFC 2136 backend on real BIND: TSIG failures, refusals, secondaries, and key references."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import ValidationError

from controller.dns.base import DnsPermanentError
from controller.dns.rfc2136 import Rfc2136Backend
from controller.dns.settings import Rfc2136Settings
from controller.dns.tsig import load_key, parse_env_value, parse_key_file
from controller.model.actions import DnsAction
from controller.model.snapshot import RRset, ServerAnswer
from tests.support.bind import (
    KEY_NAME,
    READONLY_KEY_NAME,
    ZONE,
    bind_zone,
    free_port,
    new_secret,
    wait_until_serving,
)
from tests.support.dns import MX, bare, lower_mx_ttl

WANTED = {ZONE: [("@", "MX"), ("@", "TXT")]}


def backend(
    servers: list[str], key_ref: str | None, *, zone: str | None = None, primary: str | None = None
) -> Rfc2136Backend:
    entry = {"servers": servers, "primary": primary, "keyRef": key_ref, "timeout": 0.5}
    body = {"zones": {zone: entry}} if zone else {"default": entry}
    return Rfc2136Backend(Rfc2136Settings.model_validate(body))


def test_a_wrong_secret_is_a_clear_permanent_error_without_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = new_secret()
    monkeypatch.setenv("STAGECTL_TSIG", f"{KEY_NAME}:hmac-sha256:{wrong}")
    with bind_zone() as bind:
        with pytest.raises(DnsPermanentError) as caught:
            backend([bind.primary.address], "env:STAGECTL_TSIG").apply(lower_mx_ttl())
        message = str(caught.value)
        assert f"rejected the TSIG key {KEY_NAME}" in message
        assert wrong not in message and bind.secret not in message
        assert bind.primary.query(ZONE, "MX").answer[0].ttl == 3600


def test_an_unknown_key_name_is_rejected(tmp_path: Path) -> None:
    with bind_zone() as bind:
        key_file = bind.key_file(tmp_path / "other.key", name="nobody")
        with pytest.raises(DnsPermanentError, match="rejected the TSIG key nobody"):
            backend([bind.primary.address], f"file:{key_file}").apply(lower_mx_ttl())


def test_a_key_without_allow_update_is_refused(tmp_path: Path) -> None:
    with bind_zone() as bind:
        key_file = bind.key_file(tmp_path / "ro.key", name=READONLY_KEY_NAME, secret=bind.readonly_secret)
        with pytest.raises(DnsPermanentError, match=r"refused the update \(is allow-update set"):
            backend([bind.primary.address], f"file:{key_file}").apply(lower_mx_ttl())


def test_a_zone_not_served_there(tmp_path: Path) -> None:
    with bind_zone() as bind:
        client = backend([bind.primary.address], f"file:{bind.key_file(tmp_path / 'k')}", zone="fabrikam.com")
        with pytest.raises(DnsPermanentError, match=r"fabrikam\.com is not served there"):
            client.apply(lower_mx_ttl("fabrikam.com"))
        result = client.observe({"fabrikam.com": [("@", "MX")]})
        assert result.zones == {"fabrikam.com": None}


def test_a_zone_without_settings_is_unknown() -> None:
    result = backend(["127.0.0.1:1"], None, zone="fabrikam.com").observe(WANTED)
    assert result.zones == {ZONE: None}
    assert "no DNS servers are configured" in result.findings[0]


def test_a_lagging_secondary_is_reported_and_the_primary_is_the_truth(tmp_path: Path) -> None:
    with bind_zone(secondary=True, notify=False) as bind:
        assert bind.secondary is not None
        client = backend(
            [bind.primary.address, bind.secondary.address],
            f"file:{bind.key_file(tmp_path / 'k')}",
            primary=bind.primary.address,
        )
        assert client.observe(WANTED).findings == ()
        client.apply(lower_mx_ttl())
        result = client.observe(WANTED)
        assert RRset(name="@", type="MX", ttl=300, values=MX.values) in bare(result.zones[ZONE])
        assert any("SOA serial 2" in f and bind.secondary.address in f for f in result.findings)
        assert any(
            "@ MX differs" in f and bind.primary.address in f and bind.secondary.address in f
            for f in result.findings
        )
        assert client.messages.queries == 2 * (1 + 2) * 2 + 1  # two passes on two servers, one verify


def test_a_secondary_fed_by_notify_catches_up(tmp_path: Path) -> None:
    with bind_zone(secondary=True, notify=True) as bind:
        assert bind.secondary is not None
        client = backend(
            [bind.primary.address, bind.secondary.address],
            f"file:{bind.key_file(tmp_path / 'k')}",
            primary=bind.primary.address,
        )
        client.apply(lower_mx_ttl())
        wait_until_serving(bind.secondary, serial=2)  # NOTIFY, then IXFR (bounded poll)
        assert client.observe(WANTED).findings == ()


def test_an_unreachable_secondary_is_a_finding_not_an_unknown_zone(tmp_path: Path) -> None:
    with bind_zone(secondary=True) as bind:
        assert bind.secondary is not None
        client = backend([bind.primary.address, bind.secondary.address], None, primary=bind.primary.address)
        bind.secondary.stop()
        result = client.observe(WANTED)
        assert MX in bare(result.zones[ZONE])
        assert result.findings == (
            f"{ZONE}: the secondary {bind.secondary.address} could not be read (timed out)",
        )


def test_a_key_file_and_an_env_value_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    text = f'# made by tsig-keygen\nkey "k1" {{\n\talgorithm hmac-sha512;\n\tsecret "{secret}";\n}};\n'
    key = parse_key_file(text, source="k")
    assert (key.name, key.algorithm, key.secret) == ("k1", "hmac-sha512", base64.b64decode(secret))
    assert secret not in repr(key)
    assert parse_env_value(f"k2:{secret}", source="e").algorithm == "hmac-sha256"
    (tmp_path / "two.key").write_text(text + text.replace("k1", "k2"))
    assert load_key(f"file:{tmp_path / 'two.key'}#k2").name == "k2"
    with pytest.raises(DnsPermanentError, match="exactly one key"):
        load_key(f"file:{tmp_path / 'two.key'}")
    monkeypatch.setenv("BAD_KEY", "k3:hmac-sha256:not base64!")
    with pytest.raises(DnsPermanentError, match="not valid base64") as caught:
        load_key("env:BAD_KEY")
    assert "not base64!" not in str(caught.value)
    with pytest.raises(DnsPermanentError, match="MISSING_KEY holding the TSIG key is not set"):
        load_key("env:MISSING_KEY")


def test_settings_refuse_an_inline_secret_without_echoing_it() -> None:
    secret = new_secret()
    with pytest.raises(ValidationError) as caught:
        Rfc2136Settings.model_validate({"default": {"servers": ["127.0.0.1:53"], "keyRef": secret}})
    assert "never a secret" in str(caught.value)
    assert secret not in str(caught.value)


def test_a_truncated_answer_is_asked_again_over_tcp(tmp_path: Path) -> None:
    values = [f"token-{i:02}-" + "x" * 60 for i in range(12)]  # about 900 bytes: over 512, so TC over UDP
    with bind_zone() as bind:
        client = backend([bind.primary.address], f"file:{bind.key_file(tmp_path / 'k')}")
        client.apply(
            DnsAction(
                zone=ZONE,
                name="big",
                type="TXT",
                ttl=600,
                values=tuple(values),
                previous_ttl=None,
                previous_values=None,
                object=f"dns/{ZONE}/big/TXT",
                reason="test",
                kind="create",
            )
        )
        client.messages.reset()
        result = client.observe({ZONE: [("big", "TXT")]})
        assert result.zones[ZONE] == [RRset(name="big", type="TXT", ttl=600, values=sorted(values))]
        # The SOA, the TXT over UDP and again over TCP, and whether *.contoso.com exists (big has data).
        assert client.messages.queries == 1 + 2 + 1


def test_a_secret_with_comment_characters_parses() -> None:
    secret = base64.b64encode(bytes([0xFF, 0xFF, 0xFC, 0x3F, 0xFF, 0xFF])).decode()  # "///8////"
    assert "//" in secret
    text = f'/* note */ key "k" {{ algorithm hmac-sha256; // the default\n secret "{secret}"; }};'
    assert parse_key_file(text, source="k").secret == base64.b64decode(secret)


def test_each_server_answers_with_its_serial_and_ttl(tmp_path: Path) -> None:
    """The TTL lead is measured on the slowest server: the snapshot holds every server's answer."""
    with bind_zone(secondary=True, notify=False) as bind:
        assert bind.secondary is not None
        client = backend(
            [bind.primary.address, bind.secondary.address],
            f"file:{bind.key_file(tmp_path / 'k')}",
            primary=bind.primary.address,
        )
        client.apply(lower_mx_ttl())
        zone = client.observe(WANTED).zones[ZONE]
        assert zone is not None
        mx = next(rrset for rrset in zone if rrset.key == ("@", "MX"))
        assert (mx.ttl, mx.servers) == (
            300,
            [
                ServerAnswer(server=bind.primary.address, primary=True, serial=2, ttl=300, values=MX.values),
                ServerAnswer(server=bind.secondary.address, serial=1, ttl=3600, values=MX.values),
            ],
        )
        bind.secondary.stop()
        zone = client.observe(WANTED).zones[ZONE]
        assert zone is not None
        mx = next(rrset for rrset in zone if rrset.key == ("@", "MX"))
        assert mx.servers[1] == ServerAnswer(server=bind.secondary.address, error="timed out")


def test_a_silent_server_costs_one_timeout_per_pass() -> None:
    """Nothing listens at `silent`: it is asked once per pass, not once per zone."""
    silent = f"127.0.0.1:{free_port()}"
    with bind_zone() as bind:
        client = Rfc2136Backend(
            Rfc2136Settings.model_validate(
                {
                    "zones": {
                        ZONE: {
                            "servers": [bind.primary.address, silent],
                            "primary": bind.primary.address,
                            "timeout": 0.5,
                        },
                        "fabrikam.com": {"servers": [silent], "timeout": 0.5},
                        "fabrikam.net": {"resolver": silent, "timeout": 0.5},
                    }
                }
            )
        )
        wanted = {ZONE: [("@", "MX")], "fabrikam.com": [("@", "MX")], "fabrikam.net": [("@", "MX")]}
        for _ in range(2):  # each pass asks it again, once
            client.messages.reset()
            result = client.observe(wanted)
            assert client.messages.queries == 2 + 1  # the primary's SOA and MX, the silent server once
            assert result.zones[ZONE] is not None
            assert result.zones["fabrikam.com"] is None and result.zones["fabrikam.net"] is None
            assert f"{ZONE}: the secondary {silent} could not be read (timed out)" in result.findings
            for other in ("fabrikam.com", "fabrikam.net"):
                assert silent in result.errors[other]
                assert "did not answer earlier in this pass (timed out)" in result.errors[other]
