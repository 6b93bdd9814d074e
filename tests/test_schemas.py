"""schemas/ holds exactly what `stagectl schema` generates; the example names its schema in a modeline."""

from __future__ import annotations

import json
import re
from pathlib import Path

from controller.commands import cli, schema

ROOT = Path(__file__).parent.parent


def test_schemas_directory_is_current() -> None:
    generated = schema.schema_files()
    committed = {path.name: path.read_text() for path in (ROOT / "schemas").glob("*.json")}
    assert committed == generated, "schemas/ is stale: run `make schemas` and commit the result"


def test_schema_command_writes_one_file_per_kind(tmp_path: Path) -> None:
    assert cli.main(["schema", "--out", str(tmp_path / "out")]) == 0
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert names == ["batch.schema.json", "dnszone.schema.json", "migration.schema.json"]
    batch = json.loads((tmp_path / "out" / "batch.schema.json").read_text())
    assert batch["additionalProperties"] is False
    spec = batch["$defs"]["BatchSpec"]["properties"]
    assert {"state", "members", "membersCsv", "startAfter"} <= set(spec)


def test_example_files_carry_the_modeline_to_their_schema() -> None:
    for path in (ROOT / "desired").rglob("*.yaml"):
        first = path.read_text().splitlines()[0]
        target = first.removeprefix("# yaml-language-server: $schema=")
        assert target != first, path
        assert (path.parent / target).resolve().is_file(), path


def test_the_schemas_accept_idn_names_in_unicode_and_in_a_labels() -> None:
    zone = json.loads((ROOT / "schemas" / "dnszone.schema.json").read_text())
    hostname = re.compile(zone["$defs"]["ZoneMetadata"]["properties"]["name"]["pattern"])
    for name in ("xn--e1afmkfd.xn--p1ai", "пример.рф", "contoso.com"):
        assert hostname.match(name), name
    assert not hostname.match("bad name.com")
    migration = json.loads((ROOT / "schemas" / "migration.schema.json").read_text())
    address = migration["$defs"]["Endpoint"]["properties"]["emailAddress"]
    assert address["format"] == "idn-email"
