"""`stagectl apply`: observe, plan, and run the plan action by action; stop at the first failure."""

from __future__ import annotations

import argparse
import sys

from controller import errors
from controller.commands import common
from controller.planner import render
from controller.planner.plan import plan
from controller.runtime.applier import ApplyReport, Outcome, apply_plan


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("apply", help="observe, plan and apply the actions")
    common.add_desired_arguments(parser)
    common.add_backend_arguments(parser)
    parser.add_argument(
        "--checksum", help="refuse unless the fresh plan has this checksum (from `stagectl plan`)"
    )
    parser.add_argument("--yes", action="store_true", help="apply without asking")
    parser.add_argument("--force", action="store_true", help="let the change-size gate pass")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    desired = common.load_desired(args)
    config = common.config_of(args)
    directory = common.state_dir(args, config)
    backends = common.backends_of(args, config)
    try:
        memory = common.load_memory(directory)
        snapshot, _ = common.observe_live(desired, backends, memory)
        result = plan(desired, snapshot, snapshot.observedAt, force=args.force)
        sys.stdout.write(render.to_text(result))
        if args.checksum and args.checksum != result.checksum:
            raise errors.Refused(
                f"the plan changed since checksum {args.checksum} was shown (now {result.checksum}): "
                "Exchange, DNS or the repository moved; run `stagectl plan` again"
            )
        if not result.actions:
            common.save_memory(directory, result.memory)
            return 0
        if not args.yes and not _confirmed(len(result.actions)):
            raise errors.Refused("nothing applied: pass --yes, or answer y at the prompt")
        report = apply_plan(result, exchange=backends.exchange, dns=backends.dns, on_outcome=_print_outcome)
    finally:
        backends.close()
    common.save_memory(directory, report.memory)
    return _account(report)


def _confirmed(count: int) -> bool:
    if not sys.stdin.isatty():
        return False
    answer = input(f"Apply {count} actions? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _print_outcome(outcome: Outcome) -> None:
    mark = "ok  " if outcome.ok else "FAIL"
    detail = "" if outcome.detail == "ok" else f": {outcome.detail}"
    print(f"{mark} {outcome.action.object}  {render.describe(outcome.action)}{detail}")


def _account(report: ApplyReport) -> int:
    failed = report.failed
    if failed is None:
        print(f"applied {len(report.outcomes)} actions")
        return 0
    done = sum(1 for outcome in report.outcomes if outcome.ok)
    print(f"stopped at {failed.action.object}: {failed.detail}", file=sys.stderr)
    print(
        f"{done} actions were applied before it; {len(report.not_done)} were not attempted:", file=sys.stderr
    )
    for action in report.not_done:
        print(f"  not done: {action.object}  {render.describe(action)}", file=sys.stderr)
    return 3 if failed.external else 1
