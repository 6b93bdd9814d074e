"""`stagectl apply`: observe, plan, and run the plan action by action; stop at the first failure.

Exit 3 when part of the state could not be read, after applying what the planner did plan: it never
plans on what it could not read, and the actions it did plan do not depend on it (contract §6).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from controller import errors
from controller import fence as sending
from controller.commands import common, progress, reviewed
from controller.model.actions import Action, Plan
from controller.model.snapshot import Memory
from controller.planner import render
from controller.planner.plan import plan
from controller.runtime import audit, publish
from controller.runtime.applier import ApplyReport, Outcome, apply_plan
from controller.runtime.audit import AuditLog
from controller.runtime.config import ControllerConfig
from controller.runtime.intents import Journal
from controller.runtime.lock import StateLock, refuse_if_coordinated
from controller.runtime.observe import unknown
from controller.runtime.store import Store


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("apply", help="observe, plan and apply the actions")
    common.add_desired_arguments(parser)
    common.add_backend_arguments(parser)
    parser.add_argument(
        "--checksum", help="refuse unless the fresh plan has this checksum (from `stagectl plan`)"
    )
    parser.add_argument(
        "--reviewed",
        type=Path,
        metavar="FILE",
        help="with --checksum: the reviewed plan (the Markdown comment or JSON of `stagectl plan`), to name "
        "what changed when no state directory kept it",
    )
    parser.add_argument("--yes", action="store_true", help="apply without asking")
    parser.add_argument("--force", action="store_true", help="let the change-size gate pass")
    parser.add_argument(
        "--no-progress", action="store_true", help="plain lines even on a terminal (no live panel)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    desired = common.load_desired(args)
    config = common.config_of(args)
    directory = common.state_dir(args, config)
    with contextlib.ExitStack() as stack:
        backends = common.backends_of(args, config)
        stack.callback(backends.close)
        journal, fence = _journal(stack, directory, backends.clock, config)
        memory = journal.store.load_memory() if journal is not None else common.load_memory(directory)
        snapshot, findings = common.observe_live(desired, backends, memory)
        for finding in findings:  # said even when there is nothing to apply
            print(f"note: {finding}", file=sys.stderr)
        result = plan(desired, snapshot, snapshot.observedAt, force=args.force)
        if journal is not None:  # an intent a crashed `run` or `apply` left open: observation settles it
            result = journal.settle(result, snapshot, desired)
        unread = unknown(snapshot)
        sys.stdout.write(render.to_text(result, unread))
        reviewed_checksum = _normalized(args.checksum) if args.checksum else None
        if reviewed_checksum and reviewed_checksum != result.checksum:
            _refuse(reviewed_checksum, result, directory, args.reviewed)
        if not result.actions:
            _save_memory(journal, directory, result.memory)
            return _unknown_exit(unread)
        if not args.yes and not _confirmed(len(result.actions)):
            raise errors.Refused("nothing applied: pass --yes, or answer y at the prompt")
        shown = progress.LiveProgress(echo=True) if progress.wanted(args.no_progress) else None
        if shown is not None:
            stack.callback(shown.close)
            shown.observed(snapshot)
            shown.planned(len(result.actions))
        on_outcome: Callable[[Outcome], None] = shown.acted if shown is not None else _print_outcome
        if journal is None:
            print(
                "note: no state directory (--state or a configuration): these actions are neither "
                "journaled nor audited, and no lock keeps a controller from acting beside them",
                file=sys.stderr,
            )
            before: Callable[[Action], bool] = lambda action: True  # noqa: E731
            after = on_outcome
        else:
            _save_memory(journal, directory, result.memory)  # what this observation taught survives a crash
            before, after = journal.recorder(
                revision=desired.revision or f"worktree {Path(args.dir).resolve()}",
                author=f"{getpass.getuser()} (stagectl apply)",
                on_outcome=on_outcome,
            )

        def start(action: Action) -> bool:
            sending = before(action)
            if sending and shown is not None:
                shown.acting(action)
            return sending

        with sending.guarded(fence):
            report = apply_plan(
                result, exchange=backends.exchange, dns=backends.dns, on_start=start, on_outcome=after
            )
        _save_memory(journal, directory, report.memory)  # under the state lock
        if directory is not None and report.outcomes:  # the published snapshot predates these actions
            published = [directory / publish.SNAPSHOT_FILE]
            if config is not None and config.publish.snapshot:
                published.append(config.path(config.publish.snapshot))
            publish.mark_applied(published, len(report.outcomes))
    code = _account(report)
    return code if code else _unknown_exit(unread)


def _journal(
    stack: contextlib.ExitStack,
    directory: Path | None,
    clock: Callable[[], datetime],
    config: ControllerConfig | None,
) -> tuple[Journal | None, Callable[[], None]]:
    """With a state directory, `apply` holds its lock (a running controller refuses it: one writer to a
    tenant) and records every action's intent and result as `stagectl run` does. On a coordinated tenant it
    also wins the tenant's leadership in etcd (refused while a controller leads it), and its journal and
    audit chain are the shared ones; the second value is the fence checked before each action is sent."""
    if directory is None:
        return None, lambda: None
    lock = StateLock.acquire(directory)
    stack.callback(lock.release)
    if config is not None and config.coordination is not None:
        from controller.coordination import service

        shared, log, claim = stack.enter_context(service.leading_once(config, directory))
        return Journal(shared, log, clock, directory), claim.check
    refuse_if_coordinated(directory)
    store = Store.open(directory)
    stack.callback(store.close)
    return Journal(store, AuditLog(audit.path_in(directory)), clock, directory), lambda: None


def _save_memory(journal: Journal | None, directory: Path | None, memory: Memory) -> None:
    if journal is not None:
        journal.store.save_memory(memory)
    else:
        common.save_memory(directory, memory)


def _normalized(checksum: str) -> str:
    """The checksum as `stagectl plan` prints it, pasted with or without `sha256:`, in any case."""
    text = checksum.strip().lower()
    return text if text.startswith("sha256:") else f"sha256:{text}"


def _refuse(reviewed_checksum: str, result: Plan, directory: Path | None, given: Path | None) -> None:
    """Refuse (exit 1), naming each action added, removed or changed since the reviewed plan: kept in the
    state directory by `stagectl plan`, or read from the reviewed file (`--reviewed`, a CI comment)."""
    on_record = reviewed.recorded(directory, reviewed_checksum)
    if on_record is None and given is not None:
        on_record = reviewed.from_file(given, reviewed_checksum)
    if on_record is not None:
        lines = reviewed.differences(on_record, result.actions)
    else:
        where = "no state directory" if directory is None else f"none in {directory / reviewed.PLANS_DIR}"
        lines = [
            f"the reviewed plan is not on record ({where}; --reviewed FILE reads it from the plan's "
            "Markdown or JSON); planned now:"
        ]
        lines += [f"now      {a.object}: {render.describe(a)}" for a in result.actions] or [
            "now      nothing"
        ]
    # Why the actions are what they are now: what a gate blocks and what waits (a gate that closed, a
    # member not yet synced, an object that could not be read).
    lines += [f"blocked  {b.object} ({b.gate}): {b.reason}" for b in result.blocked]
    lines += [f"waiting  {w.object}: {w.reason}" for w in result.waiting]
    raise errors.Refused(
        f"the plan changed since checksum {reviewed_checksum} was reviewed (now {result.checksum}), "
        "so nothing was applied; review `stagectl plan` again:\n" + "\n".join(f"  {line}" for line in lines)
    )


def _unknown_exit(unread: Mapping[str, str]) -> int:
    if not unread:
        return 0
    print(
        f"part of the state could not be read ({', '.join(unread)}): nothing was planned on it; exit 3",
        file=sys.stderr,
    )
    return 3


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
