"""`stagectl plan`: what apply would do, what waits and what a gate blocks; read-only."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from controller import errors
from controller.commands import common, reviewed
from controller.model.snapshot import Snapshot
from controller.planner import render
from controller.planner.plan import plan
from controller.runtime.observe import unknown


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("plan", help="show the actions that would converge Exchange and DNS")
    common.add_desired_arguments(parser)
    common.add_backend_arguments(parser)
    parser.add_argument("--observed", type=Path, help="plan against this snapshot instead of observing")
    parser.add_argument("--format", choices=sorted(render.RENDERERS), default="text")
    parser.add_argument("--force", action="store_true", help="let the change-size gate pass")
    parser.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 2 when there are changes, 3 when part of the state could not be read",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    desired = common.load_desired(args)
    if args.observed is not None:
        snapshot = _read_snapshot(args.observed)
        now = args.now or snapshot.observedAt
    else:
        snapshot = common.observe_once(args, desired)
        now = snapshot.observedAt
    result = plan(desired, snapshot, now, force=args.force)
    unread = unknown(snapshot)
    sys.stdout.write(render.RENDERERS[args.format](result, unread))
    # Kept so that `apply --checksum` can name what changed since this plan was reviewed.
    directory = common.state_dir(args, common.config_of(args))
    try:
        reviewed.record(directory, result)
    except OSError as error:  # the plan was shown; only naming its changes at apply time is lost
        print(f"note: the plan could not be kept in {directory}: {error.strerror}", file=sys.stderr)
    if not args.detailed_exitcode:
        return 0
    return 3 if unread else 2 if result.has_changes else 0


def _read_snapshot(path: Path) -> Snapshot:
    from pydantic import ValidationError

    try:
        return Snapshot.from_json(path.read_bytes())
    except OSError as error:
        raise errors.InvalidInput(f"{path}: cannot read the snapshot: {error.strerror}") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise errors.InvalidInput(f"{path}: snapshot {where}: {first['msg']}") from None
