"""The loader on valid input: the example, other valid fixtures, normalisation, and its safety bounds."""

from __future__ import annotations

import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller import errors
from controller.desired import loader, models, yamlsafe
from controller.desired.models import BatchState, RecordType

ROOT = Path(__file__).parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
MIGRATION = (FIXTURES / "base" / "migration.yaml").read_bytes()


def batch(name: str, body: str) -> bytes:
    return f"apiVersion: stagectl/v1\nkind: Batch\nmetadata: {{name: {name}}}\nspec:\n{body}".encode()


def test_the_example_loads_with_its_batches_members_and_records() -> None:
    state = loader.load_directory(ROOT / "desired", revision="abc123")
    assert state.name == "contoso"
    assert state.revision == "abc123"
    assert [(batch.name, batch.state, len(batch.members)) for batch in state.batches] == [
        ("Batch0-IT", BatchState.STARTED, 15),
        ("Batch1-EarlyAdopters", BatchState.STARTED, 60),
        ("Batch2-Sales", BatchState.PLANNED, 250),
        ("Batch3-Finance", BatchState.PLANNED, 200),
    ]
    assert state.batches[1].start_after == datetime(2026, 12, 1, 18, tzinfo=UTC)
    assert [(r.key, r.ttl, r.cutover) for r in state.records] == [
        ("contoso.com/@/MX", 3600, True),
        ("contoso.com/autodiscover/CNAME", 3600, True),
        ("contoso.com/@/TXT", 3600, False),
    ]
    assert state.records[2].spf == "v=spf1 include:spf.protection.outlook.com -all"
    assert state.policy.ttl_lead_time == timedelta(hours=48)
    assert state.migration.endpoint.credentials_ref == "env:ONPREM_MIGRATION_CREDENTIALS"
    assert "batches/batch2-sales.csv" in state.files
    assert state.digest.startswith("sha256:")
    assert str(state.batches[0].source) == f"{ROOT / 'desired'}/batches/batch0-it.yaml:6:9"


def test_every_example_address_is_at_contoso_and_unique() -> None:
    state = loader.load_directory(ROOT / "desired")
    keys = [member.key for batch in state.batches for member in batch.members]
    assert len(keys) == len(set(keys)) == 525
    assert all(key.endswith("@contoso.com") for key in keys)


@pytest.mark.parametrize("case", sorted(path.name for path in (FIXTURES / "valid").iterdir()))
def test_valid_fixture_loads(case: str) -> None:
    assert loader.load_directory(FIXTURES / "valid" / case).name


def test_addresses_keep_their_spelling_and_compare_lower_case() -> None:
    state = loader.load_directory(FIXTURES / "valid" / "multi-document")
    wave = state.batches[0]
    assert [member.address for member in wave.members] == ["Pat.OBrien@Fabrikam.com", "o'brien@fabrikam.com"]
    assert wave.members[0].key == "pat.obrien@fabrikam.com"


def test_zone_and_record_names_are_normalised() -> None:
    state = loader.load_directory(FIXTURES / "valid" / "multi-document")
    assert state.zones[0].name == "fabrikam.com"
    by_key = {record.key: record for record in state.records}
    assert by_key["fabrikam.com/www/AAAA"].values == ("2001:db8::10",)
    assert by_key["fabrikam.com/autodiscover/CNAME"].values == ("autodiscover.outlook.com.",)
    absolute = loader.load_directory(FIXTURES / "valid" / "absolute-names")
    assert [(record.name, record.type) for record in absolute.records] == [
        ("@", RecordType.MX),
        ("autodiscover", RecordType.CNAME),
    ]


def test_csv_with_bom_crlf_blank_lines_and_extra_columns() -> None:
    state = loader.load_directory(FIXTURES / "valid" / "csv-bom-crlf")
    assert [member.address for member in state.batches[0].members] == [
        "Adele.Vance@contoso.com",
        "Alex.Wilber@contoso.com",
    ]


def test_digest_covers_the_files_read_and_nothing_else() -> None:
    files = {"migration.yaml": MIGRATION, "notes.txt": b"ignored", "unused.csv": b"EmailAddress\n"}
    first = loader.load_files(files)
    assert first.files == ("migration.yaml",)
    assert loader.load_files({**files, "notes.txt": b"changed"}).digest == first.digest
    changed = loader.load_files({**files, "migration.yaml": MIGRATION + b"# comment\n"})
    assert changed.digest != first.digest


def test_a_hundred_active_batches_are_fine_and_removed_ones_do_not_count() -> None:
    files = {"migration.yaml": MIGRATION}
    for index in range(100):
        files[f"b{index}.yaml"] = batch(f"B{index}", "  state: planned\n  members: []\n")
    for index in range(20):
        files[f"r{index}.yaml"] = batch(f"R{index}", "  state: removed\n  members: []\n")
    assert len(loader.load_files(files).batches) == 120


def test_problems_of_several_files_come_at_once_in_file_order() -> None:
    files = {
        "migration.yaml": MIGRATION,
        "b.yaml": batch("B", "  state: started\n  members: [bad]\n"),
        "a.yaml": batch("A", "  state: nope\n  members: []\n"),
        "c.yaml": b"key: [unclosed\n",
    }
    with pytest.raises(errors.InvalidInput) as raised:
        loader.load_files(files, root="repo/desired")
    assert [problem.split(": ")[0] for problem in raised.value.problems] == [
        "repo/desired/a.yaml:5:10",
        "repo/desired/b.yaml:6:13",
        "repo/desired/c.yaml:2:1",
    ]
    assert str(raised.value) == "repo/desired: 3 problems in the desired state"


