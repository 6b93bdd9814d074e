"""The preflight (contract §4): before a batch is created or started, is everyone ready? Pure.

Per batch, each check named with the members it concerns: every member is a mail user in Exchange Online
(exchange-facts §6: the staged migration converts the mail-enabled user directory sync made), synced from
on-premises (IsDirSynced), without a mailbox yet, in no other batch (row 1.6 of §9.1), and the endpoint
answers Test-MigrationServerAvailability (§9.0: it does not throw, it says Result Failed with Message and
ErrorDetail). Licences are a warning only: Microsoft documents licensing after the migration (§6).

A failed check holds the batch under the gate `preflight` unless `force` (the command's --force or the
batch's `spec.force`); a check that could not be made holds it whatever force says (unknown is not ready).
Everything comes from the pass's bulk reads (planner/reads.py decides them): no call per member.
"""

from __future__ import annotations

from collections.abc import Callable

from controller.desired.models import Batch
from controller.model.actions import Check, Readiness
from controller.model.snapshot import ObservedRecipient
from controller.planner.batches.context import Context, batch_object
from controller.planner.draft import Draft, listing

PHASE = "preflight"
GATE = "preflight"
MEMBERS_SHOWN = 20  # members named per check in the plan and status; the count says the rest
# Whether a result holds the batch: a failure unless forced, an unknown always.
HOLDS = frozenset({"fail", "unknown"})
Details = dict[str, ObservedRecipient] | None  # the recipient read's entries; None: not in the snapshot


def gate(draft: Draft, batch: Batch, keys: list[str], context: Context, *, fresh: bool, start: bool) -> bool:
    """Run the preflight for `keys` (the batch's members, or those being added) and record it; True when
    the batch may be created or started. `fresh`: the members are not in this batch in Exchange yet (a new
    batch, one never started, members added), so none may have a mailbox; `start`: the batch starts, so the
    endpoint's connection test counts."""
    checks = member_checks(batch, keys, context, fresh=fresh)
    if start:
        checks.append(endpoint_check(draft, context))
    verdict = _verdict(checks)
    forced = verdict == "failed" and (context.force or batch.force)
    draft.readiness.append(Readiness(batch.name, PHASE, "forced" if forced else verdict, tuple(checks)))
    if verdict == "passed":
        return True
    reason = held_reason(checks)
    if forced:
        how = "spec.force" if batch.force else "--force"
        draft.note(batch_object(batch), f"preflight failed, forced ({how}): {reason}")
        return True
    draft.block(batch_object(batch), GATE, reason)
    return False


def report_planned(draft: Draft, batch: Batch, context: Context) -> None:
    """A planned batch: its preflight as it stands today, without acting (the endpoint is tested when it is
    about to start). A batch whose member checks pass is remembered (`memory.ready`) and not looked up again
    while its member list stays the same; its start checks every member again."""
    obj = batch_object(batch)
    ready = {key: digest for key, digest in draft.memory.ready.items() if key != batch.key}
    known = context.mail_users is not None and not context.unchecked(batch.member_keys)
    if (
        not known
        and context.mail_users is not None
        and draft.memory.ready.get(batch.key) == batch.members_digest
    ):
        count = len(batch.members)
        draft.note(obj, f"planned; ready: all {count} members passed the preflight when last checked")
        return
    checks = member_checks(batch, [m.key for m in batch.members], context, fresh=True)
    checks.append(
        Check("endpoint", "skip", "tested with Test-MigrationServerAvailability when the batch starts")
    )
    verdict = _verdict(checks)
    draft.readiness.append(Readiness(batch.name, PHASE, verdict, tuple(checks)))
    if verdict == "unknown":
        draft.note(obj, "planned; readiness unknown: Exchange recipients could not be read")
        return
    if verdict == "passed":
        ready[batch.key] = batch.members_digest
        warned = [c for c in checks if c.result == "warn"]
        extra = "".join(f"; {c.name}: {c.detail}" for c in warned)
        draft.note(obj, f"planned; ready: all {len(batch.members)} members passed the preflight{extra}")
    else:
        draft.note(obj, f"planned; not ready: {held_reason(checks)}")
    draft.remember(ready=ready)


def held_reason(checks: list[Check]) -> str:
    """The failed and unknown checks as one sentence, each with the members it names."""
    parts = []
    for check in checks:
        if check.result in HOLDS:
            named = f": {listing(list(check.members))}" if check.members else ""
            parts.append(f"{check.name}: {check.detail}{named}")
    return "; ".join(parts)


def _verdict(checks: list[Check]) -> str:
    results = {check.result for check in checks}
    if "fail" in results:
        return "failed"
    return "unknown" if "unknown" in results else "passed"


