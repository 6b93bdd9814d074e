"""The DNS cutover end to end: the real planner driving the RFC 2136 backend on BIND, with a fake clock.

What BIND serves after each pass is the proof: the coexistence SPF string from the first started batch,
the values swapped at the low TTL with the final SPF string, the desired TTL after the rollback window, a
revert inside the window swapped straight back, and a lagging secondary holding the swap."""

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
    ObservedUser,
    RRset,
    Snapshot,
)
from controller.planner.plan import plan
from tests.support.bind import ZONE, BindZone, bind_zone

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
COEXISTENCE_SPF = "v=spf1 mx include:spf.protection.outlook.com -all"  # BIND's zone has "v=spf1 mx -all"
ONPREM_MX = "10 mail.contoso.com."
MX, CNAME = f"dns/{ZONE}/@/MX", f"dns/{ZONE}/autodiscover/CNAME"
TXT = f"dns/{ZONE}/@/TXT"


def zone_doc(mx: str = EXO_MX) -> bytes:
    return f"""\
apiVersion: stagectl/v1
kind: DnsZone
metadata: {{name: {ZONE}}}
spec:
  records:
    - {{name: "@", type: MX, ttl: 3600, values: ["{mx}"], cutover: true}}
    - {{name: autodiscover, type: CNAME, ttl: 3600, values: ["autodiscover.outlook.com."], cutover: true}}
    - {{name: "@", type: TXT, ttl: 3600, spf: "{EXO_SPF}"}}
""".encode()


ZONE_DOC = zone_doc()
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


AFTER_LEAD = T0 + timedelta(hours=49)


class Cutover:
    """One reconcile pass at a time: observe BIND, plan, apply the DNS actions, keep the memory."""

    def __init__(self, desired: DesiredState, backend: Rfc2136Backend) -> None:
        self.desired = desired
        self.backend = backend
        self.memory = Memory()

    def wanted(self) -> dict[str, list[tuple[str, str]]]:
        return {ZONE: [(r.name, r.type.value) for r in self.desired.records]}

    def observe(self, now: datetime, batch_status: str) -> Snapshot:
        """alice is the batch's one member: Completed with her mailbox once the batch is Completed."""
        done = batch_status == "Completed"
        exchange = ExchangeObserved(
            endpoints=[
                ObservedEndpoint(
                    Identity="StagedEndpoint", ExchangeServer="mail.contoso.com", MaxConcurrentMigrations=20
                )
            ],
            batches=[ObservedBatch(Identity="Batch1-IT", Status=batch_status, TotalCount=1, SyncedCount=1)],
            users=[ObservedUser(Identity="alice@contoso.com", BatchId="Batch1-IT", Status=batch_status)],
            mailUsers=["alice@contoso.com"],
            mailboxes=["alice@contoso.com"] if done else [],
        )
        dns = dict(self.backend.observe(self.wanted()).zones)
        return Snapshot(observedAt=now, exchange=exchange, dns=dns, memory=self.memory)

    def rrsets(self) -> dict[tuple[str, str], RRset]:
        zone = self.backend.observe(self.wanted()).zones[ZONE]
        assert zone is not None
        return {rrset.key: rrset for rrset in zone}

    def served(self, name: str, rdtype: str) -> tuple[int, list[str]]:
        """The TTL and values the primary serves (the per-server answers aside)."""
        rrset = self.rrsets()[(name, rdtype)]
        return rrset.ttl, sorted(rrset.values)

    def run(self, now: datetime, batch_status: str) -> tuple[Plan, list[DnsAction]]:
        result = plan(self.desired, self.observe(now, batch_status), now)
        applied = [action for action in result.actions if isinstance(action, DnsAction)]
        for action in applied:
            self.backend.apply(action)
        self.memory = result.memory
        return result, applied


def desired(zone: bytes = ZONE_DOC) -> DesiredState:
    return load_files(
        {"migration.yaml": MIGRATION, "batches/b1.yaml": BATCH, "dns/contoso.com.yaml": zone}, revision="r1"
    )


def backend(bind: BindZone, tmp_path: Path, *, servers: list[str] | None = None) -> Rfc2136Backend:
    settings = Rfc2136Settings.model_validate(
        {
            "default": {
                "servers": servers or [bind.primary.address],
                "primary": bind.primary.address,
                "keyRef": f"file:{bind.key_file(tmp_path / 'k')}",
            }
        }
    )
    return Rfc2136Backend(settings)


def swap(cutover: Cutover) -> None:
    """Passes up to and including the swap: TTL lowered (and coexistence SPF), lead, batch Completed."""
    cutover.run(T0, "Synced")
    cutover.run(T0 + timedelta(hours=1), "Synced")
    _, applied = cutover.run(AFTER_LEAD, "Completed")
    assert {(a.name, a.type) for a in applied} == {("@", "MX"), ("autodiscover", "CNAME"), ("@", "TXT")}


def gates(result: Plan, obj: str) -> set[str]:
    return {b.gate for b in result.blocked if b.object == obj}


