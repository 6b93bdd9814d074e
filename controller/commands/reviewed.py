"""The plans `stagectl plan` showed, kept in the state directory by checksum, so that `apply --checksum`
can name each action added, removed or changed since the one that was reviewed."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from controller.model.actions import Action, ExchangeAction, Plan
from controller.planner import checksum, render

PLANS_DIR = "plans"
KEEP = 50  # the most recent plans shown; older ones are pruned

Entry = dict[str, object]  # key, object, change, shown (as the plan JSON shows it), digest


def record(directory: Path | None, plan: Plan) -> None:
    """Keep the plan just shown: its actions as the JSON plan shows them (secrets as references, CSV
    bodies as row counts) with each one's fingerprint. Without a state directory nothing is kept."""
    if directory is None:
        return
    folder = directory / PLANS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    body = {"checksum": plan.checksum, "revision": plan.revision, "actions": entries(plan.actions)}
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".plan.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(body, out, indent=2, default=str)
    os.replace(temporary, _path(directory, plan.checksum))
    for old in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)[KEEP:]:
        old.unlink(missing_ok=True)


def recorded(directory: Path | None, digest: str) -> list[Entry] | None:
    """The actions of the plan shown with this checksum, or None when it is not on record."""
    if directory is None:
        return None
    try:
        data = json.loads(_path(directory, digest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    actions = data.get("actions") if isinstance(data, dict) else None
    return actions if isinstance(actions, list) else None


def entries(actions: Sequence[Action]) -> list[Entry]:
    seen: Counter[tuple[str, str]] = Counter()
    out: list[Entry] = []
    for action in actions:
        verb = action.cmdlet if isinstance(action, ExchangeAction) else "dns"
        seen[(action.object, verb)] += 1
        shown = {k: v for k, v in action.as_data().items() if k != "reason"}
        out.append(
            {
                # An object may have two actions (Set- then Start-): the n-th of its verb pairs with the n-th.
                "key": f"{action.object} {verb} #{seen[(action.object, verb)]}",
                "object": action.object,
                "change": render.describe(action),
                "shown": shown,
                "digest": checksum.digest(action),
            }
        )
    return out


def differences(reviewed: list[Entry], actions: Sequence[Action]) -> list[str]:
    """One line per action added, removed or changed since the review (an order change, if only that)."""
    before = {str(e["key"]): e for e in reviewed}
    now = {str(e["key"]): e for e in entries(actions)}
    lines = [f"removed  {e['object']}: {e['change']}" for key, e in before.items() if key not in now]
    for key, entry in now.items():
        old = before.get(key)
        if old is None:
            lines.append(f"added    {entry['object']}: {entry['change']}")
        elif old["digest"] != entry["digest"]:
            lines.append(f"changed  {entry['object']}: {entry['change']} ({_what_changed(old, entry)})")
    if not lines and list(before) != list(now):
        lines.append(
            "the same actions in another order: " + ", ".join(str(e["object"]) for e in now.values())
        )
    return lines


def _what_changed(old: Entry, new: Entry) -> str:
    was, now = old.get("shown"), new.get("shown")
    if not isinstance(was, dict) or not isinstance(now, dict):
        return "it differs from the reviewed one"
    keys = [k for k in sorted({*was, *now}) if was.get(k) != now.get(k)]
    if not keys:  # only what the rendering hides, such as which addresses a CSV holds
        return "its CSV rows or credential reference differ from the reviewed ones"
    return "; ".join(f"{k} was {_compact(was.get(k))}, now {_compact(now.get(k))}" for k in keys)


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)[:200]


def _path(directory: Path, digest: str) -> Path:
    name = digest.removeprefix("sha256:")
    if not name.isalnum():  # the checksum comes from the command line: never a path
        name = "invalid"
    return directory / PLANS_DIR / f"{name}.json"
