"""What the DNS tests share: the zone's MX as BIND serves it, the TTL-lowering action on it, and RRsets
compared without the per-server answers."""

from __future__ import annotations

from collections.abc import Iterable

from controller.model.actions import DnsAction, DnsChangeKind
from controller.model.snapshot import RRset
from controller.sim.bind import ZONE

MX = RRset(name="@", type="MX", ttl=3600, values=["10 mail.contoso.com."])


def bare(rrsets: Iterable[RRset] | None) -> list[RRset]:
    """The RRsets as the primary serves them, without each server's answer (compared on their own)."""
    return [rrset.model_copy(update={"servers": []}) for rrset in rrsets or ()]


def lower_mx_ttl(zone: str = ZONE) -> DnsAction:
    """Lower the MX TTL to 300 keeping its value: the first step of a cutover."""
    return DnsAction(
        zone=zone,
        name="@",
        type="MX",
        ttl=300,
        values=tuple(MX.values),
        previous_ttl=MX.ttl,
        previous_values=tuple(MX.values),
        object=f"dns/{zone}/@/MX",
        reason="lower TTL",
        kind="ttl",
    )


def rrset_action(
    name: str,
    rdtype: str,
    ttl: int,
    values: Iterable[str],
    *,
    previous: RRset | None,
    kind: DnsChangeKind | None = None,
    zone: str = ZONE,
) -> DnsAction:
    """Make the RRset at `name` hold `values`, planned on `previous` as observed (None: absent)."""
    return DnsAction(
        zone=zone,
        name=name,
        type=rdtype,
        ttl=ttl,
        values=tuple(values),
        previous_ttl=None if previous is None else previous.ttl,
        previous_values=None if previous is None else tuple(previous.values),
        object=f"dns/{zone}/{name}/{rdtype}",
        reason="test",
        kind=kind or ("create" if previous is None else "update"),
    )


def txt_action(
    name: str, ttl: int, values: Iterable[str], *, previous: RRset | None, zone: str = ZONE
) -> DnsAction:
    """Make the TXT RRset at `name` hold `values`, planned on `previous` as observed."""
    return rrset_action(name, "TXT", ttl, values, previous=previous, zone=zone)
