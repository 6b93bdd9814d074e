"""The controller's latest snapshot, published for CI: `stagectl plan --base --head --observed` plans a pull
request against it (issue 15 item 1, contract §5).

Each pass writes `snapshot.json` into the state directory and, with `publish: {snapshot: PATH}`, the same
bytes to PATH, each replaced atomically (a temporary file, fsynced, renamed), so a reader never sees half a
file. The snapshot is what the pass observed with the memory the controller keeps after it (what the next
plan, and `stagectl apply` beside the controller, starts from); it holds no secret — observations and
memory only — and is passed through `redact` all the same; a value that redaction would change is named
in the log, since a plan made from the published copy may differ there. Beside the snapshot, under
`published`, the revision the controller served when it observed (what the observation was scoped to) and
how many actions the pass sent after observing. A failure to publish is a warning: the pass stands.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from controller import redact
from controller.model.snapshot import ObservedRecipient, Snapshot, at
from controller.runtime.applier import ApplyReport
from controller.runtime.config import ControllerConfig
from controller.runtime.serving import Served

log = logging.getLogger("stagectl.publish")

SNAPSHOT_FILE = "snapshot.json"
PUBLISHED_KEY = "published"  # beside the snapshot's own keys; Snapshot.from_json ignores it
RECIPIENTS_FILE = "published-recipients.json"
RECIPIENTS_KEPT = timedelta(days=7)  # a recipient looked up longer ago is unknown to a pull-request plan


def after_pass(
    config: ControllerConfig, snapshot: Snapshot, served: Served, report: ApplyReport
) -> list[Path]:
    """Write the pass's snapshot to the state directory and the configured path; returns where it went."""
    written: list[Path] = []
    try:
        state_dir = config.path(config.state_dir)
        observed = with_recipients(snapshot, state_dir).model_copy(update={"memory": report.memory})
        body = document(observed, served, len(report.outcomes))
        targets = [(state_dir / SNAPSHOT_FILE, 0o600)]
        if config.publish.snapshot:
            targets.append((config.path(config.publish.snapshot), 0o644))  # for CI to read
        for path, mode in targets:
            write_atomic(path, body, mode=mode)
            written.append(path)
    except OSError as error:
        log.warning("the snapshot could not be published: %s", error.strerror or error)
    except ValueError as error:  # redaction left no valid snapshot (pydantic's ValidationError)
        log.warning(
            "the snapshot was not published: once redacted it is not valid (%s)", type(error).__name__
        )
    return written