def member_checks(batch: Batch, keys: list[str], context: Context, *, fresh: bool) -> list[Check]:
    """The checks on the members `keys` of `batch`, in order; one `unknown` check when the recipient read
    did not cover them."""
    if context.mail_users is None or context.unchecked(keys):
        return [
            Check(
                "mail user",
                "unknown",
                "Exchange recipients could not be read, so readiness is unknown",
            )
        ]
    address = {m.key: m.address for m in batch.members}
    details = context.recipients
    count = len(keys)
    checks = []
    # exchange-facts §6: the staged migration "checks that a mail-enabled user exists… for each user".
    missing = [k for k in keys if k not in context.mail_users]
    if missing:
        checks.append(
            Check(
                "mail user",
                "fail",
                f"{len(missing)} of {count} members are not mail users in Exchange Online (directory sync?)",
                _named(missing, address, lambda k: _what(k, details)),
            )
        )
    else:
        checks.append(Check("mail user", "pass", f"all {count} members are mail users in Exchange Online"))
    present = [k for k in keys if k in context.mail_users]
    checks.append(_synced(present, address, details))
    checks.append(_no_mailbox(present, address, context, fresh=fresh))
    checks.append(_other_batch(batch, keys, address, context))
    checks.append(_licences(present, address, details))
    return checks


def _synced(present: list[str], address: dict[str, str], details: Details) -> Check:
    """exchange-facts §6: "directory sync is required"; a cloud-only mail user (IsDirSynced false) is not
    the on-premises mailbox's synced object the migration converts (and TargetAddress is set on)."""
    name = "synced from on-premises"
    if details is None:
        return Check(name, "skip", "IsDirSynced is not in this snapshot (written before it was read)")
    cloud = [k for k in present if _field(details, k, "IsDirSynced") is False]
    # An entry without IsDirSynced is unknown; an address without an entry was looked up before entries
    # were kept (a published snapshot's older lookups): said, not held.
    unreported = [k for k in present if k in details and _field(details, k, "IsDirSynced") is None]
    absent = [k for k in present if k not in details]
    if cloud:
        return Check(
            name,
            "fail",
            f"{len(cloud)} members are cloud-only mail users (IsDirSynced false): a staged migration "
            "converts the mail user directory sync made for the on-premises mailbox (exchange-facts §6); "
            "delete the cloud object and let directory sync create it",
            _named(cloud, address, lambda _: "IsDirSynced false"),
        )
    if unreported:
        return Check(
            name,
            "unknown",
            f"Exchange did not report IsDirSynced for {len(unreported)} members",
            _named(unreported, address, lambda _: "IsDirSynced not reported"),
        )
    older = f"; {len(absent)} looked up before IsDirSynced was read" if absent else ""
    return Check(name, "pass", f"every mail user is synced from on-premises (IsDirSynced true){older}")


def _no_mailbox(present: list[str], address: dict[str, str], context: Context, *, fresh: bool) -> Check:
    """A member who has a mailbox already has nothing to migrate into: a cloud mailbox made early (a licence
    assigned before migration, exchange-facts §9.1 row 1.11) is deleted and re-synced, or he leaves the
    batch. Not checked when a stopped batch resumes: its synced members have their mailbox by then."""
    name = "no mailbox yet"
    if not fresh:
        return Check(name, "skip", "the batch resumes: its members who synced have their mailbox already")
    has = [k for k in present if k in context.mailboxes]
    if has:
        return Check(
            name,
            "fail",
            f"{len(has)} members already have a mailbox in Exchange Online: a staged migration converts a "
            "mail user; delete the early cloud mailbox and re-sync (exchange-facts §9.1 row 1.11), or take "
            "the member out of the batch",
            _named(has, address, lambda _: "UserMailbox already"),
        )
    return Check(name, "pass", "no member has a mailbox in Exchange Online yet")


def _other_batch(batch: Batch, keys: list[str], address: dict[str, str], context: Context) -> Check:
    """Exchange fails a user another batch holds (UserDuplicateInOtherBatchException, exchange-facts §9.1
    row 1.6; a retry does not help). Known from the migration users read this pass: those of every batch
    that is not finished, and of every batch the repository does not name (read when a batch is about to
    start, planner/reads.py); a finished batch holds exactly its repository members, whom validation keeps
    out of every other batch."""
    name = "in no other batch"
    if context.users is None:
        return Check(name, "unknown", "migration users could not be read")
    if context.unnamed_unread:
        return Check(
            name,
            "unknown",
            f"the users of {', '.join(context.unnamed_unread[:5])} (batches the repository does not name) "
            "were not read this pass",
        )
    holders: dict[str, str] = {}
    for batch_key, users in context.users.items():
        if batch_key == batch.key:
            continue
        for key in keys:
            user = users.get(key)
            if user is not None and key not in holders:
                holders[key] = user.BatchId
    if holders:
        return Check(
            name,
            "fail",
            f"{len(holders)} members are users of another batch in Exchange, which fails them "
            "(UserDuplicateInOtherBatchException, exchange-facts §9.1 row 1.6): remove them there first",
            _named(list(holders), address, lambda k: f"in batch {holders[k]}"),
        )
    return Check(name, "pass", "no member is a user of another batch in Exchange")


