"""Every invalid fixture is rejected with exactly the problems of its expected.txt, at path:line:column."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controller import errors
from controller.desired import loader

FIXTURES = Path(__file__).parent / "fixtures"
CASES = sorted(path.name for path in (FIXTURES / "invalid").iterdir() if path.is_dir())
_PROBLEM = re.compile(r"^(?P<where>.+?:\d+:\d+|desired): (?P<message>.*)$", re.S)


def fixture_files(case: str) -> dict[str, bytes]:
    files = loader.read_directory(FIXTURES / "base")
    files.update(loader.read_directory(FIXTURES / "invalid" / case / "desired"))
    return files


def split(line: str) -> tuple[str, str]:
    match = _PROBLEM.match(line)
    assert match, f"not a path:line:column problem: {line!r}"
    return match["where"], match["message"]


def test_there_are_at_least_forty_invalid_fixtures() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES)
def test_invalid_fixture_names_each_problem_at_its_node(case: str) -> None:
    expected = (FIXTURES / "invalid" / case / "expected.txt").read_text().splitlines()
    with pytest.raises(errors.InvalidInput) as raised:
        loader.load_files(fixture_files(case), root="desired")
    problems = [split(problem) for problem in raised.value.problems]
    assert len(problems) == len(expected), "\n".join(raised.value.problems)
    for line in expected:
        where, fragment = split(line)
        assert any(at == where and fragment in message for at, message in problems), (
            f"{line!r} not among:\n" + "\n".join(raised.value.problems)
        )
