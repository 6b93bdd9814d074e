"""`stagectl init`: batches from a generated 5,000-mailbox inventory checked rule by rule, hostile rows, the
validate round trip, determinism, and today's DNS read from a real BIND (or not, within the time bound)."""

from __future__ import annotations

import csv
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller import errors
from controller.commands import cli
from controller.desired import loader
from controller.readiness import grouping, inventory
from tests.support.bind import bind_zone
from tests.support.inventory import DOMAIN, Generated, generate

GB = 1024**3
HEADER = (
    "PrimarySmtpAddress,DisplayName,Department,Office,Manager,RecipientTypeDetails,TotalItemSize,ItemCount\n"
)


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    return generate(tmp_path_factory.mktemp("inventory"), mailboxes=5000, grants=12000)


@pytest.fixture(scope="module")
def scaffolded(org: Generated, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("repo")
    assert init(org.mailboxes, org.permissions, out) == 0
    return out


def init(mailboxes: Path, permissions: Path | None, out: Path, *extra: str) -> int:
    args = ["init", "--domain", DOMAIN, "--mailboxes", str(mailboxes), "--out", str(out), *extra]
    if permissions is not None:
        args += ["--permissions", str(permissions)]
    if "--dns-server" not in extra:
        args.append("--no-dns")
    return cli.main(args)


def batches_of(out: Path) -> dict[str, list[str]]:
    """{batch name: lower-cased member addresses} as the scaffold wrote them, in start order."""
    state = loader.load_directory(out / "desired")
    return {batch.name: [member.key for member in batch.members] for batch in state.batches}


def comments(text: str) -> str:
    """The comment lines of a file as one line of prose (comments are wrapped)."""
    return " ".join(line[2:] for line in text.splitlines() if line.startswith("# "))


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


# --- the plan from a 5,000-mailbox inventory ----------------------------------------------------------


def test_the_scaffold_validates_and_follows_the_runbook(org: Generated, scaffolded: Path) -> None:
    found = inventory.read(
        (str(org.mailboxes), org.mailboxes.read_bytes()), (str(org.permissions), org.permissions.read_bytes())
    )
    mailboxes = {mailbox.key: mailbox for mailbox in found.mailboxes}
    batches = batches_of(scaffolded)
    batch_of = {member: name for name, members in batches.items() for member in members}
    assert sorted(batch_of) == sorted(mailboxes)  # everyone once
    names = list(batches)
    assert names == sorted(names)
    # The pilot first, mostly IT; every batch within 2,000 members and the budget.
    assert names[0].startswith("Batch01-Pilot-IT")
    pilot = [mailboxes[key].department for key in batches[names[0]]]
    assert sum(department == "IT" for department in pilot) * 2 > len(pilot)
    for members in batches.values():
        assert len(members) <= 2000
        assert sum(mailboxes[key].size for key in members) <= grouping.DEFAULT_MAX_BATCH_GB * GB
    # Permission groups that fit a batch are whole.
    parent = {key: key for key in mailboxes}

    def root(key: str) -> str:
        while parent[key] != key:
            key = parent[key]
        return key

    for grant in found.grants:
        parent[root(grant.identity)] = root(grant.user)
    groups: dict[str, list[str]] = {}
    for key in mailboxes:
        groups.setdefault(root(key), []).append(key)
    small = [
        members
        for members in groups.values()
        if 1 < len(members) <= 2000 and sum(mailboxes[k].size for k in members) <= 500 * GB
    ]
    assert small
    for members in small:
        assert len({batch_of[key] for key in members}) == 1, members
    # The crossing grants listed are exactly the grants whose two sides are in different batches.
    with (scaffolded / "crossing-grants.csv").open() as handle:
        listed = [(row["Identity"], row["User"], int(row["Line"])) for row in csv.DictReader(handle)]
    crossing = [
        (g.identity, g.user, g.line) for g in found.grants if batch_of[g.identity] != batch_of[g.user]
    ]
    assert listed == crossing
    assert 0 < len(crossing) < len(found.grants) * 0.05
    # The largest mailboxes with no grant come last, smallest first.
    tied = {g.identity for g in found.grants} | {g.user for g in found.grants}
    large = [k for k, m in mailboxes.items() if m.size >= 10 * GB and k not in tied]
    assert large
    assert names[-1].endswith("-Large")
    tail = [key for name in names if name.endswith("-Large") for key in batches[name]]
    assert sorted(tail) == sorted(large)
    assert [mailboxes[k].size for k in tail] == sorted(mailboxes[k].size for k in tail)


def test_each_batch_file_says_why_it_holds_whom(scaffolded: Path) -> None:
    pilot = (scaffolded / "desired" / "batches" / "batch01-pilot-it.yaml").read_text()
    assert pilot.startswith("# yaml-language-server: $schema=../../schemas/batch.schema.json\n")
    assert "# The IT pilot: IT migrates first" in pilot
    assert "members," in pilot and "of the 500.0 GB budget" in pilot
    others = sorted((scaffolded / "desired" / "batches").glob("batch0[2-9]-*.yaml"))
    assert any("Grouped by department" in path.read_text() for path in others)
    assert any(
        "In org-chart order, so that managers stay with their direct reports" in p.read_text() for p in others
    )
    migration = (scaffolded / "desired" / "migration.yaml").read_text()
    assert migration.startswith("# yaml-language-server: $schema=../schemas/migration.schema.json\n")
    assert "credentialsRef: env:ONPREM_MIGRATION_CREDENTIALS" in migration and "TODO" in migration
    assert (scaffolded / "schemas" / "batch.schema.json").is_file()


def test_the_output_is_deterministic(org: Generated, scaffolded: Path, tmp_path: Path) -> None:
    assert init(org.mailboxes, org.permissions, tmp_path) == 0
    first = {p.relative_to(scaffolded): p.read_bytes() for p in scaffolded.rglob("*") if p.is_file()}
    second = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert first == second


def test_the_output_names_the_crossing_grants(
    org: Generated, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert init(org.mailboxes, org.permissions, tmp_path) == 0
    out = capsys.readouterr().out
    assert "Batch01-Pilot-IT" in out and "The IT pilot" in out
    assert "grants crossing batches:" in out and "crossing-grants.csv" in out


def test_an_existing_desired_directory_is_refused(
    org: Generated, scaffolded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert init(org.mailboxes, org.permissions, scaffolded) == 1
    assert "already holds files" in capsys.readouterr().err


# --- permission groups -----------------------------------------------------------------------------


def star(tmp_path: Path, grantees: int, departments: tuple[str, ...] = ("Sales",)) -> tuple[Path, Path]:
    rows = [f"shared@{DOMAIN},Shared,,Paris,,SharedMailbox,1000,1\n"]
    rows += [
        f"u{n:05d}@{DOMAIN},U {n},{departments[n % len(departments)]},Paris,,UserMailbox,1000,1\n"
        for n in range(grantees)
    ]
    grants = [f"shared@{DOMAIN},u{n:05d}@{DOMAIN},FullAccess\n" for n in range(grantees)]
    return (
        write(tmp_path / "inventory.csv", HEADER + "".join(rows)),
        write(tmp_path / "permissions.csv", "Identity,User,AccessRights\n" + "".join(grants)),
    )


@pytest.mark.parametrize("departments", [("Sales",), ("Sales", "Finance", "Legal")])
def test_a_shared_mailbox_with_3000_grantees_is_cut_with_the_fewest_crossings(
    tmp_path: Path, departments: tuple[str, ...]
) -> None:
    mailboxes, permissions = star(tmp_path, 3000, departments)
    assert init(mailboxes, permissions, tmp_path / "repo") == 0
    batches = batches_of(tmp_path / "repo")
    holding = next(members for members in batches.values() if f"shared@{DOMAIN}" in members)
    assert len(holding) == 2000  # the mailbox with 1,999 grantees: 1,001 grants cross, the fewest possible
    crossing = (tmp_path / "repo" / "crossing-grants.csv").read_text().splitlines()
    assert len(crossing) == 1 + 1001


def test_a_permission_cycle_stays_in_one_batch(tmp_path: Path) -> None:
    rows = [f"{who}@{DOMAIN},{who},Sales,Paris,,UserMailbox,1000,1\n" for who in ("ann", "bob", "cat", "dan")]
    grants = (
        f"ann@{DOMAIN},bob@{DOMAIN},Delegate\n"
        f"bob@{DOMAIN},cat@{DOMAIN},FullAccess\n"
        f"cat@{DOMAIN},ann@{DOMAIN},SendAs\n"
    )
    mailboxes = write(tmp_path / "inventory.csv", HEADER + "".join(rows))
    permissions = write(tmp_path / "permissions.csv", "Identity,User,AccessRights\n" + grants)
    assert init(mailboxes, permissions, tmp_path / "repo", "--max-batch-gb", "0.000003") == 0
    batches = batches_of(tmp_path / "repo")
    assert any(sorted(m) == [f"ann@{DOMAIN}", f"bob@{DOMAIN}", f"cat@{DOMAIN}"] for m in batches.values())
    assert not (tmp_path / "repo" / "crossing-grants.csv").exists()


def test_a_manager_cycle_and_a_leaver_manager_are_no_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mailboxes = write(
        tmp_path / "inventory.csv",
        HEADER
        + f"ann@{DOMAIN},Ann,IT,Paris,bob@{DOMAIN},UserMailbox,1000,1\n"
        + f"bob@{DOMAIN},Bob,IT,Paris,ann@{DOMAIN},UserMailbox,1000,1\n"
        + f"cat@{DOMAIN},Cat,Sales,Paris,gone@{DOMAIN},UserMailbox,1000,1\n",
    )
    assert init(mailboxes, None, tmp_path / "repo") == 0
    err = capsys.readouterr().err
    assert f"inventory.csv:4:1: warning: manager gone@{DOMAIN} of cat@{DOMAIN} is not in the inventory" in err
    assert list(batches_of(tmp_path / "repo")) == ["Batch01-Pilot-IT", "Batch02-Sales"]


# --- hostile rows ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1288490188", 1288490188),
        ("1.2 GB (1,288,490,188 bytes)", 1288490188),
        ("1,2 GB (1.288.490.188 bytes)", 1288490188),  # a German shell
        ("1.2 GB (1 288 490 188 bytes)", 1288490188),
        ("1258291KB", 1258291 * 1024),  # Exchange 2007
        ("512 B (512 bytes)", 512),
        ("", 0),
        ("1.5 GB", int(1.5 * GB)),
        ("lots", None),
        ("-5", None),
    ],
)
def test_sizes_as_exchange_writes_them(text: str, size: int | None) -> None:
    assert inventory.parse_size(text) == size


def test_hostile_cells_are_data_never_formulas_or_yaml(tmp_path: Path) -> None:
    mailboxes = write(
        tmp_path / "inventory.csv",
        "#TYPE Selected.Microsoft.Exchange.Data.Mapi.MailboxStatistics\n"
        + HEADER.replace("ItemCount", "ItemCount,Extra")
        + f'ann@{DOMAIN},"=HYPERLINK(""http://x"")","=cmd|\' /C calc\'!A0",Paris,,UserMailbox,'
        + '"1.2 GB (1,288,490,188 bytes)","1,234",x\n'
        + f'bob@{DOMAIN},"Bob\nTwo lines","Sales\x1b[31m\nkind: Migration",Paris,,SharedMailbox,0,0,y\n',
    )
    assert init(mailboxes, None, tmp_path / "repo") == 0
    batches = batches_of(tmp_path / "repo")  # the YAML still loads: nothing escaped a comment
    assert sorted(key for members in batches.values() for key in members) == [
        f"ann@{DOMAIN}",
        f"bob@{DOMAIN}",
    ]
    names = list(batches)
    assert all(name.replace("-", "").isalnum() for name in names)
    for path in (tmp_path / "repo" / "desired" / "batches").glob("*.yaml"):
        text = path.read_text()
        assert "\x1b" not in text and "\nkind: Migration" not in text  # escaped, inside one comment line
        assert "Sales\\x1b[31m kind: Migration" in text


def test_a_utf8_bom_and_utf16_export_are_read(tmp_path: Path) -> None:
    text = HEADER + f"ann@{DOMAIN},Ann,Ventes é,Paris,,UserMailbox,10,1\n"
    for encoding in ("utf-8-sig", "utf-16"):
        path = write(tmp_path / f"{encoding}.csv", text, encoding)
        found = inventory.read((str(path), path.read_bytes()))
        assert [(m.address, m.department) for m in found.mailboxes] == [(f"ann@{DOMAIN}", "Ventes é")]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            HEADER + f"ann@{DOMAIN},Ann,IT,Paris,,UserMailbox,10,1\n" + "bob@contoso.com,B\xe9b\n",
            "inventory.csv:3:1: not UTF-8 (byte 0xe9)",
        ),
        ("DisplayName,Department\nAnn,IT\n", "inventory.csv:1:1: no PrimarySmtpAddress column in the header"),
        (
            HEADER + f"=cmd|' /C calc'!A0@{DOMAIN},x,IT,Paris,,UserMailbox,10,1\n",
            "inventory.csv:2:1: PrimarySmtpAddress:",
        ),
        (HEADER + f"ann@{DOMAIN},Ann,IT\n", "inventory.csv:2:1: row has 3 fields, the header has 8"),
        (
            HEADER + f"ann@{DOMAIN},Ann,IT,Paris,,UserMailbox,lots,1\n",
            "TotalItemSize 'lots' of ann@contoso.com is not a size",
        ),
        (
            HEADER + f"ann@{DOMAIN},Ann,IT,Paris,,MailUser,10,1\n",
            "RecipientTypeDetails 'MailUser' of ann@contoso.com is not a mailbox",
        ),
        (
            HEADER
            + f"ann@{DOMAIN},Ann,IT,Paris,,UserMailbox,10,1\nANN@{DOMAIN},A,IT,Paris,,UserMailbox,1,1\n",
            "inventory.csv:3:1: ANN@contoso.com is listed twice (also on line 2)",
        ),
        (
            HEADER + f"ann@{DOMAIN},Ann,IT,Paris,not an address,UserMailbox,10,1\n",
            "inventory.csv:2:1: Manager of ann@contoso.com:",
        ),
    ],
)
def test_a_malformed_row_is_one_error_naming_file_and_line(
    tmp_path: Path, body: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "inventory.csv"
    path.write_bytes(body.encode("latin-1") if "\xe9" in body else body.encode())
    assert init(path, None, tmp_path / "repo") == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and message in err[0] and str(path) in err[0], err
    assert not (tmp_path / "repo" / "desired").exists()


def test_missing_optional_columns_are_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "inventory.csv", f"PrimarySmtpAddress,Extra\nann@{DOMAIN},1\n")
    assert init(path, None, tmp_path / "repo") == 0
    err = capsys.readouterr().err
    assert (
        "inventory.csv:1:1: warning: no Department, Office, Manager, RecipientTypeDetails, TotalItemSize "
        "column" in err
    )


