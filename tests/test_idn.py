"""An IDN zone on real BIND: desired state written in Unicode, served and updated under its A-labels."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.desired.loader import load_directory
from controller.dns.rfc2136 import Rfc2136Backend
from controller.dns.settings import Rfc2136Settings
from controller.model.actions import DnsAction
from controller.model.snapshot import ExchangeObserved, Memory, ObservedEndpoint, RRset, Snapshot
from controller.planner.plan import plan
from tests.support.bind import bind_zone

ZONE = "xn--e1afmkfd.xn--p1ai"  # пример.рф
POCHTA = "xn--80a1acny"  # почта
MIGRATION = """\
apiVersion: stagectl/v1
kind: Migration
metadata: {name: primer}
spec:
  endpoint:
    name: StagedEndpoint
    exchangeServer: почта.пример.рф
    rpcProxyServer: почта.пример.рф
    emailAddress: migration.admin@пример.рф
    credentialsRef: env:ONPREM_MIGRATION_CREDENTIALS
"""
# The zone as an administrator writes it: every name in Unicode, the zone's in capitals.
ZONE_DOC = """\
apiVersion: stagectl/v1
kind: DnsZone
metadata: {name: Пример.РФ}
spec:
  records:
    - {name: "@", type: MX, ttl: 3600, values: ["10 mail.пример.рф."]}
    - {name: почта, type: A, ttl: 300, values: [192.0.2.26]}
"""
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def test_a_unicode_desired_state_observes_and_updates_its_zone_under_the_a_labels(tmp_path: Path) -> None:
    desired_dir = tmp_path / "desired"
    (desired_dir / "dns").mkdir(parents=True)
    (desired_dir / "migration.yaml").write_text(MIGRATION)
    (desired_dir / "dns" / "пример.рф.yaml").write_text(ZONE_DOC)
    desired = load_directory(desired_dir)
    assert [zone.name for zone in desired.zones] == [ZONE]
    wanted = {ZONE: [(record.name, record.type.value) for record in desired.records]}
    assert wanted == {ZONE: [("@", "MX"), (POCHTA, "A")]}

    with bind_zone(zone_name=ZONE, extra_records=f"{POCHTA} 3600 IN A 192.0.2.25\n") as bind:
        settings = Rfc2136Settings.model_validate(
            {
                "default": {
                    "servers": [bind.primary.address],
                    "keyRef": f"file:{bind.key_file(tmp_path / 'k')}",
                }
            }
        )
        backend = Rfc2136Backend(settings)

        def snapshot() -> Snapshot:
            observed = backend.observe(wanted)
            assert observed.findings == ()
            exchange = ExchangeObserved(
                endpoints=[ObservedEndpoint(Identity="StagedEndpoint", ExchangeServer=f"{POCHTA}.{ZONE}")],
                batches=[],
                users=[],
                mailUsers=[],
            )
            return Snapshot(observedAt=NOW, exchange=exchange, dns=dict(observed.zones), memory=Memory())

        first = snapshot()
        served = {rrset.key: rrset for rrset in first.dns[ZONE] or ()}
        # BIND's MX target, read off the wire, is the spelling the Unicode value was loaded as.
        assert served[("@", "MX")] == RRset(name="@", type="MX", ttl=3600, values=[f"10 mail.{ZONE}."])
        assert served[(POCHTA, "A")] == RRset(name=POCHTA, type="A", ttl=3600, values=["192.0.2.25"])

        actions = [action for action in plan(desired, first, NOW).actions if isinstance(action, DnsAction)]
        assert [(a.zone, a.name, a.type, a.ttl, a.values) for a in actions] == [
            (ZONE, POCHTA, "A", 300, ("192.0.2.26",))
        ]
        for action in actions:
            backend.apply(action)

        answer = bind.primary.query(f"{POCHTA}.{ZONE}.", "A").answer
        assert [(rrset.ttl, [rdata.to_text() for rdata in rrset]) for rrset in answer] == [
            (300, ["192.0.2.26"])
        ]
        assert not [
            action for action in plan(desired, snapshot(), NOW).actions if isinstance(action, DnsAction)
        ]


def test_the_dns_settings_of_a_zone_written_in_unicode_apply_to_its_a_labels() -> None:
    settings = Rfc2136Settings.model_validate(
        {"zones": {"Пример.РФ": {"servers": ["127.0.0.1:53"], "keyRef": "env:TSIG"}}}
    )
    found = settings.for_zone("xn--e1afmkfd.xn--p1ai")
    assert found is not None and found.servers == ["127.0.0.1:53"]
    with pytest.raises(ValueError, match="not a valid IDNA 2008 name"):
        Rfc2136Settings.model_validate({"zones": {"☃.example": {"servers": ["127.0.0.1:53"]}}})
    twice = {
        "xn--e1afmkfd.xn--p1ai": {"servers": ["192.0.2.1:53"]},
        "пример.рф": {"servers": ["192.0.2.2:53"]},
    }
    with pytest.raises(ValueError, match="listed twice"):
        Rfc2136Settings.model_validate({"zones": twice})
    for malformed in ("exa mple.com", "a..b", "-bad-.com"):
        with pytest.raises(ValueError, match="not a fully qualified host name"):
            Rfc2136Settings.model_validate({"zones": {malformed: {"servers": ["192.0.2.1:53"]}}})
