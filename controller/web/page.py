"""What the migration page shows, read from the state directory: the status the last pass wrote (batches,
failures, the cutover timeline, the forecast, gates, drift) and the newest audit records.

Only files are read, never the controller's memory, so the page is the same from the running controller
(`stagectl run --http`) and from a stopped one (`stagectl serve`). Everything served passes through
`redact` once more, although the status and the audit log are written redacted.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from controller import redact
from controller.model import catalogue
from controller.runtime import audit, status

AUDIT_SHOWN = 25  # the newest results and settlements on the page
_AUDIT_TAIL_BYTES = 256 * 1024  # read from the end of the log: the page never reads the whole chain
_ERROR_SHOWN = 400  # an ErrorSummary is cut here: enough to act on, never a dump
_SHA = re.compile(r"^[0-9a-f]{4,64}$")
_BY_ID = {entry.id: entry for entry in catalogue.CATALOGUE}


def commit_link(template: str | None, sha: str) -> str | None:
    """The commit's address from `web.commitUrl` ("https://git.example/repo/commit/{sha}"), or None.

    The sha is put in by plain replacement (no `str.format`: a template cannot reach into objects) and
    only a hexadecimal sha is linked."""
    if not template or not _SHA.match(sha):
        return None
    return template.replace("{sha}", sha)


def load(
    state_dir: Path, *, commit_url: str | None = None, audit_shown: int = AUDIT_SHOWN
) -> dict[str, Any] | None:
    """The page's data (also served as JSON), or None before the first pass wrote a status."""
    data = status.read(state_dir)
    if data is None:
        return None
    forecasts = {row["name"]: row for row in _list(_dict(data.get("forecast")).get("batches"))}
    batches = []
    failures = []
    for row in _list(data.get("batches")):
        predicted = forecasts.get(row.get("name"), {})
        batches.append(
            {
                "name": row.get("name"),
                "desired": row.get("desired"),
                "status": row.get("status"),
                "since": row.get("since"),
                "synced": row.get("synced", 0),
                "finalized": row.get("finalized", 0),
                "failed": row.get("failed", 0),
                "total": row.get("total", 0),
                "forecast": predicted.get("state"),
                "eta": predicted.get("eta"),
                "perHour": predicted.get("perHour"),
                "basis": predicted.get("basis"),
            }
        )
        failures += [_failure(str(row.get("name")), user) for user in _list(row.get("failedUsers"))]
    if isinstance(data.get("failures"), list):  # the plan's failures, with what it does about each
        failures = [_planned_failure(row) for row in _list(data.get("failures"))]
    revision = _dict(data.get("revision"))
    served = str(revision.get("served") or "")
    page = {
        "observedAt": data.get("observedAt"),
        "conditions": data.get("conditions", []),
        "revision": {**revision, "url": commit_link(commit_url, served)},
        "unknown": data.get("unknown", {}),
        "batches": batches,
        "failures": failures,
        "cutover": data.get("cutover", {}),
        "forecast": _dict(data.get("forecast")).get("cutover"),
        "dns": data.get("dns", []),
        "blocked": data.get("blocked", []),
        "waiting": data.get("waiting", []),
        "drift": data.get("drift", []),
        "findings": data.get("findings", []),
        "audit": [_audit_row(record, commit_url) for record in recent_audit(state_dir, audit_shown)],
    }
    return redact.redact_mapping(page)


def _failure(batch: str, user: dict[str, Any]) -> dict[str, Any]:
    """A failed user with its ErrorSummary and the catalogue's documented cause, fix and retry rule."""
    error = str(user.get("error", ""))
    entry = catalogue.match(error)
    return {
        "batch": batch,
        "address": user.get("address"),
        "error": error[:_ERROR_SHOWN],
        "catalogue": None if entry is None else _entry(entry),
        "fix": entry.fix if entry is not None else user.get("fix"),
        "handling": None,
    }


def _entry(entry: catalogue.Entry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "cause": entry.cause,
        "fix": entry.fix,
        "retry": entry.retry.label,
        "retryHelps": entry.retry.helps,
        "source": entry.source,
    }


def _planned_failure(row: dict[str, Any]) -> dict[str, Any]:
    """A failure as the plan named it (status.json `failures`), with the catalogue row's cause and source."""
    failure = _failure(str(row.get("batch")), row)
    entry = _BY_ID.get(str(row.get("catalogue")))
    if entry is not None and failure["catalogue"] is None:
        failure = {**failure, "catalogue": _entry(entry)}
    return {**failure, "fix": row.get("fix") or failure["fix"], "handling": row.get("handling")}


def recent_audit(state_dir: Path, count: int) -> list[dict[str, Any]]:
    """The newest `count` results and settlements (intents are shown by their result), newest first.

    Read from the end of the log: a torn or foreign line is skipped here; `stagectl audit verify` is
    where the chain is judged."""
    path = audit.path_in(state_dir)
    try:
        with path.open("rb") as log:
            size = log.seek(0, os.SEEK_END)
            start = max(0, size - _AUDIT_TAIL_BYTES)
            log.seek(start)
            lines = log.read().split(b"\n")
    except FileNotFoundError:
        return []
    if start > 0:
        lines = lines[1:]  # the first line read is a part of one
    records: list[dict[str, Any]] = []
    for line in reversed(lines):
        if len(records) >= count:
            break
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("phase", "result") in ("result", "settled"):
            records.append(record)
    return records


def _audit_row(record: dict[str, Any], commit_url: str | None) -> dict[str, Any]:
    action = _dict(record.get("action"))
    revision = str(record.get("revision") or "")
    return {
        "seq": record.get("seq"),
        "time": record.get("time"),
        "phase": record.get("phase", "result"),
        "revision": revision,
        "url": commit_link(commit_url, revision),
        "author": record.get("author"),
        "action": audit.summary(action),
        "object": action.get("object"),
        "result": record.get("result"),
    }


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
