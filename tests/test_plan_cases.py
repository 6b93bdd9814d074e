"""Table-driven planner tests: one test per folder under tests/cases (a new scenario is a new folder).

A case folder holds:
- `desired/`: files laid over `tests/cases/_base/desired/` (same path replaces), then loaded by the loader;
- `snapshot.json`: laid over `tests/cases/_base/snapshot.json` (each key of `exchange` replaces the base's,
  every other top-level key replaces the base's), then read as a `controller.snapshot.Snapshot`;
- `expected.json`: `now`, `force`, `revision`, the exact `actions` (their `as_data()` without `reason`),
  `waiting` objects and `blocked` [object, gate] pairs in order, and optionally a `memory` subset,
  `reasonContains` ({object: fragment or [fragments]} found in one of its reasons, notes included) and
  `readiness` (each {batch, phase, verdict, checks: {name: result}, members: [fragments]} a preflight or
  post-flight of the plan matches: the verdict, those checks' results, fragments of the members named).

Every case also checks that the planner is pure (same input, same plan and checksum) and minimal (no
action whose effect the snapshot already shows).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from controller.desired import loader
from controller.desired.models import DesiredState
from controller.model import snapshot
from controller.model.actions import CsvRows, DnsAction, ExchangeAction, Plan
from controller.model.statuses import MOVING, SYNCED, BatchStatus
from controller.planner import checksum, plan

CASES = Path(__file__).parent / "cases"
BASE = CASES / "_base"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if p.is_dir() and not p.name.startswith("_"))


def load_case(name: str) -> tuple[DesiredState, snapshot.Snapshot, dict]:
    folder = CASES / name
    expected = json.loads((folder / "expected.json").read_text())
    files = loader.read_directory(BASE / "desired")
    if (folder / "desired").is_dir():  # git keeps no empty folder: a case may use the base alone
        files.update(loader.read_directory(folder / "desired"))
    desired = loader.load_files(files, root=f"cases/{name}/desired", revision=expected["revision"])
    base = json.loads((BASE / "snapshot.json").read_text())
    overlay = json.loads((folder / "snapshot.json").read_text())
    merged = {**base, **overlay, "exchange": {**base["exchange"], **overlay.get("exchange", {})}}
    return desired, snapshot.Snapshot.model_validate(merged), expected


def run(desired: DesiredState, observed: snapshot.Snapshot, expected: dict) -> Plan:
    now = datetime.fromisoformat(expected["now"].replace("Z", "+00:00"))
    return plan.plan(desired, observed, now, force=expected.get("force", False))


def test_there_are_enough_cases() -> None:
    assert len(CASE_NAMES) >= 30, CASE_NAMES


@pytest.mark.parametrize("name", CASE_NAMES)
def test_case(name: str) -> None:
    desired, observed, expected = load_case(name)
    result = run(desired, observed, expected)

    actions = [{k: v for k, v in action.as_data().items() if k != "reason"} for action in result.actions]
    assert actions == expected["actions"], _explain(result)
    assert [w.object for w in result.waiting] == expected["waiting"], _explain(result)
    assert [[b.object, b.gate] for b in result.blocked] == expected["blocked"], _explain(result)

    memory = result.memory.model_dump(mode="json")
    for key, value in expected.get("memory", {}).items():
        assert memory[key] == value, f"memory.{key}: {memory[key]!r} != {value!r}"

    for want in expected.get("readiness", []):
        found = [r for r in result.readiness if r.batch == want["batch"] and r.phase == want["phase"]]
        assert found, f"no {want['phase']} of {want['batch']}: {result.readiness}"
        assert found[0].verdict == want["verdict"], found[0]
        results = {check.name: check.result for check in found[0].checks}
        for check, outcome in want.get("checks", {}).items():
            assert results.get(check) == outcome, f"{check}: {results}"
        named = [member for check in found[0].checks for member in check.members]
        for fragment in want.get("members", []):
            assert any(fragment in member for member in named), f"{fragment!r} not in {named}"

    reasons: dict[str, list[str]] = {}
    for item in (*result.actions, *result.waiting, *result.blocked, *result.notes):
        reasons.setdefault(item.object, []).append(item.reason)
    for obj, fragments in expected.get("reasonContains", {}).items():
        for fragment in [fragments] if isinstance(fragments, str) else fragments:
            assert any(fragment in r for r in reasons.get(obj, [])), (
                f"{obj}: no reason contains {fragment!r}: {reasons.get(obj)}"
            )


@pytest.mark.parametrize("name", CASE_NAMES)
def test_case_is_pure(name: str) -> None:
    desired, observed, expected = load_case(name)
    first, second = run(desired, observed, expected), run(desired, observed, expected)
    assert first == second
    assert first.checksum == second.checksum == checksum.of(desired, first.actions)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_case_is_minimal(name: str) -> None:
    desired, observed, expected = load_case(name)
    for action in run(desired, observed, expected).actions:
        problem = already_observed(action, observed)
        assert problem is None, f"{action.object} {action.as_data()}: {problem}"


def already_observed(action: ExchangeAction | DnsAction, observed: snapshot.Snapshot) -> str | None:
    """Why the snapshot already shows the effect of `action`, or None when the action is needed."""
    if isinstance(action, DnsAction):
        found = next(
            (
                rr
                for rr in observed.dns.get(action.zone) or []
                if rr.name.lower() == action.name.lower() and rr.type == action.type
            ),
            None,
        )
        if found is None:
            return None
        fold = (lambda v: v) if action.type == "TXT" else str.lower
        same = {fold(v) for v in found.values} == {fold(v) for v in action.values}
        return (
            "the RRset already holds these values at this TTL" if same and found.ttl == action.ttl else None
        )
    exchange = observed.exchange
    params = action.params
    identity = str(params.get("Identity", params.get("Name", "")))
    if action.cmdlet == "New-MigrationEndpoint":
        names = {e.Identity.lower() for e in exchange.endpoints or []}
        return "the endpoint exists" if identity.lower() in names else None
    if action.cmdlet == "Set-MigrationEndpoint":
        found_endpoint = next(e for e in exchange.endpoints or [] if e.Identity.lower() == identity.lower())
        same = [n for n, v in params.items() if n != "Identity" and getattr(found_endpoint, n, None) == v]
        return f"already set: {same}" if same else None
    batches = {b.Identity.lower(): b for b in exchange.batches or []}
    batch = batches.get(identity.lower())
    status = BatchStatus.parse(batch.Status) if batch is not None else None
    users = {(u.BatchId.lower(), u.Identity.lower()) for u in exchange.users or []}
    match action.cmdlet:
        case "New-MigrationBatch":
            return "the batch exists" if batch is not None else None
        case "Start-MigrationBatch":
            return f"the batch is already {status}" if status in MOVING else None
        case "Stop-MigrationBatch":
            return None if status in MOVING else f"the batch is not moving: {status}"
        case "Complete-MigrationBatch":
            return None if status in SYNCED else f"the batch is not Synced: {status}"
        case "Remove-MigrationBatch":
            return "the batch is absent" if batch is None else None
        case "Remove-MigrationUser":
            owner = action.object.removeprefix("batch/").lower()
            return None if (owner, identity.lower()) in users else "the user is not in the batch"
        case "Set-MigrationBatch":
            assert batch is not None
            rows = params.get("CSVData")
            if isinstance(rows, CsvRows):
                present = [a for a in rows.addresses if (identity.lower(), a.lower()) in users]
                return f"already members: {present}" if present else None
            emails = params.get("NotificationEmails")
            if emails is not None and {e.lower() for e in batch.NotificationEmails or []} == {
                e.lower() for e in emails
            }:
                return "NotificationEmails already set"
            return None
    return f"unexpected cmdlet {action.cmdlet}"


def _explain(result: Plan) -> str:
    """The whole plan, so a failing case shows what the planner decided and why."""
    lines = ["plan:"]
    lines += [f"  action  {json.dumps(a.as_data())}" for a in result.actions]
    lines += [f"  waiting {w.object}: {w.reason}" for w in result.waiting]
    lines += [f"  blocked {b.object} [{b.gate}]: {b.reason}" for b in result.blocked]
    lines += [f"  note    {n.object}: {n.reason}" for n in result.notes]
    return "\n".join(lines)
