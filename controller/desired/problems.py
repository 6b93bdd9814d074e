"""The problems of one load of the desired state, each at the `file:line:column` it is about."""

from __future__ import annotations

from dataclasses import dataclass

from controller.desired import models, yamlsafe
from controller.desired.shown import printable


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return (
            f"{self.path}:{self.line}:{self.column}: {self.message}"
            if self.line
            else f"{self.path}: {self.message}"
        )


# Problems listed for one file: a 10 MB CSV of bad rows is named once per row up to here, then counted.
MAX_PER_FILE = 20


class Problems:
    """Every problem found under `root`, collected so that the loader raises once with all of them (the
    first `MAX_PER_FILE` of a file listed, the others counted)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.found: list[Problem] = []
        self._per_file: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self.found)

    def where(self, path: str) -> str:
        """`path` (relative to the desired directory) as messages name it."""
        return printable(f"{self.root}/{path}")

    def add(self, path: str, position: yamlsafe.Position, message: str) -> None:
        line, column = position
        self._keep(Problem(self.where(path), line, column, message))

    def at(self, source: models.Source, message: str) -> None:
        """A problem where an object was declared (the path of a `Source` already names the root)."""
        self._keep(Problem(source.path, source.line, source.column, message))

    def _keep(self, problem: Problem) -> None:
        count = self._per_file.get(problem.path, 0) + 1
        self._per_file[problem.path] = count
        if count <= MAX_PER_FILE:
            self.found.append(problem)

    def messages(self) -> list[str]:
        listed = [str(problem) for problem in sorted(self.found)]
        for path, count in sorted(self._per_file.items()):
            if count > MAX_PER_FILE:
                listed.append(f"{path}: {count - MAX_PER_FILE:,} more problems in this file are not listed")
        return listed
