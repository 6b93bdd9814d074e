"""Plan renderings: text for people, JSON (contract §3) for machines, Markdown for a pull-request comment."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence

from controller.model.actions import Action, DnsAction, ExchangeAction, Plan, Readiness, render_value
from controller.planner.changes import DesiredChanges

# What could not be read ("exchange/batches", "dns/contoso.com") and why, beside the plan: the renderings
# show it, so that a plan made without looking never reads as a converged one.
Unknown = Mapping[str, str]
NO_UNKNOWN: Unknown = {}


def plan_data(plan: Plan, unknown: Unknown = NO_UNKNOWN) -> dict[str, object]:
    return {
        "revision": plan.revision,
        "checksum": plan.checksum,
        "unknown": dict(unknown),
        "actions": [action.as_data() for action in plan.actions],
        "waiting": [{"object": w.object, "reason": w.reason} for w in plan.waiting],
        "blocked": [{"object": b.object, "gate": b.gate, "reason": b.reason} for b in plan.blocked],
        "drift": [
            {"object": d.object, "desired": d.desired, "observed": d.observed, "reason": d.reason}
            for d in plan.drift
        ],
        "notes": [{"object": n.object, "reason": n.reason} for n in plan.notes],
        "failures": [failure.as_data() for failure in plan.failures],
        "readiness": [entry.as_data() for entry in plan.readiness],
        "memory": plan.memory.model_dump(mode="json"),
    }


def to_json(plan: Plan, unknown: Unknown = NO_UNKNOWN) -> str:
    return json.dumps(plan_data(plan, unknown), indent=2, default=str)


def summary(plan: Plan, unknown: Unknown = NO_UNKNOWN) -> str:
    counts = (
        f"{len(plan.actions)} to apply, {len(plan.waiting)} waiting, {len(plan.blocked)} blocked, "
        f"{len(plan.drift)} drifted"
    )
    return f"{counts}, {len(unknown)} unknown" if unknown else counts


def describe(action: Action) -> str:
    """One line: `New-MigrationBatch -Name Batch1-IT -CSVData <2 rows> -AutoStart` or a DNS change."""
    if isinstance(action, ExchangeAction):
        parts = [action.cmdlet]
        for name, value in action.params.items():
            shown = render_value(value)  # secrets and CSV bodies as their description
            if shown is True:
                parts.append(f"-{name}")
            elif isinstance(shown, list):
                parts.append(f"-{name} {','.join(shown)}")
            else:
                parts.append(f"-{name} {shown}")
        return " ".join(parts)
    return _describe_dns(action)


def _describe_dns(action: DnsAction) -> str:
    values = " | ".join(action.values)
    verb = {"create": "create", "update": "replace", "ttl": "set TTL"}[action.kind]
    owner = action.zone if action.name == "@" else f"{action.name}.{action.zone}"
    return f"{verb} {owner} {action.type} {action.ttl} {values}"


def to_text(plan: Plan, unknown: Unknown = NO_UNKNOWN) -> str:
    lines = [
        f"Plan for revision {plan.revision or '(working tree)'}: {summary(plan, unknown)}",
        f"checksum {plan.checksum}",
    ]
    sections: list[tuple[str, list[tuple[str, str, str]]]] = [
        (UNKNOWN_TITLE, [(what, "", why) for what, why in unknown.items()]),
        ("Actions, in order", [(a.object, describe(a), a.reason) for a in plan.actions]),
        ("Waiting", [(w.object, "", w.reason) for w in plan.waiting]),
        ("Blocked", [(b.object, b.gate, b.reason) for b in plan.blocked]),
        ("Drift", [(d.object, "", d.reason) for d in plan.drift]),
        ("Notes", [(n.object, "", n.reason) for n in plan.notes]),
    ]
    for title, rows in sections:
        if not rows:
            continue
        lines += ["", f"{title}:"]
        width = max(len(obj) for obj, _, _ in rows)
        for index, (obj, what, why) in enumerate(rows, start=1):
            head = f"{index:>3}. " if title.startswith("Actions") else "   - "
            lines.append(f"{head}{obj:<{width}}  {what or why}")
            if what:
                lines.append(f"{' ' * len(head)}{'':<{width}}  why: {why}")
    lines += failures_text(plan)
    lines += readiness_text(plan.readiness)
    if unknown:
        lines += ["", _UNKNOWN_VERDICT]
    elif not plan.actions:
        lines += [
            "",
            "No changes: the observed state matches the repository (see waiting and blocked above).",
        ]
    return "\n".join(_plain(line) for line in lines) + "\n"


UNKNOWN_TITLE = "Unknown (could not be read; nothing is planned on it)"
_UNKNOWN_VERDICT = (
    "Not converged as far as anyone can tell: part of the state could not be read (see Unknown above)."
)

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _plain(text: str) -> str:
    """Terminal output never carries control characters that remote text may hold."""
    return _CONTROL.sub("?", text)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]|<>~&])")


def md(text: str) -> str:
    """Escape text for a Markdown table cell: specials, pipes, newlines and HTML."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", _plain(str(text))).replace("\n", " ")


