"""`stagectl validate [DIR]`: load and validate the desired state, list every problem."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from controller import errors
from controller.desired import loader
from controller.desired.models import DesiredState

_PROBLEM = re.compile(r"^(?P<path>.+?):(?P<line>\d+):(?P<column>\d+): (?P<message>.*)$", re.S)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("validate", help="validate the desired state (exit 0 valid, 1 invalid)")
    parser.add_argument(
        "directory",
        nargs="?",
        default="desired",
        type=Path,
        metavar="DIR",
        help="the desired directory (default: desired/)",
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(func=run)


def summary(state: DesiredState) -> dict[str, int]:
    return {
        "migrations": 1,
        "batches": len(state.batches),
        "members": sum(len(batch.members) for batch in state.batches),
        "zones": len(state.zones),
        "records": len(state.records),
    }


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else ("es" if noun.endswith("ch") else "s"))


def run(args: argparse.Namespace) -> int:
    try:
        state = loader.load_directory(args.directory)
    except errors.InvalidInput as error:
        if args.format == "json":
            print(
                json.dumps({"valid": False, "problems": [_structured(p) for p in error.problems]}, indent=2)
            )
        else:
            for problem in error.problems:
                print(problem, file=sys.stderr)
            print(f"invalid: {_plural(len(error.problems), 'problem')}", file=sys.stderr)
        return 1
    counts = summary(state)
    if args.format == "json":
        print(
            json.dumps(
                {"valid": True, **counts, "digest": state.digest, "files": list(state.files)}, indent=2
            )
        )
    else:
        print(
            f"valid: {_plural(counts['migrations'], 'migration')}, {_plural(counts['batches'], 'batch')} "
            f"({_plural(counts['members'], 'member')}), {_plural(counts['zones'], 'zone')} "
            f"({_plural(counts['records'], 'record')})"
        )
    return 0


def _structured(problem: str) -> dict[str, object]:
    match = _PROBLEM.match(problem)
    if match is None:
        path, _, message = problem.partition(": ")
        return {"path": path, "line": None, "column": None, "message": message or problem}
    return {
        "path": match["path"],
        "line": int(match["line"]),
        "column": int(match["column"]),
        "message": match["message"],
    }
