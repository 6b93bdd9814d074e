"""`stagectl observe`: read Exchange and the managed DNS records and print the snapshot as JSON."""

from __future__ import annotations

import argparse
import sys

from controller.commands import common


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("observe", help="print what Exchange and DNS hold now, as snapshot JSON")
    common.add_desired_arguments(parser)
    common.add_backend_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    desired = common.load_desired(args)
    snapshot = common.observe_once(args, desired)
    sys.stdout.write(snapshot.to_json() + "\n")
    return 0
