"""The error catalogue (exchange-facts §9): a failed migration user's ErrorSummary, recognised, with its
cause, the documented fix and whether `Start-MigrationBatch` helps. Pure data and a matcher, no I/O.

Ids are the rows of the facts file: "1.x" the per-user failures (§9.1), "2.x" the endpoint and connection
rows (§9.2, numbered here in the table's order). Matching follows §9.0: on the exception type of the
`Error: <ExceptionType>: <message> --> <inner message>` format first, then on the few quoted texts of
rows whose type is not known (or whose type is a generic wrapper); an error neither recognises is
`None`, shown as "not in the catalogue".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Retry(StrEnum):
    """Does Start-MigrationBatch help (the facts' Retry column)?"""

    FIX_THEN_RETRY = "fix-then-retry"  # Fix→R: fix the cause first, then Start-MigrationBatch
    AUTO = "auto"  # the service retries by itself; a user it gave up on is retried by Start-MigrationBatch
    NO = "no"  # Start-MigrationBatch does not help (a new batch, a licence, or nothing at all)
    RETRY = "retry"  # R: Start-MigrationBatch helps as it is

    @property
    def helps(self) -> bool:
        """Whether Start-MigrationBatch helps now, before anyone fixes anything."""
        return self in (Retry.AUTO, Retry.RETRY)

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Retry.FIX_THEN_RETRY: "fix first, then retry",
    Retry.AUTO: "transient: retried",
    Retry.NO: "a retry does not help",
    Retry.RETRY: "a retry helps",
}


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of the catalogue. `exceptions` are the type names it is recognised by (the last dotted
    component, as `Error: <type>:` names it); `texts` the quoted phrases, matched case-insensitively."""

    id: str
    exceptions: tuple[str, ...]
    cause: str
    fix: str
    retry: Retry
    source: str
    texts: tuple[str, ...] = ()


UNKNOWN = "not in the catalogue"
"""How an error `match` does not recognise is shown, followed by its text."""

CATALOGUE: tuple[Entry, ...] = (
    Entry(
        "1.1",
        ("MigrationRecipientNotFoundException",),
        "no Exchange Online recipient of the right type has that address: a wrong EmailAddress in the "
        "CSV, or a cloud object left a plain User after a licence was assigned and removed",
        "Create or sync the mail user (directory sync), or fix the EmailAddress; in [S11] the fix was to "
        "hard-delete the Entra user and sync it again. Then retry.",
        Retry.FIX_THEN_RETRY,
        "[S10][S11][S12]",
        ("A recipient wasn't found for",),
    ),
    Entry(
        "1.2",
        (),
        "the mail user is missing in Exchange Online or not synced yet",
        "Not documented (the 2012 fix was not retrievable); sync the mail user with that primary "
        "address, then retry.",
        Retry.FIX_THEN_RETRY,
        "[S1]",
        ("A valid primary e-mail address couldn't be found in the cloud-based service",),
    ),
    Entry(
        "1.3",
        ("SourceRecipientDoesNotExistException",),
        "the on-premises mailbox is hidden from the address list, or the address is wrong",
        "Verify that the user isn't hidden in the on-premises address list (clear 'Hide from Exchange "
        "address lists'), then re-run the migration.",
        Retry.FIX_THEN_RETRY,
        "[S1]",
        ("couldn't be found in the on-premises domain",),
    ),
    Entry(
        "1.4",
        (),
        "the migration administrator lacks rights on the on-premises mailbox",
        "Assign the migration administrator Receive-As on the mailbox database or Full Access on every "
        "mailbox (staged also needs WriteProperty on TargetAddress), then retry.",
        Retry.FIX_THEN_RETRY,
        "[S1][S18]",
        ("couldn't sign in to the user's on-premises account", "Couldn't connect to the source mailbox"),
    ),
    Entry(
        "1.5",
        (),
        "Microsoft 365 can't change attributes of federated users (ForceChangePassword=True with AD FS)",
        "Set ForceChangePassword to False in the CSV, then re-run the batch or put the user in a new one.",
        Retry.FIX_THEN_RETRY,
        "[S2]",
        ("A Windows Live error occurred while provisioning", "can't be migrated because they contain errors"),
    ),
    Entry(
        "1.6",
        ("UserDuplicateInOtherBatchException",),
        "the user is in another batch, or in an old batch that was never removed",
        "Remove the user from the other batch (Remove-MigrationUser) or remove the old batch, then "
        "migrate the user in a new batch; retrying this batch does not help.",
        Retry.NO,
        "[S13][S14]",
        ("is already included in migration batch",),
    ),
    Entry(
        "1.7",
        ("UserAlreadyBeingMigratedException",),
        "an orphaned move request for the user",
        "Remove the orphaned request, then resume the batch.",
        Retry.FIX_THEN_RETRY,
        "[S13]",
        ("already has a pending request",),
    ),
    Entry(
        "1.8",
        ("TooManyBadItemsPermanentException",),
        "the number of bad items is greater than the set limit",
        "Raise BadItemLimit (default 0), then resume; under DataConsistencyScore, Investigate -> "
        "Set-MigrationBatch -ApproveSkippedItems, Poor -> the migration cannot be forced to succeed.",
        Retry.FIX_THEN_RETRY,
        "[S5][S20]",
    ),
    Entry(
        "1.9",
        ("TooManyLargeItemsPermanentException",),
        "messages that exceed the 150 MB message limit",
        "Remove the items over 150 MB from the on-premises mailbox, then resume.",
        Retry.FIX_THEN_RETRY,
        "[S6]",
        ("exceeded the maximum number of large items",),
    ),
    Entry(
        "1.10",
        ("QuotaExceededException", "MapiExceptionShutoffQuotaExceeded"),
        "the target mailbox quota is exceeded",
        "Assign a licence with a larger mailbox quota, then retry.",
        Retry.FIX_THEN_RETRY,
        "[S13]",
    ),
    Entry(
        "1.11",
        (),
        "msExchMailboxGuid was synced, or the licence was assigned before the migration",
        "License the user within 30 days after the migration; a pre-licensed cloud mailbox: delete it "
        "and sync it again. Start-MigrationBatch does not help.",
        Retry.NO,
        "[S30][S18][S11]",
        ("on-premises mailbox hasn't been migrated to Exchange Online",),
    ),
    Entry(
        "1.12",
        (),
        "a cloud object already exists for the address",
        "Permanently delete the cloud user, then retry.",
        Retry.FIX_THEN_RETRY,
        "[S8]",
        ("A different type of Active Directory object already exists for",),
    ),
    Entry(
        "1.13",
        ("SyncTimeoutException",),
        "a slow or stuck source",
        "Restart the batch (Start-MigrationBatch).",
        Retry.RETRY,
        "[S15]",
        ("Job is poisoned", "The job has not made progress since"),
    ),
    Entry(
        "1.14",
        (),
        "a duplicate, stale or foreign address",
        "Find the conflict with Get-Recipient; run Update-GlobalAddressList and recreate the batch; "
        "remove the address or add the accepted domain. Then retry.",
        Retry.FIX_THEN_RETRY,
        "[S9][S7][S14]",
        ("Choose another proxy address", "is not a valid SMTP address", "it's not an accepted domain"),
    ),
    Entry(
        "1.15",
        (),
        "Exchange Online resource health (a stall, not a failure)",
        "Wait for the Microsoft 365 resources to become available; the service resumes by itself.",
        Retry.AUTO,
        "[S26][S27]",
        ("Relinquishing job because of large delays", "StalledDueToTarget"),
    ),
    Entry(
        "1.16",
        ("MigrationTransientException", "TooManyTransientFailuresException"),
        "a transient failure; after repeated ones it becomes TooManyTransientFailuresException",
        "The service retries by itself; once it gives up, Start-MigrationBatch retries the user.",
        Retry.AUTO,
        "C",
    ),
    Entry(
        "2.1",
        (),
        "the endpoint cannot reach the server: external connections refused, rights, Autodiscover, a "
        "wrong FQDN or RPC proxy, an unsupported version",
        "Use Basic authentication and SSL on Outlook Anywhere with a trusted certificate naming the "
        "Outlook Anywhere FQDN; check with the Remote Connectivity Analyzer, then retry.",
        Retry.FIX_THEN_RETRY,
        "[S4]",
        ("Unable to connect to the server. Please check the connection settings",),
    ),
    Entry(
        "2.2",
        (),
        "the NSPI error: Outlook Anywhere authentication is not Basic, or the RPC proxy ports are wrong "
        "(domain controllers must listen on 6004)",
        "Set Basic authentication and test again with Test-MigrationServerAvailability "
        "-ExchangeOutlookAnywhere -Authentication Basic, then retry.",
        Retry.FIX_THEN_RETRY,
        "[S3]",
        ("We weren't able to connect to the remote server", "cli_NspiBind"),
    ),
    Entry(
        "2.3",
        ("MigrationServerConnectionFailedException",),
        "the connection to the source server failed (an NSPI GetNewDSA and a Ping)",
        "Read the inner error; check the endpoint with Test-MigrationServerAvailability, then retry.",
        Retry.FIX_THEN_RETRY,
        "[S28][S11b]",
    ),
    Entry(
        "2.5",
        ("AutoDiscoverFailedConfigurationErrorException", "AutoDiscoverFailedInternalErrorException"),
        "Autodiscover failed for the endpoint",
        "Enter the Exchange server and RPC proxy FQDNs by hand (autodiscover: false), then retry.",
        Retry.FIX_THEN_RETRY,
        "[S18][S28]",
        ("could not be determined from the autodiscover response",),
    ),
    Entry(
        "2.6",
        (),
        "access denied on the source",
        "Grant Full Access on every mailbox or Receive As on the database, plus WriteProperty on "
        "TargetAddress, then retry.",
        Retry.FIX_THEN_RETRY,
        "[S28][S18]",
        ("Access is denied",),
    ),
    Entry(
        "2.7",
        (),
        "the migration endpoint does not exist",
        "Create the endpoint (the controller does so from the repository), then retry.",
        Retry.FIX_THEN_RETRY,
        "[S23]",
        ("Reason: The migration endpoint",),
    ),
    Entry(
        "2.8",
        ("MigrationJobConnectionSettingsIncomplete",),
        "the endpoint's connection settings are incomplete",
        "Complete the endpoint (user name, RPC proxy, Exchange server, email address), then retry.",
        Retry.FIX_THEN_RETRY,
        "C",
    ),
)
"""§9.2's certificate row (2.4) has no text or type to match on and is left out."""

