"""What the DNS tests share: the zone's MX as BIND serves it, and the TTL-lowering action on it."""

from __future__ import annotations

from controller.model.actions import DnsAction
from controller.model.snapshot import RRset
from controller.sim.bind import ZONE

MX = RRset(name="@", type="MX", ttl=3600, values=["10 mail.contoso.com."])


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
