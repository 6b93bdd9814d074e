"""`stagectl init --domain D --mailboxes inventory.csv [--permissions permissions.csv] [--out DIR]`: scaffold
a migration repository from an on-premises inventory (batches planned by `controller.readiness`)."""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
from pathlib import Path

from controller import errors
from controller.commands import schema
from controller.desired import models
from controller.desired.shown import printable
from controller.dns import current
from controller.dns.wire import Server
from controller.readiness import grouping, inventory, scaffold

SHOWN_CROSSINGS = 10


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "init", help="scaffold a migration repository (batches, DnsZone) from an on-premises inventory"
    )
    parser.add_argument("--domain", required=True, help="the domain migrated, e.g. contoso.com")
    parser.add_argument("--mailboxes", required=True, type=Path, metavar="CSV", help="Get-Mailbox statistics")
    parser.add_argument("--permissions", type=Path, metavar="CSV", help="Get-MailboxPermission export")
    parser.add_argument(
        "--out", type=Path, default=Path("."), metavar="DIR", help="the repository (default: .)"
    )
    add_planning_arguments(parser)
    parser.add_argument(
        "--large-mailbox-gb",
        type=float,
        default=grouping.DEFAULT_LARGE_MAILBOX_GB,
        metavar="N",
        help="mailboxes this large with no grant go last (default: %(default)g)",
    )
    parser.add_argument(
        "--group-by", choices=("department", "office"), default="department", help="default: department"
    )
    parser.add_argument(
        "--dns-server",
        metavar="ADDRESS[:PORT]",
        help="the resolver to read today's records through (default: the system's first name server)",
    )
    parser.add_argument("--no-dns", action="store_true", help="do not read DNS: write a DnsZone to fill in")
    parser.set_defaults(func=run)


def add_planning_arguments(parser: argparse.ArgumentParser) -> None:
    """The rules `init` plans by and `lint` checks: the size budget and the pilot's departments."""
    parser.add_argument(
        "--max-batch-gb",
        type=_positive,
        default=grouping.DEFAULT_MAX_BATCH_GB,
        metavar="N",
        help="the size budget of one batch in GB (default: %(default)g)",
    )
    parser.add_argument(
        "--pilot-department",
        type=_pattern,
        default=grouping.PILOT_DEPARTMENT,
        metavar="REGEX",
        help="departments of the IT pilot (default: %(default)s)",
    )


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of GB")
    return value


def _pattern(text: str) -> str:
    try:
        re.compile(text)
    except re.error as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a regular expression: {error}") from None
    return text


def read_file(path: Path) -> tuple[str, bytes]:
    try:
        return str(path), path.read_bytes()
    except OSError as error:
        raise errors.InvalidInput(f"{printable(str(path))}: cannot read: {error.strerror}") from error


def run(args: argparse.Namespace) -> int:
    try:
        domain = models.hostname(args.domain.strip().rstrip(".")).lower()
    except ValueError as error:
        raise errors.InvalidInput(f"--domain: {error}") from None
    desired = args.out / scaffold.DESIRED
    if desired.exists() and any(desired.iterdir()):
        raise errors.InvalidInput(f"{printable(str(desired))} already holds files: choose another --out")
    found = inventory.read(
        read_file(args.mailboxes), read_file(args.permissions) if args.permissions else None
    )
    if not found.mailboxes:
        raise errors.InvalidInput(f"{printable(str(args.mailboxes))}: no mailbox in the inventory")
    options = grouping.Options(
        max_batch_gb=args.max_batch_gb,
        large_mailbox_gb=args.large_mailbox_gb,
        group_by=args.group_by,
        pilot=args.pilot_department,
    )
    plan = grouping.plan(found, options)
    dns = _read_dns(domain, args)
    files = scaffold.render(found, plan, domain=domain, dns=dns, command=_command(args, domain))
    files.update({f"schemas/{name}": text for name, text in schema.schema_files().items()})
    for relative, text in sorted(files.items()):
        path = args.out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    _report(found, plan, dns, args.out, files)
    return 0


