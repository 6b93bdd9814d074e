"""The plans `stagectl plan` showed, kept in the state directory by checksum, so that `apply --checksum`
can name each action added, removed or changed since the one that was reviewed.

A plan made where no state directory is (CI) carries the same record in its Markdown: an HTML comment
`<!-- stagectl:reviewed-plan v1 BASE64 -->` (zlib-compressed JSON, base64: no character of it can end
the comment or be read as Markdown), which `apply --checksum SUM --reviewed plan.md` reads; a plan's
JSON (`--format json`) can be given instead.
"""

from __future__ import annotations

import base64
import json
import os
import re
import tempfile
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from controller import errors
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


# --- the record inside a Markdown plan (a pull-request comment) ----------------------------------------

BLOCK_TAG = "stagectl:reviewed-plan v1"
_BLOCK = re.compile(r"<!-- stagectl:reviewed-plan v1 ([A-Za-z0-9+/=]+) -->")
MAX_BLOCK = 4 * 1024 * 1024  # decompressed bytes read from a block: a record, never a bomb


def block(plan: Plan) -> str:
    """The plan's record as one HTML comment line: hidden where the Markdown is shown, read back by
    `apply --reviewed`. The actions as the JSON plan shows them: secrets as references, CSVs as counts."""
    body = {"checksum": plan.checksum, "revision": plan.revision, "actions": entries(plan.actions)}
    packed = zlib.compress(json.dumps(body, separators=(",", ":"), default=str).encode(), 9)
    return f"<!-- {BLOCK_TAG} {base64.b64encode(packed).decode('ascii')} -->\n"


def from_file(path: Path, digest: str) -> list[Entry]:
    """The reviewed actions in a Markdown plan (its block) or a plan's JSON; refused when the file holds
    another plan than the checksum given, or none."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise errors.InvalidInput(f"{path}: cannot read the reviewed plan: {error.strerror}") from None
    found = _BLOCK.findall(text)
    data: object
    if found:
        try:
            raw = zlib.decompressobj().decompress(base64.b64decode(found[-1], validate=True), MAX_BLOCK)
            data = json.loads(raw)
        except (ValueError, zlib.error):
            raise errors.InvalidInput(f"{path}: the reviewed plan's block is damaged") from None
    else:
        try:
            data = json.loads(text)
        except ValueError:
            raise errors.InvalidInput(
                f"{path}: neither a Markdown plan of `stagectl plan --format markdown` (no reviewed-plan "
                "block) nor a plan's JSON"
            ) from None
    if not isinstance(data, dict) or not isinstance(data.get("actions"), list):
        raise errors.InvalidInput(f"{path}: no actions of a plan in it")
    held = str(data.get("checksum", ""))
    if held.lower() != digest.lower():
        raise errors.InvalidInput(f"{path} holds the plan of checksum {held}, not {digest}")
    actions = [a for a in data["actions"] if isinstance(a, dict)]
    return [a for a in actions if "key" in a] if all("key" in a for a in actions) else _from_json(actions)


def _from_json(actions: list[dict[str, object]]) -> list[Entry]:
    """Entries from a plan's JSON actions: no fingerprint, so they compare by what the JSON shows."""
    seen: Counter[tuple[str, str]] = Counter()
    out: list[Entry] = []
    for action in actions:
        verb = str(action.get("cmdlet")) if action.get("system") == "exchange" else "dns"
        obj = str(action.get("object"))
        seen[(obj, verb)] += 1
        shown = {k: v for k, v in action.items() if k != "reason"}
        change = f"{verb} {_compact(shown.get('parameters', shown.get('values')))}"
        out.append(
            {"key": f"{obj} {verb} #{seen[(obj, verb)]}", "object": obj, "change": change, "shown": shown}
        )
    return out


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
        elif _differs(old, entry):
            lines.append(f"changed  {entry['object']}: {entry['change']} ({_what_changed(old, entry)})")
    if not lines and list(before) != list(now):
        lines.append(
            "the same actions in another order: " + ", ".join(str(e["object"]) for e in now.values())
        )
    return lines


def _differs(old: Entry, new: Entry) -> bool:
    """By fingerprint; a reviewed entry without one (from a plan's JSON) by what the JSON shows."""
    if old.get("digest") is not None:
        return old["digest"] != new["digest"]
    return _normal(old.get("shown")) != _normal(new.get("shown"))


def _normal(value: object) -> object:
    return json.loads(json.dumps(value, default=str))


def _what_changed(old: Entry, new: Entry) -> str:
    was, now = _normal(old.get("shown")), _normal(new.get("shown"))
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
