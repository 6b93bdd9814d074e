"""The files of a new migration repository, rendered from a batch plan: the Migration document with endpoint
placeholders, one Batch file and member CSV per batch (why it holds whom in its comments), the DnsZone
with the records DNS served, the crossing grants. Pure: {path relative to the repository: text}.

Exchange Online holds at most 100 batches that are not removed (contract §2): batches past that go to
`queued/batches/`, outside the desired directory, to be moved in as earlier batches are removed.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from controller.desired import models
from controller.desired.shown import printable
from controller.model.snapshot import RRset
from controller.readiness.grouping import BatchPlan, PlannedBatch
from controller.readiness.inventory import Inventory, counted

DESIRED = "desired"
QUEUED = "queued"
CROSSINGS = "crossing-grants.csv"
WIDTH = 108
SPF_PREFIX = "v=spf1"


@dataclass(frozen=True, slots=True)
class Dns:
    """The zone's records as read (`rrsets`), or None with `why` when DNS could not be read."""

    rrsets: tuple[RRset, ...] | None
    source: str  # the resolver asked
    authoritative: bool = False
    why: str = ""


def render(inventory: Inventory, plan: BatchPlan, *, domain: str, dns: Dns, command: str) -> dict[str, str]:
    files = {f"{DESIRED}/migration.yaml": migration(domain, inventory, command)}
    total = len(plan.batches)
    for number, batch in enumerate(plan.batches):
        folder = DESIRED if number < models.MAX_BATCHES else QUEUED
        stem = batch.name.lower()
        files[f"{folder}/batches/{stem}.yaml"] = batch_file(
            batch, number, total, command, queued=folder == QUEUED
        )
        files[f"{folder}/batches/{stem}.csv"] = members_csv(inventory, batch)
    files[f"{DESIRED}/dns/{domain}.yaml"] = zone_file(domain, dns)
    if plan.crossings:
        files[CROSSINGS] = crossings_csv(plan)
    return files


def _comment(text: str, indent: str = "") -> list[str]:
    """`text` (user data already escaped) as comment lines; a line break in it can never end the comment."""
    flat = " ".join(printable(text).split())
    return [f"{indent}# {line}" for line in textwrap.wrap(flat, WIDTH - len(indent) - 2)] or [f"{indent}#"]


def migration(domain: str, inventory: Inventory, command: str) -> str:
    lines = [
        "# yaml-language-server: $schema=../schemas/migration.schema.json",
        *_comment(
            f"The staged migration of {domain}, scaffolded by `{command}` from "
            f"{counted(len(inventory.mailboxes), 'mailbox')}. Fill in the endpoint (the lines marked TODO): "
            "the on-premises Outlook Anywhere host, a mailbox the migration account can open, and where the "
            "controller finds that account's credentials (env:NAME or file:PATH; the secret itself never "
            "belongs in git)."
        ),
        "apiVersion: stagectl/v1",
        "kind: Migration",
        "metadata:",
        f"  name: {domain}",
        "spec:",
        "  endpoint:",
        "    name: StagedEndpoint",
        "    autodiscover: false",
        f"    exchangeServer: mail.{domain}   # TODO: the Exchange 2003/2007 server's external name",
        f"    rpcProxyServer: mail.{domain}   # TODO: the Outlook Anywhere (RPC over HTTP) host",
        f"    emailAddress: migration.admin@{domain}   # TODO: a mailbox the migration account can open",
        "    authentication: Basic",
        "    maxConcurrentMigrations: 20",
        "    # TODO: the migration account (DOMAIN\\user and password) in the controller's environment",
        "    credentialsRef: env:ONPREM_MIGRATION_CREDENTIALS",
        "  policy:",
        "    lowTtl: 300",
        "    ttlLeadTime: 48h",
        "    removeAfterCutover: 72h",
        "    drift:",
        "      exchange: warn",
        "      dns: correct",
    ]
    return "\n".join(lines) + "\n"


def batch_file(batch: PlannedBatch, number: int, total: int, command: str, *, queued: bool) -> str:
    head = f"Batch {number + 1} of {total}, planned by `{command}`."
    if queued:
        head += (
            f" Queued: Exchange Online holds {models.MAX_BATCHES} batches at most; move this file and its CSV"
            " into desired/batches/ once earlier batches are removed."
        )
    lines = [
        "# yaml-language-server: $schema=../../schemas/batch.schema.json",
        *_comment(head),
        *[line for sentence in batch.why for line in _comment(sentence)],
        "apiVersion: stagectl/v1",
        "kind: Batch",
        "metadata:",
        f"  name: {batch.name}",
        "spec:",
        "  state: planned",
        f"  membersCsv: {batch.name.lower()}.csv",
    ]
    return "\n".join(lines) + "\n"