def to_markdown(plan: Plan, unknown: Unknown = NO_UNKNOWN) -> str:
    out = [
        f"### stagectl plan for `{md(plan.revision[:12]) or 'working tree'}`",
        "",
        f"**{md(summary(plan, unknown))}**",
        "",
    ]
    if unknown:
        out += [f"**Unknown** ({md(_UNKNOWN_VERDICT)})", "", "| what | why |", "|---|---|"]
        out += [f"| {md(what)} | {md(why)} |" for what, why in unknown.items()]
        out.append("")
    if plan.actions:
        out += ["| # | object | change | why |", "|---|---|---|---|"]
        out += [
            f"| {i} | {md(a.object)} | {md(describe(a))} | {md(a.reason)} |"
            for i, a in enumerate(plan.actions, start=1)
        ]
        out.append("")
    for title, rows in (
        ("Waiting", [(w.object, w.reason) for w in plan.waiting]),
        ("Blocked", [(f"{b.object} ({b.gate})", b.reason) for b in plan.blocked]),
        ("Drift", [(d.object, d.reason) for d in plan.drift]),
    ):
        if rows:
            out += [f"**{title}**", "", "| object | reason |", "|---|---|"]
            out += [f"| {md(obj)} | {md(why)} |" for obj, why in rows]
            out.append("")
    out += failures_markdown(plan)
    out += readiness_markdown(plan.readiness)
    out.append(f"<sub>checksum {md(plan.checksum)}</sub>")
    return "\n".join(out) + "\n"


RENDERERS: dict[str, Callable[[Plan, Unknown], str]] = {
    "text": to_text,
    "json": to_json,
    "markdown": to_markdown,
}


# --- failed members with the documented fix (issue 15 item 5, exchange-facts §9) -------------------

FAILURES_TITLE = "Failed members (the documented fix, exchange-facts §9, and whether a retry helps)"
UNKNOWN_ERROR = "not in the catalogue"


def failures_text(plan: Plan) -> list[str]:
    """Each failed member: batch, address, catalogue row and error; the fix; the retry rule and what the
    plan does. Lines for `to_text` (control characters are replaced there)."""
    if not plan.failures:
        return []
    lines = ["", f"{FAILURES_TITLE}:"]
    for failure in plan.failures:
        row = failure.catalogue or UNKNOWN_ERROR
        lines += [
            f"   - batch/{failure.batch} {failure.address} [{row}]: {failure.error[:160]}",
            f"       fix: {failure.fix}",
            f"       retry: {failure.retry}; {failure.handling}",
        ]
    return lines


def failures_markdown(plan: Plan) -> list[str]:
    """The failed members as a Markdown table, every cell escaped (addresses and errors are remote text)."""
    if not plan.failures:
        return []
    out = [
        f"**{md(FAILURES_TITLE)}**",
        "",
        "| batch | member | error | row | fix | retry |",
        "|---|---|---|---|---|---|",
    ]
    out += [
        f"| {md(f.batch)} | {md(f.address)} | {md(f.error)} | {md(f.catalogue or UNKNOWN_ERROR)} | "
        f"{md(f.fix)} | {md(f.retry)}: {md(f.handling)} |"
        for f in plan.failures
    ]
    out.append("")
    return out


# --- preflight and post-flight per batch (issue 16 items 3 and 4, contract §4) -------------------------

READINESS_TITLE = "Preflight and post-flight (contract §4)"
_MARK = {"pass": "ok", "fail": "FAIL", "unknown": "UNKNOWN", "warn": "warn", "skip": "-"}


def readiness_text(readiness: Sequence[Readiness]) -> list[str]:
    """Each batch's preflight or post-flight with its verdict, then one line a check and the members it
    names. Lines for `to_text` and `stagectl status`."""
    if not readiness:
        return []
    lines = ["", f"{READINESS_TITLE}:"]
    for entry in readiness:
        lines.append(f"   - batch/{entry.batch} {entry.phase}: {entry.verdict}")
        for check in entry.checks:
            lines.append(f"       [{_MARK.get(check.result, check.result)}] {check.name}: {check.detail}")
            lines += [f"           {member}" for member in check.members]
    return lines


