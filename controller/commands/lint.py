"""`stagectl lint [DIR] --inventory inventory.csv [--permissions permissions.csv]`: warn where a desired state
breaks the runbook's rules (`controller.readiness.lint`). Exit 0 with warnings; 1 only for invalid input."""

from __future__ import annotations

import argparse
from pathlib import Path

from controller.commands.init import add_planning_arguments, read_file
from controller.desired import documents, kinds, loader
from controller.desired.problems import Problems
from controller.readiness import inventory, lint


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "lint", help="warn where batches break the runbook's rules (exit 0; 1 only when input is invalid)"
    )
    parser.add_argument(
        "directory", nargs="?", default="desired", type=Path, metavar="DIR", help="default: desired/"
    )
    parser.add_argument("--inventory", required=True, type=Path, metavar="CSV", help="Get-Mailbox statistics")
    parser.add_argument("--permissions", type=Path, metavar="CSV", help="Get-MailboxPermission export")
    add_planning_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    files = loader.read_directory(args.directory)
    root = str(args.directory).rstrip("/") or "."
    loader.load_files(files, root=root)  # an invalid desired state is refused here, every problem listed
    problems = Problems(root)
    found = documents.parse(files, problems)
    declared = [batch for item in found.batches if (batch := kinds.batch(item, files, problems))]
    owned = inventory.read(
        read_file(args.inventory), read_file(args.permissions) if args.permissions else None
    )
    warnings, count = lint.check(declared, owned, max_batch_gb=args.max_batch_gb, pilot=args.pilot_department)
    for line in [*owned.warnings, *warnings]:
        print(line)
    print(f"lint: {count:,} warning{'' if count == 1 else 's'} about the batches (warnings never block)")
    return 0
