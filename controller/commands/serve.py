"""`stagectl serve --state DIR [--http ADDR]`: the migration page of a stopped controller (or beside a
running one), from its state directory; until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from controller import errors
from controller.runtime.config import load_config
from controller.web import app, server


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("serve", help="serve the migration page from a state directory")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--state", type=Path, help="the controller's state directory")
    where.add_argument("--config", type=Path, help="the controller configuration (its stateDir and web:)")
    parser.add_argument(
        "--http",
        metavar="[ADDRESS:]PORT",
        help=f"where to listen (default {server.LOOPBACK}:{server.DEFAULT_PORT}; loopback unless written)",
    )
    parser.add_argument(
        "--commit-url", metavar="TEMPLATE", help="link commits: https://git.example/r/commit/{sha}"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    state_dir, listen, commit_url = args.state, args.http, args.commit_url
    if args.config is not None:
        config = load_config(args.config)
        state_dir = config.path(config.state_dir)
        listen = listen or config.web.listen
        commit_url = commit_url or config.web.commit_url
    if not state_dir.is_dir():
        raise errors.InvalidInput(f"{state_dir}: no such state directory")
    host, port = server.parse_listen(listen or str(server.DEFAULT_PORT))
    page = server.start(
        app.create(
            state_dir, commit_url=commit_url, origin="served from the state directory by stagectl serve"
        ),
        host,
        port,
    )
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        print(
            f"the migration page of {state_dir} at {page.url} (JSON at {page.url}api/status.json)", flush=True
        )
        if not server.is_loopback(host):
            print(
                f"note: {host} is not loopback: other hosts can read this page", file=sys.stderr, flush=True
            )
        stop.wait()
    finally:
        page.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
