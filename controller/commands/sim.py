"""`stagectl sim`: create, inspect and disturb the Exchange Online simulator; seed the DNS simulator."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller import errors
from controller.desired import models as desired
from controller.exchange.errors import ExchangeError
from controller.sim.exchange import engine as sim_engine
from controller.sim.exchange.simulator import ExchangeSimulator
from controller.sim.exchange.state import SYNCED_LIKE, Completion, RecipientType, SimState, UserStatus
from controller.sim.exchange.store import SimStore


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="the Exchange Online simulator: init, advance, show, export, fail, fix, stop-batch, recipient, "
        "endpoint-check; dns-seed",
    )
    commands = parser.add_subparsers(dest="sim_command", required=True, metavar="SUBCOMMAND")

    def command(
        name: str, help_text: str, func: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument(
            "--state",
            type=Path,
            required=True,
            metavar="FILE",
            help="the simulator's state: a SQLite database (e.g. exchange.sqlite)",
        )
        sub.set_defaults(func=func)
        return sub

    init = command("init", "create a tenant (replacing any state at FILE)", run_init)
    init.add_argument(
        "--mail-users-from", type=Path, metavar="DIR", help="seed every desired member as a MailUser"
    )
    init.add_argument(
        "--completion", choices=[c.value for c in Completion], default=Completion.SUPPORTED.value
    )
    init.add_argument("--now", type=_moment, metavar="ISO", help="the virtual clock's start (default: now)")
    advance = command("advance", "move the virtual clock and the migration forward", run_advance)
    advance.add_argument("duration", type=_duration, help="e.g. 30m, 6h, 2d")
    command("show", "batches with status and counts, and the calls made per cmdlet", run_show)
    export = command("export", "print the whole tenant as JSON, for inspection", run_export)
    export.add_argument("--out", type=Path, metavar="FILE", help="write it to FILE (default: stdout)")
    fail = command("fail", "make a user's next syncs fail", run_fail)
    fail.add_argument("address")
    text = fail.add_mutually_exclusive_group(required=True)
    text.add_argument(
        "--row",
        choices=sorted(sim_engine.DOCUMENTED_FAILURES, key=lambda row: [int(p) for p in row.split(".")]),
        help="an error catalogue row (exchange-facts §9.1): its documented text, e.g. 1.4 (permissions)",
    )
    text.add_argument(
        "--type", dest="exception_type", help="e.g. MigrationPermanentException (with --message)"
    )
    fail.add_argument("--message", help="the message after the type (with --type)")
    fail.add_argument(
        "--times", type=int, default=None, help="clear after this many failures (default: until `sim fix`)"
    )
    fix = command("fix", "the administrator fixed a failed user's cause: the next retry syncs it", run_fix)
    fix.add_argument("address")
    stop = command("stop-batch", "stop a batch as an administrator would by hand (drift)", run_stop_batch)
    stop.add_argument("batch")
    recipient = command(
        "recipient",
        "set a member's directory entry: a synced mail user (the default), a cloud-only one, a mailbox "
        "already, another type, unlicensed, or missing (the preflight's cases, exchange-facts §6)",
        run_recipient,
    )
    recipient.add_argument("address")
    recipient.add_argument(
        "--type", dest="kind", choices=[k.value for k in RecipientType], default=RecipientType.MAIL_USER.value
    )
    recipient.add_argument(
        "--cloud-only", action="store_true", help="IsDirSynced false: not made by directory sync"
    )
    recipient.add_argument("--unlicensed", action="store_true", help="SKUAssigned false")
    recipient.add_argument("--missing", action="store_true", help="remove the entry: the member is missing")
    check = command(
        "endpoint-check",
        "make Test-MigrationServerAvailability answer Result Failed with an ErrorDetail, or Success again "
        "(exchange-facts §9.2)",
        run_endpoint_check,
    )
    outcome = check.add_mutually_exclusive_group(required=True)
    outcome.add_argument(
        "--fail",
        metavar="ERRORDETAIL",
        help='the ErrorDetail (its "--->" chain); "" for the documented NSPI error (exchange-facts §9.2)',
    )
    outcome.add_argument("--pass", dest="passes", action="store_true", help="the source answers again")
    seed = command(
        "dns-seed",
        "create or replace a zone in the DNS simulator's state file (FILE) from zone-file records",
        run_dns_seed,
    )
    seed.description = (
        "Each RECORD is NAME TTL TYPE DATA, as in a zone file: '@ 3600 MX 10 mail.contoso.com.'."
        ' TXT data is its quoted character-strings, \'@ 3600 TXT "v=spf1 mx " "-all"\' (one value'
        " split in two strings, observed joined as v=spf1 mx -all); TXT data without a leading quote is"
        " one value. Records with the same NAME and TYPE form one RRset and share its TTL."
    )
    seed.add_argument("--zone", required=True, help="e.g. contoso.com")
    seed.add_argument("--serial", type=int, default=1, help="the zone's SOA serial (default 1)")
    seed.add_argument("records", nargs="+", metavar="RECORD", help="NAME TTL TYPE DATA")


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _duration(text: str) -> timedelta:
    try:
        return desired.parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _store(args: argparse.Namespace) -> SimStore:
    if not args.state.exists():
        raise errors.InvalidInput(
            f"{args.state}: no simulator state here; create it with `stagectl sim init`"
        )
    return SimStore(args.state)


def run_init(args: argparse.Namespace) -> int:
    simulator = ExchangeSimulator(now=args.now, completion=Completion(args.completion))
    if args.mail_users_from is not None:
        from controller.desired import loader

        state = loader.load_directory(args.mail_users_from)
        for batch in state.batches:
            for member in batch.members:
                simulator.add_recipient(member.address)
    SimStore(args.state).create(simulator)
    count = len(simulator.state.recipients)
    print(f"{args.state}: tenant at {simulator.now.isoformat()} with {count} mail users")
    return 0


def run_advance(args: argparse.Namespace) -> int:
    with _store(args).transaction() as simulator:
        simulator.advance(args.duration)
        now = simulator.now
    print(f"now {now.isoformat()}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    with _store(args).transaction() as simulator:  # batch rows and their counts: no user is read
        lines = _show(simulator.state)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _show(state: SimState) -> list[str]:
    lines = [f"now {state.now.isoformat()}  completion {state.completion.value}"]
    for endpoint in state.endpoints.values():
        lines.append(f"endpoint {endpoint.name}  max {endpoint.max_concurrent}")
    for batch in state.batches.values():
        summary = batch.users.summary()
        synced = summary.count(SYNCED_LIKE)
        failed = summary.count([UserStatus.FAILED])
        status = sim_engine.batch_status(batch).value
        lines.append(f"batch {batch.name:<24} {status:<20} {synced}/{summary.total} synced  {failed} failed")
    for cmdlet, count in sorted(state.calls.items()):
        lines.append(f"calls {cmdlet:<28} {count}")
    return lines


def run_export(args: argparse.Namespace) -> int:
    """The tenant as `ExchangeSimulator.to_json()` gives it: `from_json` reads it back."""
    text = _store(args).load().to_json()
    if args.out is None:
        sys.stdout.write(text + "\n")
    else:
        args.out.write_text(text + "\n", encoding="utf-8")
        print(f"{args.out}: the tenant of {args.state} as JSON", file=sys.stderr)
    return 0


def run_fail(args: argparse.Namespace) -> int:
    if args.exception_type is not None and args.message is None:
        raise errors.InvalidInput("--type needs --message (or give --row)")
    with _store(args).transaction() as simulator:
        if args.row is not None:
            summary = simulator.fail_documented(args.address, args.row, times=args.times)
            print(f"{args.address}: its next syncs fail with {summary}")
        else:
            simulator.fail_user(
                args.address, exception_type=args.exception_type, message=args.message, times=args.times
            )
    return 0


def run_fix(args: argparse.Namespace) -> int:
    with _store(args).transaction() as simulator:
        simulator.clear_failure(args.address)
    print(f"{args.address}: fixed; Start-MigrationBatch retries it and it syncs")
    return 0


def run_recipient(args: argparse.Namespace) -> int:
    with _store(args).transaction() as simulator:
        if args.missing:
            simulator.remove_recipient(args.address)
        else:
            simulator.add_recipient(
                args.address,
                RecipientType(args.kind),
                dir_synced=not args.cloud_only,
                licensed=not args.unlicensed,
            )
    if args.missing:
        print(f"{args.address}: missing in Exchange Online")
    else:
        synced = "cloud-only" if args.cloud_only else "synced from on-premises"
        licence = "unlicensed" if args.unlicensed else "licensed"
        print(f"{args.address}: {args.kind}, {synced}, {licence}")
    return 0


def run_endpoint_check(args: argparse.Namespace) -> int:
    with _store(args).transaction() as simulator:
        simulator.fail_endpoint_check(None if args.passes else args.fail)
    print("Test-MigrationServerAvailability: " + ("Success" if args.passes else "Result Failed"))
    return 0


def run_dns_seed(args: argparse.Namespace) -> int:
    from controller.model.snapshot import RRset
    from controller.sim.dns import DnsSimBackend, character_strings

    rrsets: dict[tuple[str, str], RRset] = {}
    for record in args.records:
        fields = record.split(None, 3)
        if len(fields) != 4 or not fields[1].isdigit():
            raise errors.InvalidInput(f"record {record!r}: expected NAME TTL TYPE DATA, as in a zone file")
        name, ttl, rdtype, data = fields[0], int(fields[1]), fields[2].upper(), fields[3]
        try:
            character_strings(rdtype, data)
        except ValueError as error:
            raise errors.InvalidInput(f"record {record!r}: {error}") from None
        key = (name.lower(), rdtype)
        before = rrsets.get(key)
        if before is not None and before.ttl != ttl:
            raise errors.InvalidInput(f"record {record!r}: TTL {ttl} differs from {before.ttl} in its RRset")
        values = [*(before.values if before else []), data]
        rrsets[key] = RRset(name=name, type=rdtype, ttl=ttl, values=values)
    DnsSimBackend(args.state).seed_zone(args.zone, list(rrsets.values()), serial=args.serial)
    print(f"{args.state}: {args.zone} with {len(rrsets)} RRsets at serial {args.serial}")
    return 0


def run_stop_batch(args: argparse.Namespace) -> int:
    with _store(args).transaction() as simulator:
        try:
            simulator.call("Stop-MigrationBatch", {"Identity": args.batch}, by_hand=True)
        except ExchangeError as error:
            raise errors.Refused(f"batch {args.batch}: {error}") from None
    return 0
