"""`stagectl run --config FILE [--once]`: the controller loop."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from controller.planner import render
from controller.runtime.config import load_config
from controller.runtime.loop import run as run_loop
from controller.runtime.reconciler import PassResult
from controller.sim.backends import REHEARSAL


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("run", help="follow the repository and converge Exchange and DNS")
    parser.add_argument("--config", type=Path, required=True, help="the controller configuration file")
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config)
    return run_loop(config, once=args.once, report=print_pass, rehearsal=REHEARSAL)


def print_pass(result: PassResult) -> None:
    commit = result.served.commit
    print(f"pass at {commit.sha[:12]} ({commit.subject}): {render.summary(result.plan)}")
    if result.served.refused:
        print(f"  refused: {result.served.refused}")
    for outcome in result.report.outcomes:
        mark = "ok  " if outcome.ok else "FAIL"
        print(f"  {mark} {outcome.action.object}  {render.describe(outcome.action)}")
    for waiting in result.plan.waiting:
        print(f"  wait {waiting.object}: {waiting.reason}")
    for blocked in result.plan.blocked:
        print(f"  hold {blocked.object} [{blocked.gate}]: {blocked.reason}")
    for drift in result.plan.drift:
        print(f"  drift {drift.object}: {drift.reason}")