def _licences(present: list[str], address: dict[str, str], details: Details) -> Check:
    """A warning, never a hold: Microsoft documents licensing after the migration — "You have 30 days to add
    licenses", then the mailbox is disabled (exchange-facts §6). SKUAssigned comes with the recipient read."""
    name = "licence"
    if details is None:
        return Check(name, "skip", "SKUAssigned is not in this snapshot (written before it was read)")
    unlicensed = [k for k in present if _field(details, k, "SKUAssigned") is False]
    unreported = [k for k in present if _field(details, k, "SKUAssigned") is None]
    if unlicensed:
        note = f"; SKUAssigned not reported for {len(unreported)} more" if unreported else ""
        return Check(
            name,
            "warn",
            f"{len(unlicensed)} members have no licence (SKUAssigned false): license each within 30 days "
            f"after its mailbox is created, or it is disabled (exchange-facts §6); this holds nothing{note}",
            _named(unlicensed, address, lambda _: "no licence"),
        )
    if unreported:
        return Check(name, "warn", f"SKUAssigned not reported for {len(unreported)} members")
    return Check(name, "pass", "every member has a licence (SKUAssigned true)")


def endpoint_check(draft: Draft, context: Context) -> Check:
    """The endpoint's connection, tested this pass with Test-MigrationServerAvailability -Endpoint."""
    name = "endpoint"
    endpoint = context.desired.migration.endpoint.name
    cmdlets = {getattr(a, "cmdlet", "") for a in draft.actions if a.object == f"endpoint/{endpoint}"}
    if "New-MigrationEndpoint" in cmdlets:
        return Check(
            name,
            "skip",
            "created in this plan: New-MigrationEndpoint verifies the connection itself (the cmdlet "
            "reference: unless -SkipVerification)",
        )
    changed = (
        "; its settings change in this plan, so the next start tests them again"
        if "Set-MigrationEndpoint" in cmdlets
        else ""
    )
    found = context.endpoint_check
    if found is None:
        if context.endpoint_problem:  # the endpoint could not be read (or is not one): no test was possible
            return Check(
                name, "unknown", f"Test-MigrationServerAvailability was not run: {context.endpoint_problem}"
            )
        if context.endpoint_check_error:
            return Check(
                name,
                "unknown",
                f"Test-MigrationServerAvailability could not run: {context.endpoint_check_error}",
            )
        return Check(
            name,
            "skip",
            "not tested in this observation (a snapshot the controller published: it tests the endpoint "
            "with Test-MigrationServerAvailability in the pass that starts the batch)",
        )
    if found.succeeded:
        return Check(name, "pass", f"Test-MigrationServerAvailability -Endpoint {endpoint}: Success{changed}")
    detail = f" ErrorDetail: {found.ErrorDetail[:300]}" if found.ErrorDetail else ""
    return Check(
        name,
        "fail",
        f"Test-MigrationServerAvailability -Endpoint {endpoint}: Result {found.Result or '(none)'}: "
        f"{found.Message[:300]}{detail}; fix the connection (exchange-facts §9.2){changed}",
    )


def _what(key: str, details: Details) -> str:
    """Why a member is not a mail user: missing, or another type of recipient (a MailContact, a User)."""
    found = None if details is None else details.get(key)
    kind = found.RecipientTypeDetails if found is not None else ""
    return f"a {kind}, not a mail user" if kind else "missing"


def _field(details: dict[str, ObservedRecipient], key: str, name: str) -> bool | None:
    """IsDirSynced or SKUAssigned of a member's entry; None when the read found none or it was left out."""
    found = details.get(key)
    value = None if found is None else getattr(found, name)
    return value if isinstance(value, bool) else None


def _named(keys: list[str], address: dict[str, str], describe: Callable[[str], str]) -> tuple[str, ...]:
    """`address: why` for the first MEMBERS_SHOWN members, and how many more there are."""
    shown = tuple(f"{address.get(k, k)}: {describe(k)}" for k in keys[:MEMBERS_SHOWN])
    more = len(keys) - MEMBERS_SHOWN
    return (*shown, f"(+{more} more)") if more > 0 else shown
