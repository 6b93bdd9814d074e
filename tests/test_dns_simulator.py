"""The DNS simulator's state file: serials, hand edits, and locking shared by processes."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from controller.commands import cli
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


def spf_swap(previous: RRset, values: list[str]) -> DnsAction:
    return DnsAction(
        zone=ZONE,
        name="@",
        type="TXT",
        ttl=previous.ttl,
        values=tuple(values),
        previous_ttl=previous.ttl,
        previous_values=tuple(previous.values),
        object=f"dns/{ZONE}/@/TXT",
        reason="test",
        kind="update",
    )


def test_txt_is_kept_as_character_strings_and_compared_joined(tmp_path: Path) -> None:
    path = tmp_path / "dns.json"
    backend = DnsSimBackend(path)
    # As in a zone file: quoted character-strings, here one SPF string split in two; or plain text.
    backend.seed_zone(ZONE, [RRset(name="@", type="TXT", ttl=3600, values=['"v=spf1 mx " "-all"', "MS=ms1"])])
    [txt] = backend.observe({ZONE: [("@", "TXT")]}).zones[ZONE] or []
    assert txt.values == ["MS=ms1", "v=spf1 mx -all"]  # joined, unquoted: the planner sees the old SPF
    backend.apply(spf_swap(txt, ["MS=ms1", "v=spf1 include:spf.protection.outlook.com -all"]))
    held = json.loads(path.read_text())["zones"][ZONE]["rrsets"][0]["values"]
    assert held == ['"MS=ms1"', '"v=spf1 include:spf.protection.outlook.com -all"']  # one SPF record


def test_stagectl_sim_seeds_the_dns_simulator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dns.json"
    records = ["@ 3600 MX 10 mail.contoso.com.", '@ 3600 TXT "v=spf1 mx -all"', '@ 3600 TXT "MS=" "ms1"']
    assert cli.main(["sim", "dns-seed", "--state", str(path), "--zone", ZONE, *records]) == 0
    observed = DnsSimBackend(path).observe({ZONE: [("@", "MX"), ("@", "TXT")]}).zones[ZONE]
    assert observed == [MX, RRset(name="@", type="TXT", ttl=3600, values=["MS=ms1", "v=spf1 mx -all"])]
    assert cli.main(["sim", "dns-seed", "--state", str(path), "--zone", ZONE, "@ soon TXT x"]) == 1
    assert "'@ soon TXT x': expected NAME TTL TYPE DATA" in capsys.readouterr().err


def test_an_unknown_zone_says_why(tmp_path: Path) -> None:
    backend = DnsSimBackend(tmp_path / "dns.json")
    backend.seed_zone(ZONE, [MX])
    backend.set_reachable(ZONE, False)
    result = backend.observe({ZONE: [("@", "MX")], "fabrikam.com": [("@", "MX")]})
    assert result.errors == {
        ZONE: "the primary could not be read (unreachable)",
        "fabrikam.com": "the zone is not served there",
    }