def readiness_markdown(readiness: Sequence[Readiness]) -> list[str]:
    """The checks as a Markdown table, a row a check, every cell escaped (addresses are remote text)."""
    if not readiness:
        return []
    out = [f"**{md(READINESS_TITLE)}**", "", "| batch | phase | check | result | detail | members |"]
    out.append("|---|---|---|---|---|---|")
    for entry in readiness:
        for check in entry.checks:
            out.append(
                f"| {md(entry.batch)} | {md(entry.phase)} ({md(entry.verdict)}) | {md(check.name)} | "
                f"{md(check.result)} | {md(check.detail)} | {md(', '.join(check.members))} |"
            )
    out.append("")
    return out


# --- pull-request plans (issue 15 item 1): what the head asks, beside what merging it would do --------


def changes_lines(changes: DesiredChanges) -> list[str]:
    """The desired-state changes as text lines, one object a line."""
    if not changes.changes:
        return ["No change to the desired state between the two revisions."]
    return [f"{c.kind:<8} {c.object}: {'; '.join(c.details)}".rstrip(": ") for c in changes.changes]


def to_pr_text(
    plan: Plan, unknown: Unknown, changes: DesiredChanges, context: str, *, notice: str = ""
) -> str:
    """`plan --base --head --format text`: the desired-state changes, the context, then the plan."""
    head = [
        *([notice, ""] if notice else []),
        f"Desired-state changes {_short(changes.base)} -> {_short(changes.head)}:",
        *(f"  {line}" for line in changes_lines(changes)),
        "",
        context,
        "",
    ]
    return "\n".join(_plain(line) for line in head) + "\n" + to_text(plan, unknown)


def to_pr_markdown(
    plan: Plan,
    unknown: Unknown,
    changes: DesiredChanges,
    context: str,
    *,
    target: str = "",
    notice: str = "",
    applicable: bool = True,
) -> str:
    """`plan --base --head --format markdown`, the pull-request comment: what the head asks (per object,
    against the merge base), against which snapshot it was planned (`context`, one sentence), what merging
    would do (the plan, as `to_markdown` renders it) and the command that applies exactly that plan.
    `target` is the base the pull request merges into (default: the base of `changes`); `notice`, one
    sentence at the top, says when the head does not contain it; `applicable` false (a merge result, no
    commit) leaves the apply line out."""
    into = target or changes.base
    out = [f"## stagectl: merging {_code(changes.head)} into {_code(into)}", ""]
    if notice:
        out += [f"**{md(notice)}**", ""]
    since = f" (since the merge base {_code(changes.base)})" if changes.base != into else ""
    out += [f"#### Desired-state changes{since}", ""]
    if changes.changes:
        out += ["| object | change | details |", "|---|---|---|"]
        out += [f"| {md(c.object)} | {md(c.kind)} | {md('; '.join(c.details))} |" for c in changes.changes]
    else:
        out.append(md(changes_lines(changes)[0]))
    out += ["", f"_{md(context)}_", "", to_markdown(plan, unknown).rstrip("\n"), ""]
    if (
        applicable
        and plan.revision
        and _HEX.match(plan.revision)
        and _HEX.match(plan.checksum.removeprefix("sha256:"))
    ):
        # Hex only, so a code span is safe: copy it to apply exactly the plan reviewed here.
        out += [
            "Applies exactly this plan at this revision, with `--repo` and the controller's `--config` "
            "added (a merge commit is a new revision with its own checksum; `stagectl apply` refuses any "
            "other plan and names what changed, from this comment saved as a file and given as "
            "`--reviewed FILE`). It shows the plan it made and asks before applying; add `--yes` where no "
            "one can answer:",
            "",
            f"`stagectl apply --rev {plan.revision} --checksum {plan.checksum}`",
            "",
        ]
    return "\n".join(out)


_HEX = re.compile(r"^[0-9a-f]{40,64}$")


def _short(revision: str) -> str:
    return revision[:12] if _HEX.match(revision) else revision or "working tree"


def _code(revision: str) -> str:
    """A revision in Markdown: a code span when it is a commit sha (hex: nothing to escape), else text."""
    return f"`{revision[:12]}`" if _HEX.match(revision) else md(revision or "working tree")