BILLION_LAUGHS = b"""apiVersion: stagectl/v1
kind: Batch
metadata: {name: lol}
spec:
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_a_billion_laughs_document_fails_fast_without_eating_memory() -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(errors.InvalidInput) as raised:
            loader.load_files({"migration.yaml": MIGRATION, "lol.yaml": BILLION_LAUGHS})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1
    assert peak < 5 * 1024 * 1024
    assert raised.value.problems == [
        "desired/lol.yaml:6:10: YAML aliases (*name) are not allowed: write the value out in full"
    ]


def test_files_over_the_size_bound_are_refused_before_parsing(tmp_path: Path) -> None:
    (tmp_path / "migration.yaml").write_bytes(MIGRATION)
    (tmp_path / "big.yaml").write_bytes(b"# " + b"x" * yamlsafe.MAX_YAML_BYTES + b"\n")
    (tmp_path / "b.yaml").write_bytes(batch("B", "  state: planned\n  membersCsv: big.csv\n"))
    (tmp_path / "big.csv").write_bytes(b"EmailAddress\n" + b"a@contoso.com\n" * 800_000)
    with pytest.raises(errors.InvalidInput) as raised:
        loader.load_directory(tmp_path)
    assert raised.value.problems == [
        f"{tmp_path}/big.csv:1:1: file is larger than 10 MiB",
        f"{tmp_path}/big.yaml:1:1: file is larger than 5 MiB",
    ]


def test_deep_nesting_is_refused() -> None:
    deep = b"apiVersion: stagectl/v1\nkind: Batch\nmetadata: " + b"[" * 200 + b"]" * 200 + b"\n"
    with pytest.raises(errors.InvalidInput, match="problem"):
        loader.load_files({"migration.yaml": MIGRATION, "deep.yaml": deep})


def test_files_outside_the_directory_are_not_read_through_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_bytes(b"not: read\n")
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "migration.yaml").write_bytes(MIGRATION)
    (desired / "link.yaml").symlink_to(outside)
    (desired / ".hidden.yaml").write_bytes(b"[broken\n")
    assert loader.load_directory(desired).files == ("migration.yaml",)


def test_a_missing_directory_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidInput, match="no such directory"):
        loader.load_directory(tmp_path / "nope")


def test_an_idn_zone_written_in_a_labels_loads() -> None:
    state = loader.load_directory(FIXTURES / "valid" / "idn-a-labels")
    assert state.zones[0].name == "xn--e1afmkfd.xn--p1ai"
    assert [record.key for record in state.records] == [
        "xn--e1afmkfd.xn--p1ai/@/MX",
        "xn--e1afmkfd.xn--p1ai/xn--80a1acny/A",
        "xn--e1afmkfd.xn--p1ai/www/A",
        "xn--e1afmkfd.xn--p1ai/autodiscover/CNAME",
        "xn--e1afmkfd.xn--p1ai/_autodiscover._tcp/SRV",
    ]
    assert state.records[0].values == ("10 xn--80a1acny.xn--e1afmkfd.xn--p1ai.",)
    assert state.migration.endpoint.email_address == "migration.admin@xn--e1afmkfd.xn--p1ai"
    assert [member.address for batch in state.batches for member in batch.members] == [
        "Anna@xn--e1afmkfd.xn--p1ai",
        "boris@xn--e1afmkfd.xn--p1ai",
    ]


def _downstream(state: models.DesiredState) -> object:
    """What the planner, the DNS wire and Exchange read of a desired state, without where it was written."""
    endpoint = state.migration.endpoint
    return (
        [zone.name for zone in state.zones],
        [(record.key, record.ttl, record.values) for record in state.records],
        [(batch.name, [member.address for member in batch.members]) for batch in state.batches],
        (endpoint.exchange_server, endpoint.rpc_proxy_server, endpoint.email_address),
        state.migration.notification_emails,
        state.migration.target_delivery_domain,
    )


def test_unicode_names_load_as_their_a_labels_so_everything_downstream_sees_one_spelling() -> None:
    unicode = loader.load_directory(FIXTURES / "valid" / "idn-unicode")
    a_labels = loader.load_directory(FIXTURES / "valid" / "idn-a-labels")
    assert _downstream(unicode) == _downstream(a_labels)
    # Unicode upper case is mapped to lower case (UTS #46) before the conversion, as ASCII is compared.
    assert unicode.migration.endpoint.exchange_server == "xn--80a1acny.xn--e1afmkfd.xn--p1ai"
    assert unicode.migration.notification_emails == ["Anna@xn--e1afmkfd.xn--p1ai"]


def test_a_unicode_name_that_is_ascii_after_mapping_keeps_nothing_unicode() -> None:
    zone = (
        "apiVersion: stagectl/v1\nkind: DnsZone\nmetadata: {name: ｃｏｎｔｏｓｏ.com}\nspec:\n"
        '  records: [{name: "ＷＷＷ", type: CNAME, ttl: 300, values: ["straße.contoso.com."]}]\n'
    )
    state = loader.load_files({"migration.yaml": MIGRATION, "z.yaml": zone.encode()})
    assert [(record.key, record.values) for record in state.records] == [
        ("contoso.com/www/CNAME", ("xn--strae-oqa.contoso.com.",))
    ]
