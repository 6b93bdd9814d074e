"""The DNS cutover end to end: the real planner driving the RFC 2136 backend on BIND, with a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.desired.loader import load_files
from controller.desired.models import DesiredState
from controller.dns.rfc2136 import Rfc2136Backend
from controller.dns.settings import Rfc2136Settings
from controller.model.actions import DnsAction, Plan
from controller.model.snapshot import (
    ExchangeObserved,
    Memory,
    ObservedBatch,
    ObservedEndpoint,
    RRset,
    Snapshot,
)
from controller.planner.plan import plan
from tests.support.bind import ZONE, bind_zone

MIGRATION = b"""\
apiVersion: stagectl/v1
kind: Migration
metadata: {name: contoso}
spec:
  endpoint:
    name: StagedEndpoint
    autodiscover: false
    exchangeServer: mail.contoso.com
    rpcProxyServer: mail.contoso.com
    emailAddress: admin@contoso.com
    authentication: Basic
    maxConcurrentMigrations: 20
    credentialsRef: env:ONPREM_MIGRATION_CREDENTIALS
  notificationEmails: [migration-team@contoso.com]
  policy: {lowTtl: 300, ttlLeadTime: 48h, removeAfterCutover: 72h, drift: {exchange: warn, dns: correct}}
"""
BATCH = b"""\
apiVersion: stagectl/v1
kind: Batch
metadata: {name: Batch1-IT}
spec: {state: completed, members: [alice@contoso.com]}
"""
EXO_MX = "0 contoso-com.mail.protection.outlook.com."
EXO_SPF = "v=spf1 include:spf.protection.outlook.com -all"
ZONE_DOC = f"""\
apiVersion: stagectl/v1
kind: DnsZone
metadata: {{name: {ZONE}}}
spec:
  records:
    - {{name: "@", type: MX, ttl: 3600, values: ["{EXO_MX}"], cutover: true}}
    - {{name: autodiscover, type: CNAME, ttl: 3600, values: ["autodiscover.outlook.com."], cutover: true}}
    - {{name: "@", type: TXT, ttl: 3600, spf: "{EXO_SPF}"}}
""".encode()
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


class Cutover:
    """One reconcile pass at a time: observe BIND, plan, apply the DNS actions, keep the memory."""

    def __init__(self, desired: DesiredState, backend: Rfc2136Backend) -> None:
        self.desired = desired
        self.backend = backend
        self.memory = Memory()

    def wanted(self) -> dict[str, list[tuple[str, str]]]:
        return {ZONE: [(r.name, r.type.value) for r in self.desired.records]}

    def observe(self, now: datetime, batch_status: str) -> Snapshot:
        exchange = ExchangeObserved(
            endpoints=[
                ObservedEndpoint(
                    Identity="StagedEndpoint", ExchangeServer="mail.contoso.com", MaxConcurrentMigrations=20
                )
            ],
            batches=[ObservedBatch(Identity="Batch1-IT", Status=batch_status, TotalCount=1, SyncedCount=1)],
            users=[],
            mailUsers=["alice@contoso.com"],
        )
        dns = dict(self.backend.observe(self.wanted()).zones)
        return Snapshot(observedAt=now, exchange=exchange, dns=dns, memory=self.memory)

    def rrsets(self) -> dict[tuple[str, str], RRset]:
        zone = self.backend.observe(self.wanted()).zones[ZONE]
        assert zone is not None
        return {rrset.key: rrset for rrset in zone}

    def run(self, now: datetime, batch_status: str) -> tuple[Plan, list[DnsAction]]:
        result = plan(self.desired, self.observe(now, batch_status), now)
        applied = [action for action in result.actions if isinstance(action, DnsAction)]
        for action in applied:
            self.backend.apply(action)
        self.memory = result.memory
        return result, applied


def test_the_cutover_on_bind(tmp_path: Path) -> None:
    desired = load_files(
        {"migration.yaml": MIGRATION, "batches/b1.yaml": BATCH, "dns/contoso.com.yaml": ZONE_DOC},
        revision="r1",
    )
    with bind_zone() as bind:
        settings = Rfc2136Settings.model_validate(
            {
                "default": {
                    "servers": [bind.primary.address],
                    "keyRef": f"file:{bind.key_file(tmp_path / 'k')}",
                }
            }
        )
        cutover = Cutover(desired, Rfc2136Backend(settings))

        # Pass 1: batches still syncing. Only the MX TTL is lowered, its value kept.
        result, applied = cutover.run(T0, "Synced")
        assert [(a.name, a.type, a.kind, a.ttl) for a in applied] == [("@", "MX", "ttl", 300)]
        assert cutover.rrsets()[("@", "MX")] == RRset(
            name="@", type="MX", ttl=300, values=["10 mail.contoso.com."]
        )
        assert {b.gate for b in result.blocked if b.object == f"dns/{ZONE}/@/MX"} >= {"ttl-lead"}

        # An hour later the low TTL is seen; the swap waits for the lead time.
        result, applied = cutover.run(T0 + timedelta(hours=1), "Synced")
        assert applied == []
        assert any(b.gate == "ttl-lead" for b in result.blocked if b.object == f"dns/{ZONE}/@/MX")

        # The lead time has passed but a batch is not complete: still refused.
        after_lead = T0 + timedelta(hours=1) + timedelta(hours=48, minutes=1)
        result, applied = cutover.run(after_lead, "Synced")
        assert applied == []
        assert any(b.gate == "batches-completed" for b in result.blocked if b.object == f"dns/{ZONE}/@/MX")

        # Both gates pass: MX swapped, autodiscover CNAME created, SPF swapped keeping the MS token.
        result, applied = cutover.run(after_lead + timedelta(minutes=5), "Completed")
        assert {(a.name, a.type) for a in applied} == {("@", "MX"), ("autodiscover", "CNAME"), ("@", "TXT")}
        served = cutover.rrsets()
        assert served[("@", "MX")] == RRset(name="@", type="MX", ttl=3600, values=[EXO_MX])
        assert served[("autodiscover", "CNAME")].values == ["autodiscover.outlook.com."]
        assert served[("@", "TXT")].values == sorted(["MS=ms12345678", EXO_SPF])

        # Converged: planning again gives no DNS action.
        result, applied = cutover.run(after_lead + timedelta(minutes=10), "Completed")
        assert applied == []
