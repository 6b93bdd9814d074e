"""The DNS simulator's state file: serials, hand edits, and locking shared by processes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from controller.model.actions import DnsAction
from controller.model.snapshot import RRset
from controller.sim.dns import DnsSimBackend

ZONE = "contoso.com"
MX = RRset(name="@", type="MX", ttl=3600, values=["10 mail.contoso.com."])


def _create(path: str, prefix: str, count: int) -> None:
    backend = DnsSimBackend(path)
    for i in range(count):
        backend.apply(
            DnsAction(
                zone=ZONE,
                name=f"{prefix}{i}",
                type="A",
                ttl=300,
                values=(f"192.0.2.{i + 1}",),
                previous_ttl=None,
                previous_values=None,
                object=f"dns/{ZONE}/{prefix}{i}/A",
                reason="test",
                kind="create",
            )
        )


def test_each_change_bumps_the_serial_and_hand_edits_show_as_observed(tmp_path: Path) -> None:
    backend = DnsSimBackend(tmp_path / "dns.json")
    backend.seed_zone(ZONE, [MX], serial=7)
    backend.edit(ZONE, "@", "MX", ttl=600, values=["20 other.example.net."])
    assert backend.serial(ZONE) == 8
    again = DnsSimBackend(tmp_path / "dns.json")  # a second reader of the same file
    assert again.observe({ZONE: [("@", "MX")]}).zones[ZONE] == [
        RRset(name="@", type="MX", ttl=600, values=["20 other.example.net."])
    ]
    backend.edit(ZONE, "@", "MX", values=None)
    assert again.observe({ZONE: [("@", "MX")]}).zones[ZONE] == []
    assert backend.serial(ZONE) == 9


def test_an_unknown_zone_is_unknown_not_empty(tmp_path: Path) -> None:
    result = DnsSimBackend(tmp_path / "dns.json").observe({"fabrikam.com": [("@", "MX")]})
    assert result.zones == {"fabrikam.com": None}
    assert result.findings


def test_processes_sharing_the_file_lose_no_change(tmp_path: Path) -> None:
    path = tmp_path / "dns.json"
    DnsSimBackend(path).seed_zone(ZONE, [MX], serial=1)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_create, args=(str(path), p, 20)) for p in ("a", "b", "c")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    backend = DnsSimBackend(path)
    assert backend.serial(ZONE) == 1 + 60
    assert len(backend.rrsets(ZONE) or []) == 1 + 60