def test_the_cutover_on_bind(tmp_path: Path) -> None:
    with bind_zone() as bind:
        cutover = Cutover(desired(), backend(bind, tmp_path))

        # Pass 1: the batch has started (Synced, not completed). The MX TTL is lowered, its value kept,
        # and the SPF string authorises Exchange Online beside on-premises, the token kept.
        result, applied = cutover.run(T0, "Synced")
        assert [(a.name, a.type, a.kind, a.ttl) for a in applied] == [
            ("@", "MX", "ttl", 300),
            ("@", "TXT", "update", 3600),
        ]
        assert cutover.served("@", "MX") == (300, [ONPREM_MX])
        assert cutover.served("@", "TXT") == (3600, sorted(["MS=ms12345678", COEXISTENCE_SPF]))
        assert "ttl-lead" in gates(result, MX)

        # An hour later the low TTL is seen; the swap waits for the lead time, SPF stays coexisting.
        result, applied = cutover.run(T0 + timedelta(hours=1), "Synced")
        assert applied == []
        assert "ttl-lead" in gates(result, MX)
        assert gates(result, f"dns/{ZONE}/@/TXT") == {"batches-completed"}  # the MX's first gate

        # The lead time has passed but the batch is not complete: still refused.
        result, applied = cutover.run(AFTER_LEAD, "Synced")
        assert applied == []
        assert gates(result, MX) == {"batches-completed"}
        assert cutover.served("@", "TXT") == (3600, sorted(["MS=ms12345678", COEXISTENCE_SPF]))

        # Both gates pass: MX swapped and autodiscover created at the low TTL, SPF final in the same pass.
        result, applied = cutover.run(AFTER_LEAD + timedelta(minutes=5), "Completed")
        assert [(a.name, a.type, a.ttl) for a in applied] == [
            ("@", "MX", 300),
            ("autodiscover", "CNAME", 300),
            ("@", "TXT", 3600),
        ]
        assert cutover.served("@", "MX") == (300, [EXO_MX])
        assert cutover.served("autodiscover", "CNAME") == (300, ["autodiscover.outlook.com."])
        assert cutover.served("@", "TXT") == (3600, sorted(["MS=ms12345678", EXO_SPF]))

        # Inside the rollback window the TTL stays low; nothing is blocked, the plan says until when.
        swapped = AFTER_LEAD + timedelta(minutes=10)
        result, applied = cutover.run(swapped, "Completed")
        assert applied == [] and result.blocked == ()
        assert {w.object for w in result.waiting} == {MX, CNAME}
        assert all("rollback window" in w.reason for w in result.waiting)

        # After the window the desired TTL follows, with no gate.
        result, applied = cutover.run(swapped + timedelta(hours=24), "Completed")
        assert [(a.name, a.type, a.kind, a.ttl) for a in applied] == [
            ("@", "MX", "ttl", 3600),
            ("autodiscover", "CNAME", "ttl", 3600),
        ]
        assert cutover.served("@", "MX") == (3600, [EXO_MX])

        # Converged: planning again gives no DNS action and nothing waits.
        result, applied = cutover.run(swapped + timedelta(hours=25), "Completed")
        assert applied == [] and result.waiting == ()


def test_a_revert_inside_the_rollback_window_swaps_back_at_the_low_ttl(tmp_path: Path) -> None:
    with bind_zone() as bind:
        cutover = Cutover(desired(), backend(bind, tmp_path))
        swap(cutover)
        cutover.run(AFTER_LEAD + timedelta(minutes=5), "Completed")  # the swap is seen: the window opens

        cutover.desired = desired(zone_doc(mx=ONPREM_MX))  # the cutover commit reverted, two hours on
        result, applied = cutover.run(AFTER_LEAD + timedelta(hours=2), "Completed")
        assert [(a.name, a.type, a.kind, a.ttl, a.values) for a in applied] == [
            ("@", "MX", "update", 300, (ONPREM_MX,))
        ]
        assert "rollback window" in applied[0].reason and "swap back" in applied[0].reason
        # The final SPF string would fail on-premises outbound mail: refused until the repository reverts it.
        assert [(b.object, b.gate) for b in result.blocked] == [(TXT, "spf")]
        assert "revert the SPF string in the repository" in result.blocked[0].reason
        assert cutover.served("@", "MX") == (300, [ONPREM_MX])


def test_a_lagging_secondary_holds_the_swap(tmp_path: Path) -> None:
    """The secondary never hears of the lowered TTL (no NOTIFY, long refresh): the lead never starts on
    it, so however long the primary has served TTL 300 the values are not swapped."""
    with bind_zone(secondary=True, notify=False) as bind:
        assert bind.secondary is not None
        servers = [bind.primary.address, bind.secondary.address]
        cutover = Cutover(desired(), backend(bind, tmp_path, servers=servers))
        cutover.run(T0, "Synced")
        cutover.run(T0 + timedelta(hours=1), "Synced")
        result, applied = cutover.run(AFTER_LEAD, "Completed")
        assert [(a.name, a.type) for a in applied if a.type == "MX"] == []
        assert cutover.served("@", "MX") == (300, [ONPREM_MX])
        held = [b.reason for b in result.blocked if b.object == MX and b.gate == "ttl-lead"]
        assert held and bind.secondary.address in held[0], result.blocked
        # The final SPF string waits with the MX: on-premises still receives and must stay authorised.
        assert not any(a.type == "TXT" for a in applied)