def document(snapshot: Snapshot, served: Served, actions_applied: int) -> bytes:
    """The snapshot as JSON, redacted, with what it was observed for under `published`."""
    data = snapshot.model_dump(mode="json")
    cleaned = _redacted(data)
    if cleaned != data:  # nothing secret is observed; if a value looks like one, say where, never what
        where = ", ".join(_changed(data, cleaned)[:10])
        log.warning("the published snapshot had values redacted (%s): a plan from it may differ there", where)
    Snapshot.model_validate(cleaned)  # still a snapshot `plan --observed` reads
    cleaned[PUBLISHED_KEY] = {
        "revision": served.commit.sha,  # what the observation was scoped to
        "head": served.head or served.commit.sha,
        "refused": served.refused,
        "observedAt": at(snapshot.observedAt),
        "actionsApplied": actions_applied,  # sent after observing: the snapshot predates their effect
        "applyActions": 0,  # of them, sent by `stagectl apply` (mark_applied)
    }
    return (json.dumps(cleaned, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def mark_applied(paths: Iterable[Path], actions: int) -> list[Path]:
    """`stagectl apply` sent `actions` after the published snapshot was observed: count them in its
    `actionsApplied` (and `applyActions`), so that a pull-request plan made from it says the tenant changed
    since, until the next pass publishes anew. Files that do not exist are left; a failure is a warning."""
    marked: list[Path] = []
    for path in paths:
        try:
            data = json.loads(path.read_bytes())
            published = data.get(PUBLISHED_KEY) if isinstance(data, dict) else None
            if not isinstance(published, dict):
                continue
            for key in ("actionsApplied", "applyActions"):
                before = published.get(key)
                published[key] = (before if isinstance(before, int) else 0) + actions
            body = (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
            write_atomic(path, body, mode=stat.S_IMODE(path.stat().st_mode))
            marked.append(path)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as error:
            log.warning("the published snapshot %s could not be marked as predating apply: %s", path, error)
    return marked


def _redacted(data: dict[str, Any]) -> dict[str, object]:
    """Exchange objects by property name and text; DNS answers and reasons by text. Memory is keyed by
    batch, zone and record names (a batch may be called Token-Rollout), digests and times: left as it is."""
    return data | {
        "exchange": redact.redact_mapping(data["exchange"]),
        "dns": {zone: redact.redact_data(rrsets) for zone, rrsets in data["dns"].items()},
        "unreadable": {kind: redact.redact_text(why) for kind, why in data["unreadable"].items()},
    }


def with_recipients(snapshot: Snapshot, state_dir: Path) -> Snapshot:
    """The snapshot with the recipients this pass did not look up filled in from when they last were.

    A pass looks up only the members a decision needs now (contract §3.1): a planned batch found ready is
    not looked up again until it starts. A pull request that starts it needs them, and CI cannot look;
    so each lookup is kept (`published-recipients.json`, for RECIPIENTS_KEPT) and the published snapshot
    carries them, older but observed. `apply` looks them up again: what changed since changes the plan,
    and `--checksum` refuses it.
    """
    exchange = snapshot.exchange
    if exchange.mailUsers is None or exchange.mailboxes is None or exchange.recipientsRead is None:
        return snapshot  # unknown stays unknown; a whole-directory read needs nothing added
    kept = _kept_recipients(state_dir)
    mail_users = {a.lower() for a in exchange.mailUsers}
    mailboxes = {a.lower() for a in exchange.mailboxes}
    read_now = {a.lower() for a in exchange.recipientsRead}
    seen = at(snapshot.observedAt)
    details = {r.PrimarySmtpAddress.lower(): r for r in exchange.recipients or ()}
    for address in read_now:
        kept[address] = {"mailUser": address in mail_users, "mailbox": address in mailboxes, "at": seen}
        if address in details:  # type, IsDirSynced, SKUAssigned: the preflight's (contract §4)
            kept[address]["detail"] = details[address].model_dump(mode="json")
    oldest = at(snapshot.observedAt - RECIPIENTS_KEPT)
    kept = {a: fact for a, fact in kept.items() if str(fact.get("at", "")) >= oldest}
    if read_now:
        write_atomic(state_dir / RECIPIENTS_FILE, json.dumps(kept, sort_keys=True).encode(), mode=0o600)
    older = sorted(a for a in kept if a not in read_now)
    if not older:
        return snapshot
    return snapshot.model_copy(
        update={
            "exchange": exchange.model_copy(
                update={
                    "recipientsRead": [*exchange.recipientsRead, *older],
                    "mailUsers": [*exchange.mailUsers, *(a for a in older if kept[a].get("mailUser"))],
                    "mailboxes": [*exchange.mailboxes, *(a for a in older if kept[a].get("mailbox"))],
                    "recipients": None
                    if exchange.recipients is None
                    else [*exchange.recipients, *_details(kept, older)],
                }
            )
        }
    )


def _details(kept: dict[str, dict[str, object]], addresses: list[str]) -> list[ObservedRecipient]:
    """The kept entries of these addresses (a lookup kept before entries were, or an odd one, has none)."""
    found = []
    for address in addresses:
        detail = kept[address].get("detail")
        if isinstance(detail, dict):
            try:
                found.append(ObservedRecipient.model_validate(detail))
            except ValueError:
                continue
    return found


def _kept_recipients(state_dir: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads((state_dir / RECIPIENTS_FILE).read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(a): fact for a, fact in data.items() if isinstance(fact, dict)}


def write_atomic(path: Path, body: bytes, *, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError:
        Path(temporary).unlink(missing_ok=True)
        raise


def _changed(before: object, after: object, where: str = "") -> list[str]:
    """The dotted paths where redaction changed a value (never the values)."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [p for key in before for p in _changed(before[key], after.get(key), f"{where}.{key}")]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            p
            for i, (b, a) in enumerate(zip(before, after, strict=True))
            for p in _changed(b, a, f"{where}[{i}]")
        ]
    return [] if before == after else [where.lstrip(".") or "."]
