"""bench.scale's report: the scale section of docs/benchmarks.md (machine, targets, one table per
scenario, the naive baseline, the profile), rendered from its Results and written between the markers.

Not a benchmark of its own (no `main`): bench.scale calls it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.scale import (
    BEGIN,
    END,
    HEADING,
    HOSTS,
    LATENCY,
    MB,
    Column,
    Pass,
    Results,
    Scenario,
)


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _size(value: float) -> str:
    return f"{value / MB:,.2f} MB" if value >= 100_000 else f"{value / 1000:,.1f} kB"


def _listing(counts: Counter[str]) -> str:
    total = sum(counts.values())
    return f"{_n(total)}: " + ", ".join(f"{c} {_n(n)}" for c, n in counts.items()) if total else "0"


def _mark(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def _slow(p: Pass) -> str:
    if p.slow is not None:
        return f"{p.slow['seconds']:.2f} s"
    calls = sum(p.calls.values())
    return f"{p.child['seconds'] + calls * LATENCY:.1f} s (not run: latency 0 + {calls} x {LATENCY} s)"


def _cells(column: Column) -> list[str]:
    p, c = column.run, column.run.child
    calls, minimum = sum(p.calls.values()), column.reads + column.changes
    dns = f"{c['dns_queries']} queries, {c['dns_updates']} UPDATEs" if c["dns_queries"] is not None else "n/a"
    plan = f"{len(c['actions'])} actions, {c['waiting']} waiting, {c['blocked']} blocked"
    if c["failed"] or c["unknown"]:
        plan += f"; FAILED {c['failed']}; unknown {c['unknown']}"
    return [
        column.label,
        _listing(p.observation()),
        _listing(p.changes()),
        f"{minimum} ({column.reads} reads + {column.changes} changes); x {calls / minimum:.2f}",
        _listing(p.rows),
        _size(p.response_bytes),
        _n(p.round_trips),
        dns,
        f"{c['plan']:.3f} s",
        f"{c['observe']:.2f} s",
        f"{c['seconds']:.2f} s",
        _slow(p),
        f"controller {c['cpu']:.1f} s, gateway and simulator {p.gateway_cpu:.1f} s",
        f"{c['peak_rss_kib'] * 1024 / MB:.0f} MB",
        plan,
    ]


ROW_NAMES = (
    "Exchange calls, observation",
    "Exchange calls, changes",
    "minimum; our ratio to it",
    "rows over PSRP",
    "bytes over PSRP (response bodies)",
    "HTTP round trips",
    "DNS messages",
    "`plan()` (median of the pass's call and 3 more)",
    "observe (Exchange and DNS)",
    "whole pass, latency 0",
    f"whole pass, {LATENCY} s per call",
    "CPU during the pass (latency 0)",
    "peak RSS of the controller process",
    "the plan",
)


def _table(scenario: Scenario) -> str:
    columns = [_cells(column) for column in scenario.columns]
    lines = [f"**{scenario.title}**", "", "| | " + " | ".join(c[0] for c in columns) + " |"]
    lines.append("|---|" + "---|" * len(columns))
    lines += [f"| {row} | " + " | ".join(c[i] for c in columns) + " |" for i, row in enumerate(ROW_NAMES, 1)]
    return "\n".join(lines)


def _targets(r: Results) -> str:
    shape, size = r.shape, f"{r.shape.batches * r.shape.members:,}"
    steady = r.column("b").run
    reads, users = sum(steady.observation().values()), steady.rows.get("Get-MigrationUser", 0)
    passes = {key: r.column(key) for key in "bcd"}
    changes = [
        (k, sum(col.run.changes().values()), col.changes)
        for k, col in {"a": r.column("a", 0), **passes}.items()
    ]
    plans = {key: col.run.child["plan"] for key, col in passes.items()}
    walls = {key: col.run.child["seconds"] for key, col in passes.items()}
    every = [col.run for s in r.scenarios if s.key != "a" for col in s.columns]
    rss = max(p.child["peak_rss_kib"] for p in every) * 1024 / MB
    first = r.column("b", 0).run.child
    lines = [
        "| target (issue 13 item 5) | measured | |",
        "|---|---|---|",
        f"| steady observation <= 3 calls + 1 per unfinished batch ({3 + shape.unfinished}) | {reads} "
        f"| {_mark(reads <= 3 + shape.unfinished)} |",
        f"| steady payload independent of finished members | migration-user rows {_n(users)}, at most the "
        f"{shape.unfinished} unfinished batches' {_n(shape.unfinished * shape.members)} members: none of the "
        f"{_n(shape.completed * shape.members)} finished ones "
        f"| {_mark(users <= shape.unfinished * shape.members)} |",
        "| Exchange changes exactly at the minimum | "
        + "; ".join(f"({k}) {n} of {m}" for k, n, m in changes)
        + f" | {_mark(all(n == m for _, n, m in changes))} |",
        f"| `plan()` < 0.2 s at {size} members | "
        + "; ".join(f"({k}) {s:.3f} s" for k, s in plans.items())
        + f" (the first pass, which verifies every batch once: {first['plan']:.3f} s) "
        f"| {_mark(max(plans.values()) < 0.2)} |",
        f"| a whole local pass through the gateway < 2 s at {size} members | "
        + "; ".join(f"({k}) {s:.2f} s" for k, s in walls.items())
        + f" (the first pass: {first['seconds']:.1f} s) | {_mark(max(walls.values()) < 2)} |",
        f"| peak memory < 300 MB | at most {rss:.0f} MB (any pass at scale) | {_mark(rss < 300)} |",
    ]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds:,.1f} s"


def _naive(r: Results) -> str:
    naive, shape = r.naive, r.shape
    lines = [
        f"**The naive baseline** (item 4): one `Get-MigrationEndpoint -Identity`, one `Get-MigrationBatch "
        "-Identity` per batch, one `Get-MigrationUser -Identity` per member (whole objects), one call per "
        f"difference; measured on {naive.batches} x {naive.members} over the same gateway "
        f"({_n(naive.calls)} calls, {_size(naive.response_bytes)}, {naive.seconds:.1f} s at latency 0, "
        f"{naive.seconds / naive.calls * 1000:.1f} ms a call) and extrapolated linearly to "
        f"{shape.batches} x {shape.members:,}; its time at {LATENCY} s per call adds the latency to each "
        "call.",
        "",
        "| scenario | naive calls | ours | ratio | naive bytes | ours | ratio "
        f"| naive time at {LATENCY} s per call | ours | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in "bcd":
        column = r.column(key)
        p = column.run
        ours = sum(p.calls.values())
        calls, size, seconds = naive.scaled(shape.batches, shape.members, sum(p.changes().values()))
        slow = calls * LATENCY + seconds
        mine = p.slow["seconds"] if p.slow else p.child["seconds"] + ours * LATENCY
        ratio = f"{size / p.response_bytes:,.0f}"
        lines.append(
            f"| ({key}) {column.label} | {_n(calls)} | {ours} | {calls / ours:,.0f} | {_size(size)} "
            f"| {_size(p.response_bytes)} | {ratio} | {_duration(slow)} | {_duration(mine)} "
            f"| {slow / mine:,.0f} |"
        )
    return "\n".join(lines)


def _profile(r: Results) -> str:
    top, steady = r.column("d").run.child.get("profile"), r.column("b").run.child.get("profile")
    if not top or not steady:
        return ""
    lines = [
        "**Profile** (item 8) of the largest scenario, (d), by cProfile in the controller process (a run of "
        "its own: profiling slows it), top 10 by cumulative time:",
        "",
        "| function | calls | cumulative | own |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{w}` | {_n(n)} | {cum:.2f} s | {own:.2f} s |" for w, n, own, cum in top["cumulative"]]

    def most(profile: dict[str, Any]) -> str:
        return "; ".join(f"`{w}` {own:.2f} s ({_n(n)} calls)" for w, n, own, _ in profile["own"])

    lines += ["", f"Most own time in (d): {most(top)}.", "", f"Most own time in (b), steady: {most(steady)}."]
    return "\n".join(lines)


def _machine() -> str:
    from controller.sim.bind import named_binary

    info = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?")
    named = subprocess.run([named_binary(), "-v"], capture_output=True, text=True, check=False).stdout.split()
    bind = named[1] if len(named) > 1 else "?"
    return f"{cpu}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, BIND {bind}"


def render(r: Results) -> str:
    shape = r.shape
    method = (
        f"Command: `make bench` (or `.venv/bin/python -m bench.scale`), {datetime.now(UTC):%Y-%m-%d}; "
        f"{_machine()}; load average {r.load:.1f} at the end (the machine is shared). The controller runs "
        "in a child process as `stagectl run` does (wiring.build once, then run_pass; the loaded revision "
        "and the PSRP session kept between passes), against the PSRP gateway (TLS, Basic; in the "
        "benchmark's process, on a SimRunner over the SQLite store) and a BIND primary and secondary with 50 "
        f"managed RRsets (MX and autodiscover CNAME cutover records, the SPF TXT, {HOSTS} A). A first pass "
        "is a new process's first, on an empty state directory (it loads the desired state and opens the "
        "session); every other pass follows a pass that warmed the process up, the scenario's commit merged "
        "in between. Calls, rows (output objects) and bytes (response bodies) are the gateway's counters; "
        "DNS messages are the backend's; "
        "`plan()` and observe are timed inside the pass; peak RSS is the process's VmHWM over the pass "
        f"(reset before it). The pass at {LATENCY} s per call is the same pass from the same tenant and "
        "state with the simulator's latency set (SimRunner sleeps it per call). The tenant, "
        f"{shape.batches} x {shape.members:,}, is the controller's own plan applied on an empty tenant, "
        "then the completed batches finished by hand (no "
        f"engine run for {shape.completed * shape.members:,} syncs); setup {r.seeding:.0f} s, "
        f"{len(r.passes)} controller runs {sum(r.passes):.0f} s, the whole benchmark {r.total:.0f} s."
    )
    minimum = (
        "The minimum is the distinct changes plus one read per object kind the pass needs (the "
        "endpoint, the batch list, the directory when a decision needs it) plus one migration-user read "
        "per unfinished batch (before anything is verified, every batch). A ratio under 1 is fewer reads "
        "than that: one Get-MigrationUser for several batches while few finished users come with them, and "
        "no read of a syncing batch whose users matched the repository and none failed (the batch list "
        "shows what could change). A tenant holds at most 100 batches of at most 2,000 members, and a "
        "finished batch is removed only after the cutover, so at 100 x 2,000 new members fit only in new "
        f"batches where finished ones were removed: (d) starts from a tenant where {shape.added} finished "
        "batches were removed by hand and the repository says so (the pass before it takes that in)."
    )
    tables = [_table(s) for s in r.scenarios]
    return "\n\n".join([method, _targets(r), *tables, minimum, _naive(r), _profile(r)])


def write_doc(doc: Path, text: str) -> None:
    """Replace what is between the markers, or add the section at the end once."""
    current = doc.read_text(encoding="utf-8")
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        updated = f"{head}{BEGIN}\n{text}\n{END}{rest.split(END, 1)[1]}"
    else:
        updated = f"{current.rstrip()}\n\n{HEADING}\n\n{BEGIN}\n{text}\n{END}\n"
    doc.write_text(updated, encoding="utf-8")
