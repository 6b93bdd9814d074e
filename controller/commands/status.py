"""`stagectl status --config FILE`: conditions, served revision, batches, DNS phases, gates and drift."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from controller import errors
from controller.runtime import status
from controller.runtime.config import load_config


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("status", help="show what the controller last saw and did")
    parser.add_argument("--config", type=Path, required=True, help="the controller configuration file")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    data = status.read(config.path(config.state_dir))
    if config.coordination is not None:
        from controller.coordination import status as shared

        leadership = shared.leadership(config)
        if data is None:  # a standby that never led: who leads is still worth saying
            data = {}
        data["leadership"] = leadership
        if args.format == "text":
            sys.stdout.write(
                shared.as_text(leadership) + (status.as_text(data) if "conditions" in data else "")
            )
            return 0
    if data is None:
        raise errors.InvalidInput(
            f"no status yet in {config.path(config.state_dir)}: run `stagectl run` first"
        )
    sys.stdout.write(json.dumps(data, indent=2) + "\n" if args.format == "json" else status.as_text(data))
    return 0
