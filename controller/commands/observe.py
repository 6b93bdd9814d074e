"""`stagectl observe`: read Exchange and the managed DNS records and print the snapshot as JSON."""

from __future__ import annotations

import argparse
import sys

from controller.commands import common


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("observe", help="print what Exchange and DNS hold now, as snapshot JSON")
    common.add_desired_arguments(parser)
    common.add_backend_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    desired = common.load_desired(args)
    config = common.config_of(args)
    backends = common.backends_of(args, config)
    try:
        memory = common.load_memory(common.state_dir(args, config))
        snapshot, findings = common.observe_live(desired, backends, memory)
    finally:
        backends.close()
    for finding in findings:
        print(f"note: {finding}", file=sys.stderr)
    sys.stdout.write(snapshot.to_json() + "\n")
    return 0