BY_ID = {entry.id: entry for entry in CATALOGUE}

# Wrappers that carry every kind of error: their type alone says little, so the quoted texts decide first.
_GENERIC = frozenset({"migrationpermanentexception", "migrationtransientexception", "localizedexception"})
_BY_TYPE = {name.lower(): entry for entry in CATALOGUE for name in entry.exceptions}
_LEADING_TYPE = re.compile(r"^\s*(?:Error:\s*)?([A-Za-z_][\w.]*?(?:Exception|Incomplete))\b")
_TOKEN = re.compile(r"[A-Za-z_][\w.]*")  # linear: a long error text costs its length, not its square
_ENDINGS = ("Exception", "Incomplete")
MATCHED_CHARS = 4096  # an ErrorSummary is matched on its first 4 KB: the types and texts lead it


def _type_tokens(text: str) -> list[str]:
    """Each dotted name that ends, past its last `Exception` or `Incomplete`, in letters only."""
    found: list[str] = []
    for word in _TOKEN.findall(text):
        at = max(word.rfind(ending) + len(ending) if ending in word else -1 for ending in _ENDINGS)
        if at < 0:
            continue
        while at < len(word) and word[at].isascii() and word[at].isalpha():
            at += 1
        found.append(word[:at])
    return found


def _type_name(token: str) -> str:
    return token.rsplit(".", 1)[-1].lower()


def match(error_summary: str) -> Entry | None:
    """The catalogue row of a failed user's ErrorSummary, or None when the catalogue does not know it.

    In order: the exception type leading the `Error: <type>: ...` format when it is specific; the quoted
    texts of rows without a known type (also inside a generic wrapper such as
    MigrationPermanentException); a specific type named anywhere (an inner exception, `FailureType :`);
    last the generic MigrationTransientException itself.
    """
    if not error_summary:
        return None
    error_summary = error_summary[:MATCHED_CHARS]
    leading = _LEADING_TYPE.match(error_summary)
    if leading is not None:
        name = _type_name(leading.group(1))
        if name not in _GENERIC and name in _BY_TYPE:
            return _BY_TYPE[name]
    folded = error_summary.casefold()
    for entry in CATALOGUE:
        if any(text.casefold() in folded for text in entry.texts):
            return entry
    generic: Entry | None = None
    for token in _type_tokens(error_summary):
        name = _type_name(token)
        found = _BY_TYPE.get(name)
        if found is None:
            continue
        if name in _GENERIC:
            generic = generic or found
        else:
            return found
    return generic
