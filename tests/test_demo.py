"""`make demo`'s main job as a test: the example converges through the real pypsrp client, the PSRP
gateway over TLS and a real BIND, driven by commits, with the minimum number of Exchange writes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_example_migration_converges_over_psrp_and_bind() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controller.sim.demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"simulator behind the PSRP gateway at https://127\.0\.0\.1:\d+/wsman", out)
    assert re.search(r"DNS +BIND 9 on 127\.0\.0\.1:\d+, updates signed with TSIG", out)
    assert "Converged after" in out
    assert "Ready       True   Converged" in out
    assert "audit chain: intact" in out
    # The audit trail in git history: the merge that started the pilot carries what it did (issue 15 item 7).
    log = out[out.index("$ git log --notes=stagectl") :]
    started = log[log.index("Pilot: start Batch0-IT (Ada Admin)") :].split("\n\n")[0]
    assert re.search(r"New-MigrationBatch batch/Batch0-IT -> ok \[audit \d+ [0-9a-f]{64}\]", started), started
    # Minimality: one endpoint, and per batch one New (-AutoStart), one Complete, one Remove; one retry.
    assert (
        "Exchange cmdlet calls: 14 writes (Complete-MigrationBatch 4, New-MigrationBatch 4, "
        "New-MigrationEndpoint 1, Remove-MigrationBatch 4, Start-MigrationBatch 1)"
    ) in out
    # A Sales member fails on permissions (exchange-facts §9.1 row 1.4): the plan shows the error, the
    # documented fix and the retry rule, and holds the batch instead of retrying blindly; the
    # administrator grants Full Access and commits spec.retry; one Start-MigrationBatch, and it syncs.
    failed = (
        "      fail batch/Batch2-Sales Jakob.Carter@contoso.com [1.4]: Error: MigrationPermanentException: "
        "Microsoft Exchange couldn't sign in to the user's on-premises account.\n"
        "           fix: Assign the migration administrator Receive-As on the mailbox database or Full "
        "Access on every mailbox\n"
    )
    assert failed in out
    held = out.index("           retry: fix first, then retry; held until fixed; then change spec.retry")
    assert held < out.index(
        "hold batch/Batch2-Sales [fix-first]: SyncedWithErrors: 1 failed members need a fix"
    )
    fixed = out.index("== on premises: Full Access granted to the migration administrator on Jakob.Carter")
    merged = out.index("== merged: Batch2-Sales: Full Access granted on premises to the failed member's")
    retried = out.index("      ok   Start-MigrationBatch -Identity Batch2-Sales")
    synced = out.index(
        "      synced Jakob.Carter@contoso.com in Batch2-Sales: the retry after the fix worked"
    )
    completed = out.index("ok   Complete-MigrationBatch -Identity Batch2-Sales")
    assert held < fixed < merged < retried < completed < synced < out.index("replace contoso.com MX 300 0")
    assert out.count("Start-MigrationBatch -Identity Batch2-Sales") == 1
    assert "Ada Admin <ada.admin@contoso.com>: Start-MigrationBatch batch/Batch2-Sales -> ok" in out
    # SPF authorises Exchange Online from the first started batch, before its New-MigrationBatch; the
    # cutover swaps the values at the low TTL with the final SPF string, and the TTL follows after the
    # rollback window; SPF kept the verification token throughout.
    coexistence = (
        "replace contoso.com TXT 3600 MS=ms12345678 | v=spf1 mx include:spf.protection.outlook.com -all"
    )
    assert out.index(coexistence) < out.index("New-MigrationBatch -Name Batch0-IT")
    swap = out.index("replace contoso.com MX 300 0 contoso-com.mail.protection.outlook.com.")
    final = out.index(
        "replace contoso.com TXT 3600 MS=ms12345678 | v=spf1 include:spf.protection.outlook.com -all"
    )
    raised = out.index("set TTL contoso.com MX 3600 0 contoso-com.mail.protection.outlook.com.")
    assert swap < final < raised
    assert "create autodiscover.contoso.com CNAME 300 autodiscover.outlook.com." in out
    assert "set TTL autodiscover.contoso.com CNAME 3600 autodiscover.outlook.com." in out
    # Minimality in DNS: MX lowered, swapped, raised; the CNAME created, raised; SPF coexisting, final.
    assert "DNS updates: 7 (@/MX 3, @/TXT 2, autodiscover/CNAME 2)" in out
    assert "hold batch/Batch3-Finance [preflight]: mail user: 2 of " in out
    # Every audit record names the commit's author; no secret reaches the output.
    assert (
        "Max Consultant <max@migration-partners.example>: Complete-MigrationBatch batch/Batch0-IT -> ok"
        in out
    )
    assert "migration.admin:" not in out
