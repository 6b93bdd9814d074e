"""`stagectl audit verify|show|anchor`: check the audit chain, list what a commit caused, record a head."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from controller import errors
from controller.runtime import audit, notes
from controller.runtime.config import load_config
from controller.runtime.source import GitSource


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("audit", help="verify or show the audit trail of a state directory")
    commands = parser.add_subparsers(dest="audit_command", required=True, metavar="verify|show|anchor")

    verify = commands.add_parser(
        "verify", help="check the hash chain and its recorded head; exit 1 naming the first broken record"
    )
    where = verify.add_mutually_exclusive_group(required=True)
    where.add_argument("--state", type=Path, metavar="DIR", help="the state directory")
    where.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="a configuration: with coordination, the tenant's chain in etcd (every leader's records)",
    )
    verify.add_argument(
        "--repo",
        metavar="PATH",
        help="also check the git notes (refs/notes/stagectl) of this repository against the log",
    )
    verify.set_defaults(func=run_verify)

    show = commands.add_parser("show", help="list the recorded actions, optionally of one revision")
    show.add_argument("--state", type=Path, required=True, metavar="DIR", help="the state directory")
    show.add_argument("--revision", metavar="SHA", help="only what this commit (or sha prefix) caused")
    show.add_argument("--format", choices=("text", "json"), default="text")
    show.set_defaults(func=run_show)

    anchor = commands.add_parser(
        "anchor", help="record the head of an intact log that has none (one written before heads were kept)"
    )
    anchor.add_argument("--state", type=Path, required=True, metavar="DIR", help="the state directory")
    anchor.set_defaults(func=run_anchor)


def _log_path(state_dir: Path) -> Path:
    if not state_dir.is_dir():
        raise errors.InvalidInput(f"the state directory {state_dir} does not exist")
    return audit.path_in(state_dir)


def run_verify(args: argparse.Namespace) -> int:
    if args.config is not None:
        config = load_config(args.config)
        if config.coordination is not None:
            from controller.coordination import status as shared

            return shared.verify_chain(config)
        args.state = config.path(config.state_dir)
    path = _log_path(args.state)
    found = audit.find_break(path)
    if found is not None:
        print(f"audit log {path}: {found.reason}", file=sys.stderr)
        return 1
    print(f"audit log {path}: {audit.count(path)} records, chain intact")
    return _verify_notes(path, args.repo, args.state) if args.repo else 0


def _verify_notes(path: Path, repo: str, state_dir: Path) -> int:
    """Every note line names a record of the log, of its commit, with the same action and result; every
    record the state directory says was noted (notes.json) has its line."""
    with tempfile.TemporaryDirectory(prefix="stagectl-") as workdir:
        source = GitSource(repo, workdir=Path(workdir))
        found = notes.check(
            path,
            source.notes(notes.NOTES_REF),
            noted_through=notes.written(state_dir),
            is_commit=source.has_commit,
        )
    for problem in found.problems:
        print(f"git notes ({notes.NOTES_REF}) of {repo}: {problem}", file=sys.stderr)
    summary = f"git notes ({notes.NOTES_REF}) of {repo}: {found.lines} lines"
    if found.problems:
        verb = "does" if len(found.problems) == 1 else "do"
        print(f"{summary}, {len(found.problems)} {verb} not match the audit log", file=sys.stderr)
        return 1
    # Not a failure: records after the last noted pass, `stagectl apply` on a working tree (never noted),
    # and records of commits this clone does not hold.
    unnoted = f"; {found.unnoted} results or settlements have no note line" if found.unnoted else ""
    print(f"{summary}, each one a record of the audit log with the same action and result{unnoted}")
    return 0


def run_anchor(args: argparse.Namespace) -> int:
    path = _log_path(args.state)
    head = audit.anchor(path)
    print(f"audit log {path}: head recorded at record {head.seq}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    records = audit.show(_log_path(args.state), args.revision)
    if args.format == "json":
        json.dump(records, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    if not records:
        which = f" for revision {args.revision}" if args.revision else ""
        print(f"no audit records{which}")
        return 0
    for record in records:
        action = record.get("action")
        what = audit.summary(action) if isinstance(action, dict) else str(action)
        phase = str(record.get("phase") or "result")
        print(
            f"{record.get('seq'):>5} {record.get('time')} {str(record.get('revision', ''))[:12]} "
            f"{phase:<7} {record.get('author')}: {_one_line(what)} -> {_one_line(str(record.get('result')))} "
            f"({record.get('duration_ms')} ms)"
        )
    return 0


def _one_line(text: str) -> str:
    """Recorded text is printed to a terminal: no control characters, no line breaks."""
    return "".join(ch if ch.isprintable() else " " for ch in text)
