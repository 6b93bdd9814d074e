"""The controller's status after a pass: Ready / Reconciling / Stalled conditions (as Flux reports them),
per batch its progress and failed users with the documented fix, DNS cutover phases, gates, drift."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller import errors
from controller.model import catalogue
from controller.model.actions import Plan
from controller.model.snapshot import Snapshot, at
from controller.model.statuses import COMPLETED, FAILED_USER_STATUSES, BatchStatus
from controller.planner.dns import desired_values, same_values
from controller.runtime import forecast
from controller.runtime.applier import ApplyReport
from controller.runtime.observe import unknown
from controller.runtime.store import ProgressSample

if TYPE_CHECKING:
    from controller.runtime.serving import Served
    from controller.runtime.store import Store

STATUS_FILE = "status.json"

# Gates that clear by themselves with time or Exchange's progress; any other gate needs a person.
_TIME_GATES = frozenset({"ttl-lead", "batches-completed", "remove-after-cutover"})


def fix_for(error_summary: str) -> str:
    """The documented fix for a failed user's error, from the one catalogue (exchange-facts §9)."""
    entry = catalogue.match(error_summary)
    return (
        entry.fix
        if entry is not None
        else "not in the error catalogue: read the error, fix its cause, then retry"
    )


def build(
    served: Served,
    planned: Plan,
    report: ApplyReport,
    snapshot: Snapshot,
    findings: tuple[str, ...],
    store: Store,
) -> dict[str, object]:
    desired = served.desired
    batches = {b.Identity.lower(): b for b in snapshot.exchange.batches or []}
    samples = _sample_progress(store, snapshot)
    failed_users: dict[str, list[dict[str, str]]] = {}
    for user in snapshot.exchange.users or []:
        if user.Status.lower() in FAILED_USER_STATUSES:
            failed_users.setdefault(user.BatchId.lower(), []).append(
                {"address": user.Identity, "error": user.ErrorSummary, "fix": fix_for(user.ErrorSummary)}
            )
    batch_rows = []
    for batch in desired.batches:
        found = batches.get(batch.key)
        batch_rows.append(
            {
                "name": batch.name,
                "desired": batch.state.value,
                "status": None
                if snapshot.exchange.batches is None
                else (found.Status if found else "absent"),
                # Synced and finalized (completed) users both have their mailbox in Exchange Online.
                "synced": found.SyncedCount + found.FinalizedCount if found else 0,
                "finalized": found.FinalizedCount if found else 0,
                "total": found.TotalCount if found else len(batch.members),
                "failed": found.FailedCount if found else 0,
                "failedUsers": failed_users.get(batch.key, [])[:20],
                "since": _since(samples.get(batch.key, []), found.Status if found else None),
            }
        )
    unread = unknown(snapshot)
    forecasts = [
        forecast.batch(
            str(row["name"]),
            status=_text(row["status"]),
            synced=_int(row["synced"]),
            failed=_int(row["failed"]),
            total=_int(row["total"]),
            samples=samples.get(str(row["name"]).lower(), []),
        )
        for row in batch_rows
    ]
    return {
        "conditions": _conditions(served, planned, report, unread),
        "revision": {
            "served": served.commit.sha,
            "author": served.commit.author,
            "subject": served.commit.subject,
            "refused": served.refused,
        },
        "observedAt": at(snapshot.observedAt),
        "unknown": unread,
        "batches": batch_rows,
        "dns": _dns_rows(served, snapshot, planned),
        "cutover": forecast.timeline(desired, snapshot, planned, report.memory),
        "forecast": forecast.assemble(desired, snapshot, planned, report.memory, forecasts),
        "waiting": [{"object": w.object, "reason": w.reason} for w in planned.waiting],
        "blocked": [{"object": b.object, "gate": b.gate, "reason": b.reason} for b in planned.blocked],
        "failures": failures(planned),
        "readiness": [entry.as_data() for entry in planned.readiness],
        "drift": [
            {"object": a.object, "expected": a.desired, "observed": a.observed, "since": at(a.opened_at)}
            for a in store.open_alerts()
        ],
        "findings": list(findings),
        "lastPass": {
            "applied": sum(1 for o in report.outcomes if o.ok),
            "failed": None
            if report.failed is None
            else f"{report.failed.action.object}: {report.failed.detail}",
            "notDone": len(report.not_done),
        },
    }


