"""`stagectl run --config FILE [--once] [--http ADDR]`: the controller loop, and the migration page;
`stagectl run --tenants DIR [--instance NAME]`: many tenants shared by many instances (docs/ha.md)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from rich.logging import RichHandler

from controller import errors
from controller.commands import progress
from controller.planner import render
from controller.runtime.config import ControllerConfig, load_config
from controller.runtime.loop import run as run_loop
from controller.runtime.reconciler import PassResult
from controller.sim.backends import REHEARSAL
from controller.web import app, server

log = logging.getLogger("stagectl.run")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("run", help="follow the repository and converge Exchange and DNS")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", type=Path, help="the controller configuration file")
    which.add_argument(
        "--tenants",
        type=Path,
        metavar="DIR",
        help="a directory of configurations (*.yaml), one per tenant, each with coordination: (docs/ha.md)",
    )
    parser.add_argument(
        "--instance", metavar="NAME", help="with coordination: this instance's name (default: host-pid)"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="N",
        help="with --tenants: serve each tenant's leadership on /metrics",
    )
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    parser.add_argument(
        "--http",
        metavar="[ADDRESS:]PORT",
        help="serve the migration page (default address loopback; web.listen in the configuration does too)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="plain lines even on a terminal (no live panel)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.tenants is not None:
        return _coordinated(args, tenant_configs(args.tenants), metrics_port=args.metrics_port)
    config = load_config(args.config)
    if config.coordination is not None:
        listen = args.http or config.web.listen
        stop_page = _page_starter(config, listen)() if listen and not args.once else None
        try:  # the page reads this instance's state directory: current where it leads
            return _coordinated(args, [config], metrics_port=config.metrics_port)
        finally:
            if stop_page is not None:
                stop_page()
    listen = args.http or config.web.listen
    page = None if listen is None or args.once else _page_starter(config, listen)
    shown: progress.LiveProgress | progress.PlainProgress
    if progress.wanted(args.no_progress):
        shown = progress.LiveProgress()
        # Log records go above the live panel, through its console, instead of tearing it.
        handler: logging.Handler = RichHandler(console=shown.console, show_path=False)
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", handlers=[handler])
    else:
        shown = progress.PlainProgress()
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run_loop(
            config,
            once=args.once,
            report=lambda result: shown.show(pass_lines(result)),
            rehearsal=REHEARSAL,
            page=page,
            watcher=shown,
        )
    finally:
        shown.close()


def tenant_configs(directory: Path) -> list[ControllerConfig]:
    """One configuration per tenant: every *.yaml and *.yml of `directory`, in name order."""
    if not directory.is_dir():
        raise errors.InvalidInput(f"--tenants {directory}: not a directory")
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not files:
        raise errors.InvalidInput(f"--tenants {directory}: no configuration (*.yaml) in it")
    configs = [load_config(path) for path in files]
    for path, config in zip(files, configs, strict=True):
        if config.coordination is None:
            raise errors.InvalidInput(f"{path}: a tenant of --tenants needs a coordination: section")
    return configs


def _coordinated(
    args: argparse.Namespace, configs: list[ControllerConfig], *, metrics_port: int | None
) -> int:
    """Plain lines (many tenants' passes interleave), each prefixed with its tenant."""
    from controller.coordination import service

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    shown = progress.PlainProgress()

    def report(tenant: str, result: PassResult) -> None:
        shown.show([f"[{tenant}] {line}" for line in pass_lines(result)])

    return service.run(
        configs,
        instance=args.instance,
        once=args.once,
        report=report,
        rehearsal=REHEARSAL,
        metrics_port=metrics_port,
        metrics_address=configs[0].metrics_address,
    )


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


def pass_lines(result: PassResult) -> list[str]:
    """A finished pass as the lines a log keeps: what was applied, what waits, what is held, drift."""
    commit = result.served.commit
    lines = [f"pass at {commit.sha[:12]} ({commit.subject}): {render.summary(result.plan)}"]
    if result.served.refused:
        lines.append(f"  refused: {result.served.refused}")
    for outcome in result.report.outcomes:
        mark = "ok  " if outcome.ok else "FAIL"
        lines.append(f"  {mark} {outcome.action.object}  {render.describe(outcome.action)}")
    lines += [f"  wait {w.object}: {w.reason}" for w in result.plan.waiting]
    lines += [f"  hold {b.object} [{b.gate}]: {b.reason}" for b in result.plan.blocked]
    lines += [f"  drift {d.object}: {d.reason}" for d in result.plan.drift]
    return lines
