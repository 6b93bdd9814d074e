"""`stagectl run --config FILE [--once] [--http ADDR]`: the controller loop, and the migration page."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from controller.planner import render
from controller.runtime.config import ControllerConfig, load_config
from controller.runtime.loop import run as run_loop
from controller.runtime.reconciler import PassResult
from controller.sim.backends import REHEARSAL
from controller.web import app, server

log = logging.getLogger("stagectl.run")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("run", help="follow the repository and converge Exchange and DNS")
    parser.add_argument("--config", type=Path, required=True, help="the controller configuration file")
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    parser.add_argument(
        "--http",
        metavar="[ADDRESS:]PORT",
        help="serve the migration page (default address loopback; web.listen in the configuration does too)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config)
    listen = args.http or config.web.listen
    page = None if listen is None or args.once else _page_starter(config, listen)
    return run_loop(config, once=args.once, report=print_pass, rehearsal=REHEARSAL, page=page)


def _page_starter(config: ControllerConfig, listen: str) -> Callable[[], Callable[[], None]]:
    """What starts the page on its own thread once the loop holds the state directory."""
    host, port = server.parse_listen(listen)  # a bad address is refused before anything starts

    def start() -> Callable[[], None]:
        page = server.start(
            app.create(config.path(config.state_dir), commit_url=config.web.commit_url), host, port
        )
        log.info("the migration page at %s", page.url)
        if not server.is_loopback(host):
            log.warning("the migration page listens on %s: other hosts can read it", host)
        return page.stop

    return start


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
