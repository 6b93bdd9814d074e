"""The hostile-input corpus (issue 14, item 4): desired-state revisions, each the good migration below with
one hostile change, and what the controller must say when it refuses it. Large and binary files are made
here, in code, not committed as fixtures.

A revision is refused with one sentence naming `file` (and `line` when one applies) and everything in
`names` (the object, the quoted value); nothing in `hidden` may appear (a secret, a raw control character,
a 4 MB name). A few revisions are valid but dangerous (`served=True`): they are served, and the plan says
why nothing is done to the batch.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.controller import (
    PILOT,
    PILOT_MEMBERS,
    WAVE,
    WAVE_MEMBERS,
    ZONE_YAML,
    batch_yaml,
    migration_yaml,
)

MIGRATION = "desired/migration.yaml"
PILOT_FILE = "desired/batches/pilot.yaml"
WAVE_FILE = "desired/batches/wave1.yaml"
WAVE_CSV = "desired/batches/wave1.csv"
ZONE = "desired/dns/contoso.com.yaml"
MB = 1024 * 1024

WAVE_YAML = f"""\
apiVersion: stagectl/v1
kind: Batch
metadata:
  name: {WAVE}
spec:
  state: planned
  membersCsv: wave1.csv
"""
WAVE_ROWS = "EmailAddress\n" + "".join(f"{member}\n" for member in WAVE_MEMBERS)


def good_tree() -> dict[str, str]:
    """The migration every revision starts from: the pilot started (inline members), the first wave
    planned (a CSV), the contoso.com zone with the MX cutover record.

    migration.yaml: 6 endpoint, 7 name, 9 exchangeServer, 12 authentication, 13 maxConcurrentMigrations,
    14 credentialsRef, 17 policy, 18 lowTtl, 19 ttlLeadTime. pilot.yaml: 1 apiVersion, 2 kind, 4 name,
    5 spec, 6 state, 7 members, 8-9 the members. wave1.yaml: 4 name, 6 state, 7 membersCsv; wave1.csv:
    1 the header, 2-4 the members. The zone: 7 the MX record, 8 type, 9 ttl.
    """
    return {
        MIGRATION: migration_yaml(),
        PILOT_FILE: batch_yaml(PILOT, PILOT_MEMBERS, state="started"),
        WAVE_FILE: WAVE_YAML,
        WAVE_CSV: WAVE_ROWS,
        ZONE: ZONE_YAML,
    }


GOOD = good_tree()


@dataclass(frozen=True)
class Link:
    """A symbolic link to `target`."""

    target: str


Content = str | bytes | Link


@dataclass(frozen=True)
class Revision:
    name: str
    covers: str  # the kind of hostile input, as issue 14 lists them
    write: Mapping[str, Content] = field(default_factory=dict)  # over the good tree
    delete: tuple[str, ...] = ()  # paths (files or directories) removed first
    raw: Mapping[bytes, bytes] = field(default_factory=dict)  # files whose names are bytes, not text
    file: str = ""  # the file the refusal names, as it names it
    line: int | None = None  # the line it names, when one applies
    names: tuple[str, ...] = ()  # what else the sentence must say
    hidden: tuple[str, ...] = ()  # what it must never say
    served: bool = False  # valid but dangerous: served, with the reason in the plan
    cheap: bool = True  # small enough for the `run --once` sample


def edit(path: str, old: str, new: str) -> dict[str, str]:
    """The good file at `path` with `old` (which must be there) replaced by `new`."""
    text = GOOD[path]
    assert old in text, f"{old!r} is not in {path}"
    return {path: text.replace(old, new, 1)}


def pilot_members(*members: str) -> dict[str, str]:
    """pilot.yaml with these inline members (line 8 on)."""
    quoted = "".join(f"    - {_double_quoted(member)}\n" for member in members)
    return edit(PILOT_FILE, "".join(f"    - {m}\n" for m in PILOT_MEMBERS), quoted)


def pilot_members_text(text: str) -> dict[str, str]:
    """pilot.yaml with its `members:` block (line 7 on) replaced by `text`."""
    block = "  members:\n" + "".join(f"    - {m}\n" for m in PILOT_MEMBERS)
    return edit(PILOT_FILE, block, text)


def pilot_named(name: str) -> dict[str, str]:
    """pilot.yaml with `name` (double-quoted YAML, escapes allowed) as its name, line 4."""
    return edit(PILOT_FILE, f"  name: {PILOT}\n", f"  name: {name}\n")


def wave_rows(*rows: str) -> dict[str, str]:
    """wave1.csv with these rows after the header (line 2 on)."""
    return {WAVE_CSV: "EmailAddress\n" + "".join(f"{row}\n" for row in rows)}


def _double_quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [" + ",".join([f"*{previous}"] * 9) + "]")
    return "apiVersion: stagectl/v1\nkind: Batch\n" + "\n".join(lines) + "\n"


def _big_member_list(count: int) -> str:
    rows = "".join(f"    - user{index:07d}@contoso.com\n" for index in range(count))
    head = f"apiVersion: stagectl/v1\nkind: Batch\nmetadata:\n  name: {PILOT}\nspec:\n  state: started\n"
    return f"{head}  members:\n{rows}"


def refused() -> Iterator[Revision]:
    """Every revision the controller must refuse, cheapest first within each kind."""
    # --- schema violations: wrong types, unknown keys, missing fields, invalid states and TTLs ---------
    ttl = "      ttl: 3600\n      values:"
    for name, value in (
        ("ttl-a-list", "[3600]"),
        ("ttl-a-word", "an hour"),
        ("ttl-zero", "0"),
        ("ttl-negative", "-300"),
        ("ttl-over-a-week", "604801"),
        ("ttl-a-fraction", "300.5"),
    ):
        yield Revision(
            name,
            "schema: invalid TTL",
            edit(ZONE, ttl, f"      ttl: {value}\n      values:"),
            file=ZONE,
            line=9,
            names=("spec.records[0].ttl",),
        )
    yield Revision(
        "ttl-five-thousand-digits",
        "schema: invalid TTL (Python's int parser has a 4,300-digit limit)",
        edit(ZONE, ttl, f"      ttl: {'9' * 5000}\n      values:"),
        file=ZONE,
        line=9,
        names=("cannot read", "5,000 characters"),
        hidden=("9" * 200,),
    )
    yield Revision(
        "low-ttl-over-an-hour",
        "schema: invalid TTL",
        edit(MIGRATION, "lowTtl: 300", "lowTtl: 7200"),
        file=MIGRATION,
        line=18,
        names=("spec.policy.lowTtl",),
    )
    yield Revision(
        "lead-time-not-a-duration",
        "schema: wrong type",
        edit(MIGRATION, "ttlLeadTime: 48h", "ttlLeadTime: 48 hours"),
        file=MIGRATION,
        line=19,
        names=("ttlLeadTime", "'48 hours'"),
    )
    yield Revision(
        "state-unknown",
        "schema: invalid state",
        edit(PILOT_FILE, "state: started", "state: sideways"),
        file=PILOT_FILE,
        line=6,
        names=("spec.state", "'sideways'"),
    )
    yield Revision(
        "state-capitalised",
        "schema: invalid state",
        edit(PILOT_FILE, "state: started", "state: Started"),
        file=PILOT_FILE,
        line=6,
        names=("spec.state", "'Started'"),
    )
    yield Revision(
        "state-a-list",
        "schema: wrong type",
        edit(PILOT_FILE, "state: started", "state: [started]"),
        file=PILOT_FILE,
        line=6,
        names=("spec.state",),
    )
    yield Revision(
        "members-a-string",
        "schema: wrong type",
        pilot_members_text("  members: Emily.Scott@contoso.com\n"),
        file=PILOT_FILE,
        line=7,
        names=("spec.members",),
    )
    yield Revision(
        "batch-name-a-number",
        "schema: wrong type",
        pilot_named("12345"),
        file=PILOT_FILE,
        line=4,
        names=("metadata.name",),
    )
    yield Revision(
        "unknown-key",
        "schema: unknown key",
        edit(PILOT_FILE, "  state: started\n", "  state: started\n  autoComplete: true\n"),
        file=PILOT_FILE,
        line=7,
        names=("spec.autoComplete", "unknown field"),
    )
    yield Revision(
        "unknown-top-level-key",
        "schema: unknown key",
        {MIGRATION: GOOD[MIGRATION] + "status: {}\n"},
        file=MIGRATION,
        line=24,
        names=("unknown field 'status'",),
    )
    yield Revision(
        "missing-credentials-ref",
        "schema: missing required field",
        edit(MIGRATION, "    credentialsRef: env:ONPREM_MIGRATION_CREDENTIALS\n", ""),
        file=MIGRATION,
        line=6,
        names=("spec.endpoint", "'credentialsRef'"),
    )
    yield Revision(
        "missing-state",
        "schema: missing required field",
        edit(PILOT_FILE, "  state: started\n", ""),
        file=PILOT_FILE,
        line=5,
        names=("missing required field 'state'",),
    )
    yield Revision(
        "missing-kind",
        "schema: missing required field",
        edit(PILOT_FILE, "kind: Batch\n", ""),
        file=PILOT_FILE,
        line=1,
        names=("missing kind",),
    )
    yield Revision(
        "unknown-api-version",
        "schema: invalid value",
        edit(PILOT_FILE, "apiVersion: stagectl/v1", "apiVersion: stagectl/v2"),
        file=PILOT_FILE,
        line=1,
        names=("'stagectl/v2'",),
    )
    yield Revision(
        "unknown-kind",
        "schema: invalid value",
        edit(PILOT_FILE, "kind: Batch", "kind: Mailbox"),
        file=PILOT_FILE,
        line=2,
        names=("unknown kind 'Mailbox'",),
    )
    yield Revision(
        "document-a-list",
        "schema: wrong type",
        {"desired/batches/list.yaml": f"- {PILOT}\n- {WAVE}\n"},
        file="desired/batches/list.yaml",
        line=1,
        names=("must be a mapping",),
    )
    yield Revision(
        "authentication-kerberos",
        "schema: invalid value",
        edit(MIGRATION, "authentication: Basic", "authentication: Kerberos"),
        file=MIGRATION,
        line=12,
        names=("spec.endpoint.authentication", "'Kerberos'"),
    )
    yield Revision(
        "password-inline",
        "schema: a secret in git",
        edit(MIGRATION, "    credentialsRef:", "    password: Hunter2-inline!\n    credentialsRef:"),
        file=MIGRATION,
        line=14,
        names=("spec.endpoint.password", "never belong in git"),
        hidden=("Hunter2-inline!",),
    )
    yield Revision(
        "credentials-ref-is-the-secret",
        "schema: a secret in git",
        edit(MIGRATION, "env:ONPREM_MIGRATION_CREDENTIALS", "CONTOSO\\\\migadmin:Hunter2-ref!"),
        file=MIGRATION,
        line=14,
        names=("spec.endpoint.credentialsRef", "not a reference"),
        hidden=("Hunter2-ref!",),
    )
    yield Revision(
        "start-after-without-zone",
        "schema: invalid value",
        edit(PILOT_FILE, "  state: started\n", "  state: started\n  startAfter: 2026-12-01T18:00:00\n"),
        file=PILOT_FILE,
        line=7,
        names=("spec.startAfter",),
    )
    yield Revision(
        "start-after-month-13",
        "schema: invalid value",
        edit(PILOT_FILE, "  state: started\n", "  state: started\n  startAfter: 2026-13-45T18:00:00Z\n"),
        file=PILOT_FILE,
        line=7,
        names=("2026-13-45",),
    )
    yield Revision(
        "record-type-soa",
        "schema: invalid value",
        edit(ZONE, "type: MX", "type: SOA"),
        file=ZONE,
        line=8,
        names=("unsupported record type 'SOA'",),
    )
    yield Revision(
        "members-and-csv",
        "schema: both member lists",
        edit(WAVE_FILE, "  membersCsv:", "  members: [Kenji.Green@contoso.com]\n  membersCsv:"),
        file=WAVE_FILE,
        line=8,
        names=(f"batch {WAVE}", "exactly one of members and membersCsv"),
    )
    yield Revision(
        "started-without-members",
        "schema: missing members",
        pilot_members_text("  members: []\n"),
        file=PILOT_FILE,
        line=7,
        names=(f"batch {PILOT} is started but has no members",),
    )

    # --- YAML that is not plain data --------------------------------------------------------------------
    yield Revision(
        "billion-laughs",
        "YAML alias bomb",
        {"desired/batches/lol.yaml": _billion_laughs()},
        file="desired/batches/lol.yaml",
        line=4,
        names=("aliases",),
    )
    anchored = "x" * MB
    yield Revision(
        "alias-quadratic",
        "YAML alias bomb: one 1 MB string referenced 4,000 times",
        {
            "desired/batches/quad.yaml": f"apiVersion: stagectl/v1\nkind: Batch\nbig: &big {anchored}\n"
            "refs: [" + ", ".join(["*big"] * 4000) + "]\n"
        },
        file="desired/batches/quad.yaml",
        line=4,
        names=("aliases",),
        hidden=("x" * 200,),
    )
    yield Revision(
        "merge-key",
        "YAML alias",
        edit(
            MIGRATION,
            "  policy:\n",
            "  defaults: &defaults {lowTtl: 300}\n  policy:\n    <<: *defaults\n",
        ),
        file=MIGRATION,
        line=19,
        names=("aliases",),
    )
    yield Revision(
        "python-object-tag",
        "YAML: a tag that constructs objects",
        edit(PILOT_FILE, "state: started", "state: !!python/object/apply:os.system ['calc.exe']"),
        file=PILOT_FILE,
        line=6,
        names=("!!python/object/apply:os.system", "plain data only"),
    )
    yield Revision(
        "binary-tag",
        "YAML: a tag",
        pilot_named("!!binary UGlsb3Q="),
        file=PILOT_FILE,
        line=4,
        names=("!!binary",),
    )
    yield Revision(
        "custom-tag",
        "YAML: a tag",
        edit(MIGRATION, "credentialsRef: env:", "credentialsRef: !Ref env:"),
        file=MIGRATION,
        line=14,
        names=("!Ref",),
    )
    yield Revision(
        "unclosed-bracket",
        "YAML syntax",
        edit(PILOT_FILE, "state: started", "state: [started"),
        file=PILOT_FILE,
        line=7,
        names=("YAML syntax",),
    )
    yield Revision(
        "tab-indented",
        "YAML syntax",
        edit(PILOT_FILE, "  state: started", "\tstate: started"),
        file=PILOT_FILE,
        line=6,
        names=("YAML syntax",),
    )
    yield Revision(
        "duplicate-key",
        "duplicate keys",
        edit(PILOT_FILE, "  state: started\n", "  state: started\n  state: removed\n"),
        file=PILOT_FILE,
        line=7,
        names=("duplicate key 'state' (first at line 6)",),
    )
    yield Revision(
        "duplicate-spec",
        "duplicate keys",
        {PILOT_FILE: GOOD[PILOT_FILE] + "spec:\n  state: removed\n"},
        file=PILOT_FILE,
        line=10,
        names=("duplicate key 'spec' (first at line 5)",),
    )
    yield Revision(
        "nested-deeper-than-64",
        "deep nesting",
        edit(PILOT_FILE, "state: started", "state: " + "[" * 100 + "]" * 100),
        file=PILOT_FILE,
        line=6,
        names=("nested deeper than 64 levels",),
    )
    yield Revision(
        "ten-thousand-lists",
        "deep nesting: 10,000 levels of [[[...]]]",
        edit(PILOT_FILE, "state: started", "state: " + "[" * 10_000 + "]" * 10_000),
        file=PILOT_FILE,
        line=6,
        names=("nesting depth",),
    )
    yield Revision(
        "ten-thousand-mappings",
        "deep nesting: 10,000 levels of {a:{a:...}}",
        edit(PILOT_FILE, "state: started", "state: " + "{a: " * 10_000 + "1" + "}" * 10_000),
        file=PILOT_FILE,
        line=6,
        names=("nesting depth",),
    )
    yield Revision(
        "ten-thousand-block-lists",
        "deep nesting: 10,000 levels of block lists (- - - ...)",
        edit(PILOT_FILE, "state: started", "state:\n" + "  " + "- " * 10_000 + "x"),
        file=PILOT_FILE,
        line=7,
        names=("nesting depth",),
    )
    yield Revision(
        "empty-file",
        "an empty file",
        {PILOT_FILE: ""},
        file=PILOT_FILE,
        line=1,
        names=("no YAML document",),
    )
    yield Revision(
        "only-a-comment",
        "a file that is only a comment",
        {PILOT_FILE: "# the pilot is paused for the holidays\n"},
        file=PILOT_FILE,
        line=1,
        names=("no YAML document",),
    )
    yield Revision(
        "only-document-markers",
        "an empty document",
        {"desired/batches/blank.yaml": "---\n...\n---\n"},
        file="desired/batches/blank.yaml",
        line=1,
        names=("no YAML document",),
    )
    yield Revision(
        "two-migrations-in-one-file",
        "two Migration documents",
        {MIGRATION: GOOD[MIGRATION] + "---\n" + GOOD[MIGRATION]},
        file=MIGRATION,
        line=25,
        names=("a second Migration document",),
    )
    yield Revision(
        "two-migrations-in-two-files",
        "two Migration documents",
        {"desired/zz-migration.yaml": GOOD[MIGRATION]},
        file="desired/zz-migration.yaml",
        line=1,
        names=("a second Migration document",),
    )

    # --- binary data and wrong encodings --------------------------------------------------------------
    yield Revision(
        "nul-bytes",
        "binary data: NUL bytes",
        {PILOT_FILE: GOOD[PILOT_FILE].replace("  state: started", "  state: sta\0\0rted").encode()},
        file=PILOT_FILE,
        line=6,
        names=("NUL byte",),
    )
    yield Revision(
        "random-bytes",
        "binary data: random bytes",
        {PILOT_FILE: _random_bytes(64 * 1024, seed=14)},
        file=PILOT_FILE,
        names=("UTF-8",),
    )
    yield Revision(
        "png-as-yaml",
        "binary data: an image saved over the file",
        {PILOT_FILE: b"\x89PNG\r\n\x1a\n" + _random_bytes(4096, seed=15)},
        file=PILOT_FILE,
        names=("binary data",),
    )
    for name, encoded, what in (
        ("utf-16-le-with-bom", "\ufeff" + GOOD[PILOT_FILE], "utf-16-le"),
        ("utf-16-be-with-bom", "\ufeff" + GOOD[PILOT_FILE], "utf-16-be"),
        ("utf-32-with-bom", "\ufeff" + GOOD[PILOT_FILE], "utf-32-le"),
    ):
        yield Revision(
            name,
            "wrong encoding: UTF-16/32 with a byte order mark",
            {PILOT_FILE: encoded.encode(what)},
            file=PILOT_FILE,
            line=1,
            names=("byte order mark", "save the file as UTF-8"),
        )
    yield Revision(
        "utf-16-without-bom",
        "wrong encoding: UTF-16 without a byte order mark",
        {PILOT_FILE: GOOD[PILOT_FILE].encode("utf-16-le")},
        file=PILOT_FILE,
        line=1,
        names=("NUL byte", "UTF-16"),
    )
    yield Revision(
        "latin-1",
        "wrong encoding: Latin-1 bytes",
        {
            MIGRATION: GOOD[MIGRATION]
            .replace("mail.contoso.com\n", "mail.contoso.com  # Zürich\n", 1)
            .encode("latin-1")
        },
        file=MIGRATION,
        line=9,
        names=("not UTF-8 (byte 0xfc",),
    )
    yield Revision(
        "windows-1252-quotes",
        "wrong encoding: Windows-1252 bytes",
        {PILOT_FILE: GOOD[PILOT_FILE].replace("name: Pilot", "name: \u201cPilot\u201d").encode("cp1252")},
        file=PILOT_FILE,
        line=4,
        names=("not UTF-8 (byte 0x93",),
    )
    yield Revision(
        "escape-sequence-in-a-comment",
        "control characters",
        edit(PILOT_FILE, "  state: started\n", "  state: started  # \x1b[2J\x1b[31mcleared\n"),
        file=PILOT_FILE,
        line=6,
        names=("control character '\\x1b'",),
        hidden=("\x1b",),
    )
    yield Revision(
        "csv-utf-16",
        "wrong encoding: a UTF-16 CSV (Excel's 'Unicode text')",
        {WAVE_CSV: WAVE_ROWS.encode("utf-16")},
        file=WAVE_CSV,
        line=1,
        names=("byte order mark",),
    )
    yield Revision(
        "csv-latin-1",
        "wrong encoding: a Latin-1 CSV",
        {
            WAVE_CSV: (
                WAVE_ROWS.replace("EmailAddress", "EmailAddress,Name", 1)
                .replace("Zoe.Allen@contoso.com", "Zoe.Allen@contoso.com,Zoë Allen")
                .replace("Kenji.Green@contoso.com", "Kenji.Green@contoso.com,Kenji")
                .replace("Liam.Suzuki@contoso.com", "Liam.Suzuki@contoso.com,Liam")
            ).encode("latin-1")
        },
        file=WAVE_CSV,
        line=3,
        names=("not UTF-8 (byte 0xeb",),
    )
    yield Revision(
        "csv-nul-bytes",
        "binary data: NUL bytes in a CSV",
        {WAVE_CSV: WAVE_ROWS.replace("Zoe.Allen", "Zoe\0Allen").encode()},
        file=WAVE_CSV,
        line=3,
        names=("NUL byte",),
    )
    yield Revision(
        "csv-random-bytes",
        "binary data: random bytes as a CSV",
        {WAVE_CSV: _random_bytes(64 * 1024, seed=16)},
        file=WAVE_CSV,
        names=("UTF-8",),
    )

    # --- CSV formula injection and PowerShell in addresses and names ------------------------------------
    for name, cell, names in (
        ("csv-formula-cmd", "=cmd|' /C calc'!A0", ("formula", "=cmd|' /C calc'!A0")),
        ("csv-formula-plus", "+Zoe.Allen@contoso.com", ("formula",)),
        ("csv-formula-minus", "-Zoe.Allen@contoso.com", ("formula",)),
        ("csv-formula-at", "@SUM(1+1)*cmd|' /C calc'!A0", ("formula",)),
    ):
        yield Revision(
            name,
            "CSV formula injection in a member address",
            wave_rows(WAVE_MEMBERS[0], cell, WAVE_MEMBERS[2]),
            file=WAVE_CSV,
            line=3,
            names=names,
        )
    yield Revision(
        "inline-formula",
        "CSV formula injection in a member address",
        pilot_members('=HYPERLINK("http://x.example")@contoso.com', PILOT_MEMBERS[1]),
        file=PILOT_FILE,
        line=8,
        names=("spec.members[0]", "formula"),
    )
    for name, address in (
        ("address-subexpression", "$(Remove-Mailbox -Identity *)@contoso.com"),
        ("address-variable", "$env:USERNAME@contoso.com"),
        ("address-backtick", "Emily`nScott@contoso.com"),
        ("address-semicolon", "emily;Remove-Mailbox@contoso.com"),
        ("address-pipe", "emily|Remove-Mailbox@contoso.com"),
    ):
        yield Revision(
            name,
            "PowerShell syntax in a member address",
            pilot_members(address, PILOT_MEMBERS[1]),
            file=PILOT_FILE,
            line=8,
            names=("spec.members[0]",),
        )
    for name, batch in (
        ("name-subexpression", '"$(Stop-Computer -Force)"'),
        ("name-backtick", '"Pilot`r`nRemove"'),
        ("name-semicolon", '"Pilot; Remove-MigrationBatch -Identity *"'),
        ("name-pipe", '"Pilot | Remove-MigrationBatch"'),
    ):
        yield Revision(
            name,
            "PowerShell syntax in a batch name",
            pilot_named(batch),
            file=PILOT_FILE,
            line=4,
            names=("metadata.name", "may hold only letters"),
        )
    yield Revision(
        "endpoint-name-subexpression",
        "PowerShell syntax in a name",
        edit(MIGRATION, "    name: StagedEndpoint", '    name: "$(Get-Credential)"'),
        file=MIGRATION,
        line=7,
        names=("spec.endpoint.name",),
    )

    # --- names: long, huge, control characters, look-alikes ---------------------------------------------
    yield Revision(
        "name-65-characters",
        "a name over 64 characters",
        pilot_named("P" * 65),
        file=PILOT_FILE,
        line=4,
        names=("longer than 64 characters",),
    )
    yield Revision(
        "name-4-mb",
        "a 4 MB batch name",
        pilot_named("B" * (4 * MB)),
        file=PILOT_FILE,
        line=4,
        names=("4,194,304 characters", "longer than 64"),
        hidden=("B" * 200,),
        cheap=False,
    )
    yield Revision(
        "name-escape-sequence",
        "control characters in a name",
        pilot_named('"Pilot\\e[2J\\e[31m"'),
        file=PILOT_FILE,
        line=4,
        names=("\\x1b[2J",),
        hidden=("\x1b",),
    )
    yield Revision(
        "name-zero-width-space",
        "an invisible character in a name",
        pilot_named('"Pi\\u200blot"'),
        file=PILOT_FILE,
        line=4,
        names=("U+200B ZERO WIDTH SPACE",),
    )
    yield Revision(
        "name-right-to-left-override",
        "a bidirectional override in a name",
        pilot_named('"Pilot\\u202etxt.exe"'),
        file=PILOT_FILE,
        line=4,
        names=("U+202E",),
        hidden=("\u202e",),
    )
    yield Revision(
        "name-cyrillic-look-alike",
        "Unicode look-alike: a second batch 'Pilоt' with a Cyrillic о",
        {"desired/batches/pilot-2.yaml": batch_yaml("Pil\u043et", ("Rae.Owens@contoso.com",))},
        file="desired/batches/pilot-2.yaml",
        line=4,
        names=("U+043E CYRILLIC SMALL LETTER O",),
    )
    yield Revision(
        "name-fullwidth-look-alike",
        "Unicode look-alike: NFKC-equal batch name 'Ｐｉｌｏｔ'",
        {
            "desired/batches/pilot-2.yaml": batch_yaml(
                "\uff30\uff49\uff4c\uff4f\uff54", ("Rae.Owens@contoso.com",)
            )
        },
        file="desired/batches/pilot-2.yaml",
        line=4,
        names=("FULLWIDTH LATIN CAPITAL LETTER P",),
    )
    yield Revision(
        "name-only-case-differs",
        "a batch in two files (names compared without case)",
        {"desired/batches/zz-pilot.yaml": batch_yaml(PILOT.upper(), ("Rae.Owens@contoso.com",))},
        file="desired/batches/zz-pilot.yaml",
        line=4,
        names=("'PILOT' is also used at",),
    )
    yield Revision(
        "batch-in-two-files",
        "a batch in two files",
        {"desired/batches/pilot-copy.yaml": GOOD[PILOT_FILE]},
        file="desired/batches/pilot.yaml",
        line=4,
        names=("'Pilot' is also used at", "pilot-copy.yaml"),
    )
    yield Revision(
        "member-in-two-batches",
        "members in two batches",
        wave_rows(*WAVE_MEMBERS, PILOT_MEMBERS[0]),
        file=WAVE_CSV,
        line=5,
        names=(f"{PILOT_MEMBERS[0]} is a member of both",),
    )
    yield Revision(
        "member-cyrillic-domain",
        "Unicode look-alike: a member of the pilot again, with a Cyrillic о in contoso",
        wave_rows(*WAVE_MEMBERS, PILOT_MEMBERS[0].replace("contoso", "c\u043entoso")),
        file=WAVE_CSV,
        line=5,
        names=("mixes CYRILLIC and LATIN",),
    )
    yield Revision(
        "member-cyrillic-local-part",
        "Unicode look-alike: a Cyrillic Е in a member address",
        wave_rows(*WAVE_MEMBERS, "\u0415" + PILOT_MEMBERS[0][1:]),
        file=WAVE_CSV,
        line=5,
        names=("U+0415 CYRILLIC CAPITAL LETTER IE",),
    )
    yield Revision(
        "member-fullwidth-domain",
        "Unicode look-alike: NFKC-equal domain (ｃｏｎｔｏｓｏ) makes the same member twice",
        wave_rows(
            *WAVE_MEMBERS, PILOT_MEMBERS[0].replace("contoso", "\uff43\uff4f\uff4e\uff54\uff4f\uff53\uff4f")
        ),
        file=WAVE_CSV,
        line=5,
        names=("is a member of both",),
    )
    yield Revision(
        "too-many-batches",
        "more batches than Exchange Online holds",
        {
            f"desired/batches/many/b{index:03d}.yaml": batch_yaml(
                f"B{index:03d}", (), state="planned"
            ).replace("  members:\n", "  members: []\n")
            for index in range(101)
        },
        file="desired/batches/many/b100.yaml",
        line=4,
        names=("more than 100 batches",),
    )
    yield Revision(
        "members-2001-inline",
        "more members than a batch holds",
        pilot_members(*(f"user{index:04d}@contoso.com" for index in range(2001))),
        file=PILOT_FILE,
        line=8,
        names=("has 2,001 members",),
    )

    # --- paths outside the desired tree, symbolic links, file names ------------------------------------
    for name, reference in (
        ("csv-dot-dot", "../../etc/passwd"),
        ("csv-absolute", "/etc/passwd"),
        ("csv-backslashes", "..\\\\..\\\\Windows\\\\win.ini"),
        ("csv-dot-dot-inside-out", "../batches/../../../etc/shadow"),
    ):
        yield Revision(
            name,
            "a CSV path leading outside the desired tree",
            edit(WAVE_FILE, "membersCsv: wave1.csv", f'membersCsv: "{reference}"'),
            file=WAVE_FILE,
            line=7,
            names=("outside the desired directory",),
        )
    yield Revision(
        "csv-symlink-to-passwd",
        "a symbolic link leading outside the desired tree",
        {WAVE_CSV: Link("/etc/passwd")},
        file=f"{WAVE_CSV} at",
        names=("symbolic link",),
    )
    yield Revision(
        "yaml-symlink-outside",
        "a symbolic link leading outside the desired tree",
        {"outside/pilot.yaml": GOOD[PILOT_FILE], PILOT_FILE: Link("../../outside/pilot.yaml")},
        file=f"{PILOT_FILE} at",
        names=("symbolic link",),
    )
    yield Revision(
        "directory-symlink",
        "a symbolic link to a directory",
        {"desired/batches": Link("/etc")},
        delete=("desired/batches",),
        file="desired/batches at",
        names=("symbolic link",),
    )
    yield Revision(
        "desired-a-symlink",
        "the desired path a symbolic link",
        {"elsewhere/migration.yaml": GOOD[MIGRATION], "desired": Link("elsewhere")},
        delete=("desired",),
        file="desired at",
        names=("symbolic link",),
    )
    yield Revision(
        "desired-a-file",
        "the desired path a file",
        {"desired": GOOD[MIGRATION]},
        delete=("desired",),
        file="desired at",
        names=("is a file, not the directory",),
    )
    yield Revision(
        "desired-gone",
        "no desired tree at all",
        delete=("desired",),
        file="/desired",
        names=("no Migration document",),
    )
    yield Revision(
        "file-name-not-utf-8",
        "a non-UTF-8 file name",
        raw={b"desired/batches/\xff\xfe.yaml": batch_yaml("Wave2", ("Rae.Owens@contoso.com",)).encode()},
        file=r"desired/batches/\\xff\\xfe.yaml",  # the source quotes the escaped name with repr()
        names=("not UTF-8",),
    )
    yield Revision(
        "file-name-latin-1",
        "a non-UTF-8 file name (Latin-1)",
        raw={b"desired/batches/m\xfcller.yaml": batch_yaml("Wave2", ("Rae.Owens@contoso.com",)).encode()},
        file=r"desired/batches/m\\xfcller.yaml",
        names=("not UTF-8",),
    )
    yield Revision(
        "file-name-escape-sequence",
        "control characters in a file name",
        {"desired/batches/evil\x1b[2J.yaml": batch_yaml("Wave2", ("Rae.Owens@contoso.com",))},
        file="desired/batches/evil\\x1b[2J.yaml",
        names=("control or invisible characters",),
        hidden=("\x1b",),
    )
    yield Revision(
        "file-name-newline",
        "control characters in a file name",
        {"desired/batches/wave2\n.yaml": batch_yaml("Wave2", ("Rae.Owens@contoso.com",))},
        file="desired/batches/wave2\\n.yaml",
        names=("control or invisible characters",),
    )

    # --- size: 10 MB files and files just under the bounds ----------------------------------------------
    yield Revision(
        "yaml-10-mb",
        "a 10 MB YAML file",
        {PILOT_FILE: _big_member_list(300_000)},
        file=PILOT_FILE,
        line=1,
        names=("larger than 5 MiB",),
        cheap=False,
    )
    yield Revision(
        "yaml-just-under-5-mb",
        "a 4.9 MB YAML file of 150,000 members (under the size bound)",
        {PILOT_FILE: _big_member_list(150_000)},
        file=PILOT_FILE,
        names=("more than 100,000 values in one file",),
        cheap=False,
    )
    yield Revision(
        "yaml-value-bomb",
        "5 MB of [1,1,1,...]: 2.5 million values (took 19 s and 1.46 GB before the node bound)",
        {PILOT_FILE: "a: [" + ",".join(["1"] * 2_600_000) + "]\n"},
        file=PILOT_FILE,
        line=1,
        names=("more than 100,000 values in one file",),
        cheap=False,
    )
    yield Revision(
        "csv-10-mb",
        "a 10 MB CSV",
        {WAVE_CSV: "EmailAddress\n" + "".join(f"user{index:07d}@contoso.com\n" for index in range(450_000))},
        file=WAVE_CSV,
        line=1,
        names=("larger than 10 MiB",),
        cheap=False,
    )
    yield Revision(
        "csv-200000-members",
        "a 5 MB CSV of 200,000 valid members (under the size bound)",
        wave_rows(*(f"user{index:07d}@contoso.com" for index in range(200_000))),
        file=WAVE_FILE,
        line=7,
        names=(f"batch {WAVE} has 200,000 members",),
        cheap=False,
    )
    yield Revision(
        "csv-200000-bad-rows",
        "a 5 MB CSV of 200,000 bad rows: the problems are counted, not listed",
        wave_rows(*(f"user{index:07d}@@contoso.com" for index in range(200_000))),
        file=WAVE_CSV,
        line=2,
        names=("'user0000000@@contoso.com' is not a valid SMTP address", "and 10 more (stagectl validate"),
        cheap=False,
    )
    yield Revision(
        "csv-one-9-mb-cell",
        "a CSV cell of 9 MB",
        {WAVE_CSV: "EmailAddress\n" + "a" * (9 * MB) + "\n"},
        file=WAVE_CSV,
        line=2,
        names=("field larger than field limit",),
        cheap=False,
    )
    yield Revision(
        "tree-over-32-mb",
        "a desired tree of 40 MB (four 10 MB files)",
        {f"desired/blobs/b{index}.csv": _random_bytes(10 * MB, seed=20 + index) for index in range(4)},
        file="desired at",
        names=("more than 32 MiB",),
        cheap=False,
    )


def dangerous() -> Iterator[Revision]:
    """Valid but dangerous: served, nothing done to the batch, the reason in the plan."""
    yield Revision(
        "backwards-started-to-planned",
        "a backward state transition",
        edit(PILOT_FILE, "state: started", "state: planned"),
        served=True,
    )
    yield Revision(
        "started-batch-deleted",
        "a started batch deleted from the repository",
        delete=(PILOT_FILE,),
        served=True,
    )
    yield Revision(
        "every-batch-deleted",
        "every batch deleted: the vanished started one still holds the cutover",
        delete=(PILOT_FILE, WAVE_FILE, WAVE_CSV),
        served=True,
    )
    yield Revision(
        "removed-before-the-cutover",
        "an early removed: a started batch set to removed before it completed and before the cutover",
        edit(PILOT_FILE, "state: started", "state: removed"),
        served=True,
    )


def accepted() -> Iterator[Revision]:
    """Looks hostile, is not: served as if it were the good tree."""
    yield Revision(
        "utf-8-bom",
        "a UTF-8 byte order mark (Windows editors write one): accepted",
        {
            PILOT_FILE: b"\xef\xbb\xbf" + GOOD[PILOT_FILE].encode(),
            WAVE_CSV: b"\xef\xbb\xbf" + WAVE_ROWS.encode(),
            MIGRATION: b"\xef\xbb\xbf" + GOOD[MIGRATION].encode(),
        },
        served=True,
    )


def corpus() -> list[Revision]:
    return [*refused(), *accepted(), *dangerous()]


def lay_out(root: Path, revision: Revision | None = None) -> None:
    """Make the working tree at `root` the good tree with `revision`'s change (None: the good tree)."""
    for entry in root.iterdir():
        if entry.name == ".git":
            continue
        _remove(entry)
    _write(root, GOOD)
    if revision is None:
        return
    for path in revision.delete:
        _remove(root / path)
    _write(root, revision.write)
    for raw, content in revision.raw.items():
        target = os.path.join(os.fsencode(root), raw)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(content)


def _write(root: Path, files: Mapping[str, Content]) -> None:
    for name, content in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            _remove(target)
        if isinstance(content, Link):
            target.symlink_to(content.target)
        elif isinstance(content, str):
            target.write_text(content, encoding="utf-8")
        else:
            target.write_bytes(content)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()