def test_permission_rows_leavers_system_principals_and_bad_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mailboxes = write(
        tmp_path / "inventory.csv",
        HEADER
        + f"ann@{DOMAIN},Ann Smith,IT,Paris,,UserMailbox,10,1\n"
        + f"shared@{DOMAIN},Team Box,,Paris,,SharedMailbox,10,1\n",
    )
    permissions = write(
        tmp_path / "permissions.csv",
        "Identity,User,AccessRights,Deny,IsInherited\n"
        f"Team Box,ann@{DOMAIN},{{FullAccess}},False,False\n"  # by display name, as Get-MailboxPermission
        f'shared@{DOMAIN},NT AUTHORITY\\SELF,"FullAccess, ReadPermission",False,False\n'
        f"shared@{DOMAIN},gone@{DOMAIN},SendAs,False,False\n"
        f"shared@{DOMAIN},ann@{DOMAIN},ReadPermission,False,False\n"
        f"shared@{DOMAIN},ann@{DOMAIN},FullAccess,True,False\n",
    )
    found = inventory.read(
        (str(mailboxes), mailboxes.read_bytes()), (str(permissions), permissions.read_bytes())
    )
    assert [(g.identity, g.user, g.rights, g.line) for g in found.grants] == [
        (f"shared@{DOMAIN}", f"ann@{DOMAIN}", (inventory.Right.FULL_ACCESS,), 2)
    ]
    assert found.warnings == (
        f"{permissions}:4:1: warning: grantee 'gone@{DOMAIN}' is not in the inventory (a leaver?): the grant "
        "is not kept",
    )
    bad = write(tmp_path / "bad.csv", "Identity,User,AccessRights\nshared@contoso.com,,FullAccess\n")
    with pytest.raises(errors.InvalidInput) as raised:
        inventory.read((str(mailboxes), mailboxes.read_bytes()), (str(bad), bad.read_bytes()))
    assert raised.value.problems == [f"{bad}:2:1: empty User: each row is one grant"]


