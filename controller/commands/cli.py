"""`stagectl`: argument parsing and the mapping of failures to exit codes; each command lives in
`controller/commands/<name>.py` and exposes `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from controller import errors

# One module per command; a command's module adds its own parser and sets `func(args) -> int`.
COMMANDS = (
    "validate",
    "schema",
    "audit",
    "observe",
    "plan",
    "apply",
    "sim_gateway",
    "sim",
    "run",
    "status",
    "serve",
    "init",
    "lint",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stagectl", description=__doc__.split(";")[0])
    parser.add_argument("--debug", action="store_true", help="show a traceback on failure")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"controller.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except errors.StagectlError as error:
        if args.debug:
            traceback.print_exc()
        for problem in getattr(error, "problems", [str(error)]):
            print(problem, file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a bug of ours: one line, the traceback only with --debug
        if args.debug:
            raise
        print(
            f"stagectl: internal error: {type(error).__name__}: {error} (run with --debug for details)",
            file=sys.stderr,
        )
        return 1