def members_csv(inventory: Inventory, batch: PlannedBatch) -> str:
    # Addresses passed the address check (no leading =, +, -, @): nothing here reads as a formula.
    return "EmailAddress\n" + "".join(f"{inventory.mailboxes[node].address}\n" for node in batch.members)


def crossings_csv(plan: BatchPlan) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["Identity", "User", "AccessRights", "IdentityBatch", "UserBatch", "Line"])
    for crossing in plan.crossings:
        grant = crossing.grant
        writer.writerow(
            [
                grant.identity,
                grant.user,
                ",".join(right.value for right in grant.rights),
                crossing.identity_batch,
                crossing.user_batch,
                grant.line,
            ]
        )
    return out.getvalue()


def zone_file(domain: str, dns: Dns) -> str:
    lines = ["# yaml-language-server: $schema=../../schemas/dnszone.schema.json"]
    if dns.rrsets is None:
        lines += _comment(
            f"DNS could not be read through {dns.source} ({dns.why}): fill in the records {domain} serves "
            "today (the MX, the autodiscover record and the SPF string), as in the commented example below. "
            "Until then no record is managed."
        )
    else:
        exact = (
            "as its own server answered"
            if dns.authoritative
            else "through a caching resolver: a TTL may be less than the zone's, check it"
        )
        lines += _comment(
            f"The records {domain} served when `stagectl init` read them through {dns.source}, {exact}."
        )
    lines += _comment(
        "Only the RRsets listed here are managed. They hold today's values on purpose: at the cutover, write "
        "the Exchange Online MX host the admin center shows (it is never constructed) and "
        "autodiscover.outlook.com. for autodiscover, and mark both `cutover: true`. Never mark a record "
        "cutover while it holds today's values: a cutover record already at its values counts as cut over "
        "(contract §4)."
    )
    lines += ["apiVersion: stagectl/v1", "kind: DnsZone", "metadata:", f"  name: {domain}", "spec:"]
    records, notes = _records(dns.rrsets or ())
    if dns.rrsets is None or not records:
        lines += [
            "  records: []",
            "  # records:",
            '  #   - {name: "@", type: MX, ttl: 3600, values: ["10 mail.' + domain + '."]}',
            '  #   - {name: autodiscover, type: CNAME, ttl: 3600, values: ["mail.' + domain + '."]}',
            '  #   - {name: "@", type: TXT, ttl: 3600, spf: "v=spf1 mx -all"}',
        ]
    else:
        lines.append("  records:")
        for note in notes:
            lines += _comment(note, "    ")
        lines += records
    return "\n".join(lines) + "\n"


def _records(rrsets: Sequence[RRset]) -> tuple[list[str], list[str]]:
    """The YAML lines of the records to manage, and comments about what was found but is not managed."""
    lines: list[str] = []
    notes: list[str] = []
    for rrset in rrsets:
        name = '"@"' if rrset.name == "@" else json.dumps(rrset.name)
        if rrset.type == "MX" or (rrset.type == "CNAME" and rrset.name.lower() == "autodiscover"):
            values = ", ".join(json.dumps(value) for value in sorted(rrset.values))
            lines += [f"    - name: {name}", f"      type: {rrset.type}", f"      ttl: {rrset.ttl}"]
            lines.append(f"      values: [{values}]")
        elif rrset.type == "TXT":
            spf = [value for value in rrset.values if value.lower().startswith(SPF_PREFIX)]
            if len(spf) == 1:
                lines += [f"    - name: {name}", "      type: TXT", f"      ttl: {rrset.ttl}"]
                lines.append(f"      spf: {json.dumps(spf[0])}")
            elif len(spf) > 1:
                notes.append(
                    f"{len(spf)} SPF strings at {rrset.name} (SPF allows one): not managed until one is left."
                )
        else:
            shown = ", ".join(rrset.values)
            notes.append(
                f"autodiscover is an {rrset.type} record ({shown}), not managed here: at the cutover it "
                "becomes the CNAME autodiscover.outlook.com., which cannot stand beside it."
            )
    return lines, notes
