"""Hostile desired state: what a message quotes of user data is escaped and bounded."""

from __future__ import annotations

import pytest

from controller import errors
from controller.desired import loader
from controller.desired.shown import SHOWN, printable, shown

MIGRATION = """apiVersion: stagectl/v1
kind: Migration
metadata: {name: contoso}
spec:
  endpoint: {name: StagedEndpoint, exchangeServer: mail.contoso.com, rpcProxyServer: mail.contoso.com,
             credentialsRef: env:ONPREM}
"""


def batch(name: str) -> bytes:
    return (
        f"apiVersion: stagectl/v1\nkind: Batch\nmetadata: {{name: {name}}}\n"
        "spec: {state: planned, members: [a@contoso.com]}\n"
    ).encode()


def test_a_four_megabyte_batch_name_is_quoted_in_eighty_characters() -> None:
    huge = "B" * (4 * 1024 * 1024)
    with pytest.raises(errors.InvalidInput) as refused:
        loader.load_files({"migration.yaml": MIGRATION.encode(), "b.yaml": batch(huge)})
    text = "\n".join(refused.value.problems)
    assert len(text) < 1000, len(text)
    assert "4,194,304 characters" in text and "longer than 64" in text


def test_control_characters_in_a_file_name_are_escaped() -> None:
    with pytest.raises(errors.InvalidInput) as refused:
        loader.load_files({"migration.yaml": MIGRATION.encode(), "evil\x1b[2J.yaml": batch("Bad_Name")})
    text = "\n".join(refused.value.problems)
    assert "\x1b" not in text and "evil\\x1b[2J.yaml" in text


def test_shown_and_printable() -> None:
    assert shown("abc") == "'abc'" and shown("a\nb") == "'a\\nb'"
    long = shown("x" * 1000)
    assert len(long) < SHOWN + 30 and long.endswith("(1,000 characters)")
    assert printable("plain/path.yaml") == "plain/path.yaml" and printable("a\tb") == "a\\tb"