def _pilot_pattern(text: str) -> str:
    return "" if text == grouping.PILOT_DEPARTMENT else f" --pilot-department {text!r}"


def _command(args: argparse.Namespace, domain: str) -> str:
    """The command as the files name it: the rules it planned by, not the paths it read."""
    return (
        f"stagectl init --domain {domain} --max-batch-gb {args.max_batch_gb:g} "
        f"--large-mailbox-gb {args.large_mailbox_gb:g} --group-by {args.group_by}"
        + _pilot_pattern(args.pilot_department)
    )


def _read_dns(domain: str, args: argparse.Namespace) -> scaffold.Dns:
    if args.no_dns:
        return scaffold.Dns(None, "no resolver", why="--no-dns")
    try:
        resolver = Server.parse(args.dns_server) if args.dns_server else current.system_resolver()
        if resolver is not None:
            ipaddress.ip_address(resolver.host)  # a name would be looked up first, outside the time bound
    except ValueError:
        raise errors.InvalidInput(
            f"--dns-server {printable(args.dns_server)}: give the resolver's address, ADDRESS or ADDRESS:PORT"
        ) from None
    if resolver is None:
        return scaffold.Dns(None, "no resolver", why="no name server in the system's resolver configuration")
    read = current.read(domain, resolver)
    if read.unreadable is not None:
        return scaffold.Dns(None, read.server, why=read.unreadable)
    return scaffold.Dns(read.rrsets, read.server, authoritative=read.authoritative)


def _report(
    found: inventory.Inventory,
    plan: grouping.BatchPlan,
    dns: scaffold.Dns,
    out: Path,
    files: dict[str, str],
) -> None:
    for warning in found.warnings:
        print(warning, file=sys.stderr)
    if dns.rrsets is None:
        print(
            f"warning: DNS not read through {dns.source} ({printable(dns.why)}): "
            f"{scaffold.DESIRED}/dns/ holds a DnsZone to fill in",
            file=sys.stderr,
        )
    for note in plan.notes:
        print(f"warning: {note}", file=sys.stderr)
    members = sum(len(batch.members) for batch in plan.batches)
    print(
        f"{inventory.counted(len(plan.batches), 'batch')} for {inventory.counted(members, 'mailbox')} and "
        f"{inventory.counted(len(found.grants), 'grant')}:"
    )
    for batch in plan.batches:
        count = inventory.counted(len(batch.members), "member")
        print(f"  {batch.name:<36} {count:>14} {inventory.gigabytes(batch.size):>12}")
        for sentence in batch.why:
            print(f"      {sentence}")
    print(f"grants crossing batches: {len(plan.crossings):,}", end="")
    print(f" (every one in {out / scaffold.CROSSINGS})" if plan.crossings else "")
    for crossing in plan.crossings[:SHOWN_CROSSINGS]:
        grant = crossing.grant
        rights = ",".join(right.value for right in grant.rights)
        print(
            f"  {grant.user} {rights} on {grant.identity}: {crossing.user_batch} / {crossing.identity_batch}"
        )
    if len(plan.crossings) > SHOWN_CROSSINGS:
        print(f"  ... and {len(plan.crossings) - SHOWN_CROSSINGS:,} more")
    print(f"direct reports in another batch than their manager: {plan.managers_apart:,}")
    queued = sum(1 for path in files if path.startswith(f"{scaffold.QUEUED}/") and path.endswith(".yaml"))
    if queued:
        print(
            f"{queued} batches are queued in {out / scaffold.QUEUED}: Exchange Online holds "
            f"{models.MAX_BATCHES} at most; move each in as earlier batches are removed"
        )
    print(f"wrote {len(files)} files under {printable(str(out))}")
    print(
        f"next: fill in the endpoint (TODO) in {out / scaffold.DESIRED / 'migration.yaml'}, then "
        f"`stagectl validate {out / scaffold.DESIRED}`"
    )