def _conditions(
    served: Served, planned: Plan, report: ApplyReport, unread: dict[str, str]
) -> list[dict[str, object]]:
    stalls = [f"{b.object}: {b.gate}" for b in planned.blocked if b.gate not in _TIME_GATES]
    if served.refused:
        stalls.insert(0, served.refused)
    if report.failed is not None:
        stalls.insert(0, f"{report.failed.action.object} failed: {report.failed.detail}")
    progressing = bool(
        report.outcomes or planned.waiting or any(b.gate in _TIME_GATES for b in planned.blocked)
    )
    # Never Converged on what could not be read: the plan was empty only because nothing was planned on it.
    ready = not stalls and not progressing and not planned.actions and not unread
    reconciling_reason = (
        f"applied {len(report.outcomes)} actions, {len(planned.waiting)} waiting"
        if progressing
        else "nothing in progress"
    )
    return [
        {
            "type": "Ready",
            "status": ready,
            "reason": _ready_reason(ready=ready, stalls=stalls, unread=unread),
            "message": f"revision {served.commit.sha[:12]} applied"
            if ready
            else _unknown_message(unread) or "not yet converged",
        },
        {
            "type": "Reconciling",
            "status": progressing,
            "reason": "Progressing" if progressing else "Idle",
            "message": reconciling_reason,
        },
        {
            "type": "Stalled",
            "status": bool(stalls),
            "reason": "NeedsAttention" if stalls else "None",
            "message": "; ".join(stalls[:5]),
        },
    ]


def _ready_reason(*, ready: bool, stalls: list[str], unread: dict[str, str]) -> str:
    if ready:
        return "Converged"
    if unread:  # first: what could not be read is why the rest cannot be judged (contract §6)
        return "Unknown"
    return "Stalled" if stalls else "Progressing"


def _unknown_message(unread: dict[str, str]) -> str:
    shown = "; ".join(f"{what}: {why}" for what, why in list(unread.items())[:3])
    return f"could not be read, so not known to be converged: {shown}" if unread else ""


def _dns_rows(served: Served, snapshot: Snapshot, planned: Plan) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    low_ttl = served.desired.policy.low_ttl
    blocked = {b.object for b in planned.blocked}
    for record in served.desired.records:
        observed = snapshot.dns.get(record.zone)
        found = (
            None
            if observed is None
            else next(
                (
                    r
                    for r in observed
                    if r.name.lower() == record.name.lower() and r.type == record.type.value
                ),
                None,
            )
        )
        if observed is None:
            phase = "unknown"
        elif found is not None and same_values(record, found, desired_values(record, found)):
            phase = "cut over" if record.cutover else "in sync"
        elif record.cutover and found is not None and found.ttl <= low_ttl:
            phase = "TTL lowered, waiting"
        else:
            phase = "waiting for gates" if f"dns/{record.key}" in blocked else "changing"
        rows.append(
            {
                "record": record.key,
                "ttl": found.ttl if found else None,
                "values": list(found.values) if found else [],
                "phase": phase,
            }
        )
    return rows


# --- progress, the cutover timeline and the forecast (the migration page, docs/web.md) ------------------


def _sample_progress(store: Store, snapshot: Snapshot) -> dict[str, list[ProgressSample]]:
    """Record this pass's counts, then return every observed batch's samples (oldest first).

    A batch moving is sampled every pass (its throughput is the ETA's basis); a finished one only when
    its status changes (the page says since when it is in that status), so samples stay few."""
    observed = snapshot.exchange.batches or []
    known = store.progress([b.Identity for b in observed])
    fresh: list[ProgressSample] = []
    for found in observed:
        sample = ProgressSample(
            batch=found.Identity.lower(),
            observed_at=snapshot.observedAt,
            status=found.Status,
            synced=found.SyncedCount + found.FinalizedCount,
            failed=found.FailedCount,
            total=found.TotalCount,
        )
        last = known.get(sample.batch, [])[-1:]
        if BatchStatus.parse(found.Status) not in COMPLETED or not last or last[0].status != found.Status:
            fresh.append(sample)
            known.setdefault(sample.batch, []).append(sample)
    store.record_progress(fresh)
    return known