# --- today's DNS -------------------------------------------------------------------------------------


def small_inventory(tmp_path: Path) -> Path:
    return write(tmp_path / "inventory.csv", HEADER + f"ann@{DOMAIN},Ann,IT,Paris,,UserMailbox,10,1\n")


def test_the_dns_zone_holds_what_bind_serves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with bind_zone(extra_records="autodiscover 3600 IN CNAME mail.contoso.com.\n") as bind:
        started = time.monotonic()
        code = init(small_inventory(tmp_path), None, tmp_path / "repo", "--dns-server", bind.primary.address)
    assert code == 0 and time.monotonic() - started < 5
    zone = (tmp_path / "repo" / "desired" / "dns" / "contoso.com.yaml").read_text()
    assert "as its own server answered" in comments(zone)
    state = loader.load_directory(tmp_path / "repo" / "desired")
    records = {(r.name, r.type.value): (r.ttl, r.values, r.spf, r.cutover) for r in state.records}
    assert records == {
        ("@", "MX"): (3600, ("10 mail.contoso.com.",), None, False),
        ("autodiscover", "CNAME"): (3600, ("mail.contoso.com.",), None, False),
        ("@", "TXT"): (3600, (), "v=spf1 mx -all", False),  # the MS= token is not managed
    }
    assert "warning" not in capsys.readouterr().err


