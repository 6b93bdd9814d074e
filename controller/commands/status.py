"""`stagectl status --config FILE`: conditions, served revision, batches, DNS phases, gates and drift."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from controller import errors
from controller.runtime import status
from controller.runtime.config import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="show what the controller last saw and did")
    parser.add_argument("--config", type=Path, required=True, help="the controller configuration file")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    data = status.read(config.path(config.state_dir))
    if data is None:
        raise errors.InvalidInput(
            f"no status yet in {config.path(config.state_dir)}: run `stagectl run` first"
        )
    sys.stdout.write(json.dumps(data, indent=2) + "\n" if args.format == "json" else to_text(data))
    return 0


def to_text(data: dict) -> str:  # type: ignore[type-arg]
    lines = []
    for condition in data["conditions"]:
        message = f": {condition['message']}" if condition["message"] else ""
        lines.append(f"{condition['type']:<12}{condition['status']!s:<6} {condition['reason']}{message}")
    revision = data["revision"]
    lines += [
        "",
        f"revision    {revision['served'][:12]}  {revision['subject']}  ({revision['author']})",
        f"observed    {data['observedAt']}",
    ]
    if revision["refused"]:
        lines.append(f"refused     {revision['refused']}")
    lines += ["", f"{'batch':<24}{'desired':<11}{'Exchange':<22}{'synced':>10}{'failed':>8}"]
    for batch in data["batches"]:
        progress = f"{batch['synced']}/{batch['total']}"
        lines.append(
            f"{batch['name']:<24}{batch['desired']:<11}{batch['status'] or 'unknown':<22}"
            f"{progress:>10}{batch['failed']:>8}"
        )
        for user in batch["failedUsers"]:
            lines.append(f"    failed {user['address']}: {user['error'][:120]}")
            lines.append(f"           fix: {user['fix']}")
    lines += ["", f"{'DNS record':<36}{'TTL':>7}  phase"]
    for record in data["dns"]:
        lines.append(
            f"{record['record']:<36}{record['ttl'] if record['ttl'] is not None else '-':>7}  "
            f"{record['phase']}"
        )
    for title, key in (("blocked", "blocked"), ("waiting", "waiting")):
        for entry in data[key]:
            gate = f" [{entry['gate']}]" if "gate" in entry else ""
            lines.append(f"{title:<8} {entry['object']}{gate}: {entry['reason']}")
    for drift in data["drift"]:
        lines.append(
            f"drift    {drift['object']} since {drift['since']}: expected {drift['expected']}, "
            f"observed {drift['observed']}"
        )
    return "\n".join(lines) + "\n"
