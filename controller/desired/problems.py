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


class Problems:
    """Every problem found under `root`, collected so that the loader raises once with all of them."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.found: list[Problem] = []

    def __bool__(self) -> bool:
        return bool(self.found)

    def where(self, path: str) -> str:
        """`path` (relative to the desired directory) as messages name it."""
        return printable(f"{self.root}/{path}")

    def add(self, path: str, position: yamlsafe.Position, message: str) -> None:
        line, column = position
        self.found.append(Problem(self.where(path), line, column, message))

    def at(self, source: models.Source, message: str) -> None:
        """A problem where an object was declared (the path of a `Source` already names the root)."""
        self.found.append(Problem(source.path, source.line, source.column, message))

    def messages(self) -> list[str]:
        return [str(problem) for problem in sorted(self.found)]