def test_an_a_record_for_autodiscover_is_named_not_managed(tmp_path: Path) -> None:
    with bind_zone(extra_records="autodiscover 3600 IN A 192.0.2.80\n") as bind:
        assert (
            init(small_inventory(tmp_path), None, tmp_path / "repo", "--dns-server", bind.primary.address)
            == 0
        )
    zone = (tmp_path / "repo" / "desired" / "dns" / "contoso.com.yaml").read_text()
    assert "autodiscover is an A record (192.0.2.80), not managed here" in " ".join(
        line.strip().removeprefix("# ") for line in zone.splitlines()
    )
    assert {r.type.value for r in loader.load_directory(tmp_path / "repo" / "desired").records} == {
        "MX",
        "TXT",
    }


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A UDP socket on loopback that reads questions and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def refusing_server() -> str:
    """A loopback port where nothing listens: the kernel refuses at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.mark.parametrize("server", ["silent_server", "refusing_server"])
def test_unreachable_dns_is_a_zone_to_fill_in_and_a_warning_within_seconds(
    tmp_path: Path, server: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    address = request.getfixturevalue(server)
    started = time.monotonic()
    assert init(small_inventory(tmp_path), None, tmp_path / "repo", "--dns-server", address) == 0
    assert time.monotonic() - started < 5
    assert f"warning: DNS not read through {address}" in capsys.readouterr().err
    zone = (tmp_path / "repo" / "desired" / "dns" / "contoso.com.yaml").read_text()
    assert "fill in the records contoso.com serves today" in comments(zone)
    assert loader.load_directory(tmp_path / "repo" / "desired").records == ()


def test_a_resolver_by_name_and_a_bad_pilot_pattern_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory_csv = small_inventory(tmp_path)
    assert init(inventory_csv, None, tmp_path / "repo", "--dns-server", "dns.example.net") == 1
    assert "give the resolver's address" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        init(inventory_csv, None, tmp_path / "repo", "--pilot-department", "(IT")
    assert exited.value.code == 2
    assert "is not a regular expression" in capsys.readouterr().err