def _since(samples: list[ProgressSample], status: str | None) -> str | None:
    """Since when the batch has been in its status, as far as the samples go back."""
    since = None
    for sample in reversed(samples):
        if sample.status != status:
            break
        since = sample.observed_at
    return None if since is None else at(since)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _int(value: object) -> int:
    return int(str(value))


# --- failed members with the documented fix (issue 15 item 5): the plan's failures ----------------------


def failures(planned: Plan) -> list[dict[str, object]]:
    """Each failed member as the plan names it: error, catalogue row (exchange-facts §9), fix, retry."""
    return [failure.as_data() for failure in planned.failures]


def failures_text(data: dict[str, Any]) -> list[str]:
    """The failed members under the batches in `stagectl status` (a status written before has none)."""
    rows = data.get("failures") or []
    lines = ["", "failed members (the documented fix, exchange-facts §9):"] if rows else []
    for row in rows:
        lines += [
            f"  failed {row['address']} in {row['batch']} [{row['catalogue'] or 'not in the catalogue'}]: "
            f"{row['error'][:120]}",
            f"      fix: {row['fix']}",
            f"      retry: {row['retry']}; {row['handling']}",
        ]
    return lines


def readiness_text(data: dict[str, Any]) -> list[str]:
    """Each batch's preflight or post-flight of the last pass, a line a check that did not simply pass,
    with the members it names (a status written before has none)."""
    rows = data.get("readiness") or []
    lines = ["", "preflight and post-flight (contract §4):"] if rows else []
    for row in rows:
        lines.append(f"  {row['phase']} {row['batch']}: {row['verdict']}")
        for check in row["checks"]:
            if check["result"] == "pass":
                continue
            lines.append(f"      {check['result']:<8}{check['check']}: {check['detail'][:200]}")
            lines += [f"          {member}" for member in check["members"]]
    return lines


def write(state_dir: Path, data: dict[str, object]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=state_dir, prefix=".status.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2, default=str)
    os.replace(temporary, state_dir / STATUS_FILE)


def read(state_dir: Path) -> dict[str, object] | None:
    """The last pass's status; None when there is none yet. A file that is not a status (cut short by a
    full disk, edited by hand) is one clear error, never a traceback or a page error."""
    path = state_dir / STATUS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise errors.ExternalFailure(
            f"{path} cannot be read ({error}); the next pass of the controller writes it again"
        ) from None
    if not isinstance(data, dict):
        raise errors.ExternalFailure(
            f"{path} is not a status; the next pass of the controller writes it again"
        )
    return data


def as_text(data: dict[str, Any]) -> str:
    """The status as `stagectl status` prints it: conditions, revision, batches, DNS, gates, drift."""
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
    for what, why in data.get("unknown", {}).items():  # a status written before this field has none
        lines.append(f"unknown     {what}: {why}")
    lines += ["", f"{'batch':<24}{'desired':<11}{'Exchange':<22}{'synced':>10}{'finalized':>10}{'failed':>8}"]
    for batch in data["batches"]:
        progress = f"{batch['synced']}/{batch['total']}"
        lines.append(
            f"{batch['name']:<24}{batch['desired']:<11}{batch['status'] or 'unknown':<22}"
            f"{progress:>10}{batch.get('finalized', 0):>10}{batch['failed']:>8}"
        )
        for user in [] if "failures" in data else batch["failedUsers"]:  # else failures_text below
            lines.append(f"    failed {user['address']}: {user['error'][:120]}")
            lines.append(f"           fix: {user['fix']}")
    lines += failures_text(data)
    lines += readiness_text(data)
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
