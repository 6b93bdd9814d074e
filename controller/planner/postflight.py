"""The post-flight (contract §4): after a batch completed, did everyone really arrive? Pure.

Each member of a batch done as the cutover gate counts it (Completed, or Synced where Exchange refused to
complete it) must be a `UserMailbox` in Exchange Online: the staged migration "converts the … mail-enabled
user to an Exchange Online mailbox" (exchange-facts §6; Get-Recipient shows MailUser before, UserMailbox
after). Anomalies are listed per member: still a MailUser, missing, another type. Licences are a warning:
an unlicensed mailbox is disabled when the 30-day grace period ends (§6).

The verdict is remembered (`Memory.postflight`: the member digest at which it passed), so the members of a
verified batch are not looked up again (planner/reads.py). Until it passes, the batch does not count as
complete for the cutover, unless `force` (the command's --force or the batch's `spec.force`).
"""

from __future__ import annotations

from collections.abc import Callable

from controller.desired.models import BatchState, DesiredState
from controller.model.actions import Check, Readiness
from controller.model.snapshot import ExchangeObserved, ObservedRecipient
from controller.planner import reads
from controller.planner.draft import Draft, listing

PHASE = "post-flight"
GATE = "post-flight"
MEMBERS_SHOWN = 20
MAILBOX = "usermailbox"


def report(draft: Draft, desired: DesiredState, exchange: ExchangeObserved, *, force: bool) -> str | None:
    """Check every done batch not verified yet, record each verdict, remember those that passed; return
    why the cutover must wait (None when it need not). The caller blocks the cutover with it."""
    if exchange.batches is None:
        return None  # the batches-completed gate already says the batches are unknown
    memory = draft.memory
    observed = {b.Identity.lower(): b for b in exchange.batches}
    verified = dict(memory.postflight)
    holds: list[str] = []
    for batch in desired.batches:
        found = observed.get(batch.key)
        if batch.state is BatchState.REMOVED or found is None or not reads.done(found, memory):
            continue
        if verified.get(batch.key) == batch.members_digest:
            continue  # passed at this member list: not read again
        verified.pop(batch.key, None)
        checks = _checks([m.key for m in batch.members], {m.key: m.address for m in batch.members}, exchange)
        results = {c.result for c in checks}
        verdict = "failed" if "fail" in results else "unknown" if "unknown" in results else "passed"
        forced = verdict == "failed" and (force or batch.force)
        draft.readiness.append(Readiness(batch.name, PHASE, "forced" if forced else verdict, tuple(checks)))
        if verdict == "passed":
            verified[batch.key] = batch.members_digest
            continue
        why = "; ".join(
            f"{c.detail}: {listing(list(c.members))}" if c.members else c.detail
            for c in checks
            if c.result in ("fail", "unknown")
        )
        if forced:
            how = "spec.force" if batch.force else "--force"
            draft.note(f"batch/{batch.name}", f"post-flight failed, counted complete ({how}): {why}")
            continue
        holds.append(f"{batch.name}: {why}")
    wanted = {b.key: b.members_digest for b in desired.batches if b.state is not BatchState.REMOVED}
    draft.remember(postflight={k: v for k, v in verified.items() if wanted.get(k) == v})
    if not holds:
        return None
    return f"post-flight has not passed: {listing(holds, limit=3)}"


def _checks(keys: list[str], address: dict[str, str], exchange: ExchangeObserved) -> list[Check]:
    if exchange.mailUsers is None or exchange.mailboxes is None:
        return [Check("mailbox", "unknown", "Exchange recipients could not be read")]
    if exchange.recipientsRead is not None:
        covered = {a.lower() for a in exchange.recipientsRead}
        if any(k not in covered for k in keys):
            return [Check("mailbox", "unknown", "not every member was looked up in this observation")]
    mailboxes = {a.lower() for a in exchange.mailboxes}
    mail_users = {a.lower() for a in exchange.mailUsers}
    details = {r.PrimarySmtpAddress.lower(): r for r in exchange.recipients or ()}
    anomalies = [k for k in keys if k not in mailboxes]
    checks = []
    if anomalies:
        checks.append(
            Check(
                "mailbox",
                "fail",
                f"{len(anomalies)} of {len(keys)} members are not a UserMailbox in Exchange Online "
                "(exchange-facts §6: the migration converts each mail user to a mailbox)",
                _named(anomalies, address, lambda k: _anomaly(k, mail_users, details)),
            )
        )
    else:
        checks.append(
            Check("mailbox", "pass", f"all {len(keys)} members are a UserMailbox in Exchange Online")
        )
    checks.append(_licences([k for k in keys if k in mailboxes], address, exchange, details))
    return checks


def _anomaly(key: str, mail_users: set[str], details: dict[str, ObservedRecipient]) -> str:
    found = details.get(key)
    if found is not None and found.RecipientTypeDetails and found.RecipientTypeDetails.lower() != MAILBOX:
        kind = found.RecipientTypeDetails
        return "still a MailUser (not migrated)" if kind.lower() == "mailuser" else f"a {kind}"
    return "still a MailUser (not migrated)" if key in mail_users else "missing in Exchange Online"


def _licences(
    keys: list[str],
    address: dict[str, str],
    exchange: ExchangeObserved,
    details: dict[str, ObservedRecipient],
) -> Check:
    """exchange-facts §6: "If you don't assign a license, the mailbox is disabled when the grace period (30
    days) ends." A warning: it never holds the cutover."""
    if exchange.recipients is None:
        return Check("licence", "skip", "SKUAssigned is not in this snapshot (written before it was read)")
    unlicensed = [k for k in keys if k in details and details[k].SKUAssigned is False]
    if unlicensed:
        return Check(
            "licence",
            "warn",
            f"{len(unlicensed)} mailboxes have no licence (SKUAssigned false): each is disabled when the "
            "30-day grace period ends (exchange-facts §6); this holds nothing",
            _named(unlicensed, address, lambda _: "no licence"),
        )
    return Check("licence", "pass", "every mailbox has a licence, or none was reported missing")


def _named(keys: list[str], address: dict[str, str], describe: Callable[[str], str]) -> tuple[str, ...]:
    shown = tuple(f"{address.get(k, k)}: {describe(k)}" for k in keys[:MEMBERS_SHOWN])
    more = len(keys) - MEMBERS_SHOWN
    return (*shown, f"(+{more} more)") if more > 0 else shown
