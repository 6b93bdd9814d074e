"""`stagectl validate` in process: summary, problems, exit codes, and no traceback for any input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.commands import cli

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "desired"
EXAMPLE_FILES = sorted(path.relative_to(EXAMPLE).as_posix() for path in EXAMPLE.rglob("*") if path.is_file())


def test_the_example_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out == "valid: 1 migration, 4 batches (525 members), 1 zone (3 records)\n"


def test_json_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(EXAMPLE), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["valid"] is True
    assert (summary["batches"], summary["members"], summary["records"]) == (4, 525, 3)


def test_default_directory_is_desired(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert cli.main(["validate"]) == 0
    assert capsys.readouterr().out.startswith("valid: ")


def test_problems_one_per_line_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    desired = tmp_path / "desired"
    shutil.copytree(EXAMPLE, desired)
    path = desired / "batches" / "batch0-it.yaml"
    path.write_text(path.read_text().replace("state: started", "state: running"))
    (desired / "dns" / "contoso.com.yaml").write_text("kind: [\n")
    assert cli.main(["validate", str(desired)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{desired}/batches/batch0-it.yaml:8:10: spec.state: unknown state 'running'")
    assert err[1].startswith(f"{desired}/dns/contoso.com.yaml:2:1: YAML syntax")
    assert err[2] == "invalid: 2 problems"


def test_problems_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.yaml").write_text("apiVersion: stagectl/v1\nkind: Nope\n")
    assert cli.main(["validate", str(tmp_path), "--format", "json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is False
    assert out["problems"][0] == {
        "path": str(tmp_path),
        "line": None,
        "column": None,
        "message": "no Migration document (kind: Migration) found",
    }
    assert out["problems"][1] == {
        "path": f"{tmp_path}/m.yaml",
        "line": 2,
        "column": 7,
        "message": "unknown kind 'Nope': expected one of Migration, Batch, DnsZone",
    }


def test_a_missing_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(tmp_path / "absent")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'absent'}: no such directory" in err
    assert "Traceback" not in err


# --- random mutations of the example never produce a traceback -----------------------------

mutation = st.sampled_from(["delete-line", "scalar", "duplicate-line", "truncate", "bytes", "indent"])
replacement = st.one_of(
    st.text(max_size=20),
    st.integers(-(10**6), 10**12).map(str),
    st.just("[1, [2, {a: b}]]"),
    st.just("!!python/object:os.system x"),
    st.just("*anchor"),
    st.just("{x: 1}"),
    st.just("''"),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    file=st.sampled_from(EXAMPLE_FILES),
    kind=mutation,
    where=st.floats(0, 1),
    value=replacement,
    noise=st.binary(min_size=1, max_size=12),
)
def test_mutated_example_is_valid_or_cleanly_invalid(
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    file: str,
    kind: str,
    where: float,
    value: str,
    noise: bytes,
) -> None:
    desired = tmp_path_factory.mktemp("desired")
    shutil.copytree(EXAMPLE, desired, dirs_exist_ok=True)
    path = desired / file
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    index = min(int(where * len(lines)), len(lines) - 1)
    if kind == "delete-line":
        del lines[index]
    elif kind == "scalar":
        line = lines[index].decode()
        key, colon, _ = line.partition(":")
        lines[index] = (f"{key}: {value}\n" if colon else f"{value}\n").encode()
    elif kind == "duplicate-line":
        lines.insert(index, lines[index])
    elif kind == "indent":
        lines[index] = b"   " + lines[index]
    data = b"".join(lines)
    if kind == "truncate":
        data = data[: int(where * len(data))]
    elif kind == "bytes":
        cut = int(where * len(data))
        data = data[:cut] + noise + data[cut:]
    path.write_bytes(data)
    capsys.readouterr()
    code = cli.main(["validate", str(desired)])
    err = capsys.readouterr().err
    assert code in (0, 1)
    assert "Traceback" not in err and "internal error" not in err, err
    if code == 1:
        assert err.strip(), "invalid without a problem"


def test_an_idn_desired_state_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(ROOT / "tests" / "fixtures" / "valid" / "idn-unicode")]) == 0
    assert capsys.readouterr().out == "valid: 1 migration, 2 batches (2 members), 1 zone (5 records)\n"


def test_an_invalid_idn_name_is_one_sentence_at_its_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(EXAMPLE, tmp_path, dirs_exist_ok=True)
    zone = tmp_path / "dns" / "contoso.com.yaml"
    zone.write_text(zone.read_text().replace('["autodiscover.outlook.com."]', '["xn--abc.com."]'))
    assert "xn--abc.com." in zone.read_text()
    assert cli.main(["validate", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    line = next(n for n, text in enumerate(zone.read_text().splitlines(), 1) if "xn--abc" in text)
    assert err[0].startswith(f"{zone}:{line}:")
    assert "'xn--abc.com.' is not a valid IDNA 2008 name: 'xn--abc' is not a valid A-label" in err[0]
    assert err[1:] == ["invalid: 1 problem"]
