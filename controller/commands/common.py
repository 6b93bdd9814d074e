"""Options and steps shared by observe, plan and apply: where the desired state and backends come from."""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from controller import errors
from controller.desired import loader
from controller.desired.models import DesiredState
from controller.model.snapshot import Memory, Snapshot
from controller.runtime.backends import Backends, open_backends
from controller.runtime.config import ControllerConfig, load_config
from controller.runtime.store import DATABASE_FILE, Store
from controller.sim.backends import REHEARSAL


def add_desired_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", nargs="?", default="desired", help="the desired directory (default: desired/)")
    parser.add_argument(
        "--repo", help="read the desired state from this git repository instead of a directory"
    )
    parser.add_argument("--rev", default="HEAD", help="with --repo: the revision to read (default: HEAD)")
    parser.add_argument(
        "--desired-dir", default="desired", help="with --repo: the desired directory in the tree"
    )


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="the controller configuration file")
    parser.add_argument("--exchange", help="sim:FILE or psrp://HOST:PORT")
    parser.add_argument("--dns", help="sim:FILE")
    parser.add_argument("--state", type=Path, help="the state directory holding the controller's memory")
    parser.add_argument("--now", type=parse_now, help="plan as of this UTC time (ISO 8601)")


def parse_now(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time such as 2026-12-01T18:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone: write it in UTC with a Z")
    return moment


def config_of(args: argparse.Namespace) -> ControllerConfig | None:
    return load_config(args.config) if args.config else None


def load_desired(args: argparse.Namespace) -> DesiredState:
    if args.repo:
        from controller.runtime.source import GitSource

        with tempfile.TemporaryDirectory(prefix="stagectl-") as workdir:
            source = GitSource(args.repo, desired_dir=args.desired_dir, workdir=Path(workdir))
            revision = source.resolve(args.rev)
            files = source.read_tree(revision)
        return loader.load_files(
            files, root=f"{args.repo}@{revision[:12]}/{args.desired_dir}", revision=revision
        )
    path = Path(args.dir)
    if not path.is_dir():
        raise errors.InvalidInput(f"{path}: no such desired directory")
    return loader.load_directory(path)


def state_dir(args: argparse.Namespace, config: ControllerConfig | None) -> Path | None:
    chosen: Path | None = args.state
    if chosen is not None:
        return chosen
    return config.path(config.state_dir) if config is not None else None


def memory_of(config: ControllerConfig | None, directory: Path | None) -> Memory:
    """What the controller remembers: from etcd for a coordinated tenant (a standby's or a CI machine's
    copy may be old or empty, and the plan would differ from the leader's), else the state directory's."""
    if config is not None and config.coordination is not None:
        from controller.coordination import status as shared

        return shared.memory(config)
    return load_memory(directory)


def load_memory(directory: Path | None) -> Memory:
    if directory is None or not (directory / DATABASE_FILE).exists():
        return Memory()
    store = Store.open(directory)
    try:
        return store.load_memory()
    finally:
        store.close()


def save_memory(directory: Path | None, memory: Memory) -> None:
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    store = Store.open(directory)
    try:
        store.save_memory(memory)
    finally:
        store.close()


def backends_of(args: argparse.Namespace, config: ControllerConfig | None) -> Backends:
    return open_backends(
        exchange=args.exchange, dns=args.dns, config=config, now=args.now, rehearsal=REHEARSAL
    )


def observe_live(
    desired: DesiredState, backends: Backends, memory: Memory
) -> tuple[Snapshot, tuple[str, ...]]:
    from controller.exchange.errors import AuthenticationError
    from controller.runtime.observe import observe

    try:
        return observe(
            desired, exchange=backends.exchange, dns=backends.dns, memory=memory, now=backends.clock()
        )
    except AuthenticationError as error:
        raise errors.ExternalFailure(f"Exchange gateway: {error}") from None


def observe_once(args: argparse.Namespace, desired: DesiredState) -> Snapshot:
    """Open the backends, observe once, close them; DNS findings go to stderr as notes."""
    config = config_of(args)
    backends = backends_of(args, config)
    try:
        snapshot, findings = observe_live(desired, backends, memory_of(config, state_dir(args, config)))
    finally:
        backends.close()
    for finding in findings:
        print(f"note: {finding}", file=sys.stderr)
    return snapshot
