"""The error catalogue (exchange-facts §9): each documented text is recognised by its row, types before
English text, and an unknown error is None."""

from __future__ import annotations

import re

import pytest

from controller.model import catalogue
from controller.model.catalogue import BY_ID, CATALOGUE, Retry, match

# The texts of exchange-facts §9, as a migration user's ErrorSummary shows them (§9.0's format where
# the row gives a type), and the row each must be matched to.
SAMPLES = [
    (
        'Error: MigrationRecipientNotFoundException: A recipient wasn\'t found for "ann@contoso.com" on the '
        "target. Create a recipient of the appropriate type for this migration on the target and try again.",
        "1.1",
    ),
    ("A valid primary e-mail address couldn't be found in the cloud-based service.", "1.2"),
    ("A source e-mail address ann@contoso.com couldn't be found in the on-premises domain.", "1.3"),
    ("Error: SourceRecipientDoesNotExistException: something else entirely", "1.3"),
    ("Microsoft Exchange couldn't sign in to the user's on-premises account.", "1.4"),
    (
        "Error: MigrationPermanentException: Microsoft Exchange couldn't sign in to the user's on-premises "
        "account.",
        "1.4",
    ),
    ("Couldn't connect to the source mailbox", "1.4"),
    (
        'A Windows Live error occurred while provisioning for "joe@contoso.com". An internal error occurred '
        'while talking to Windows Live. Additional details: "0x800482101033This action is currently '
        'blocked for the API."',
        "1.5",
    ),
    (
        'Error: UserDuplicateInOtherBatchException: The user "ann@contoso.com" is already included in '
        'migration batch "Old." Please remove the user from any other batch and try again.',
        "1.6",
    ),
    (
        "Error: UserAlreadyBeingMigratedException: The user 'ann@contoso.com' already has a pending request. "
        "Please remove the existing request and resume the current batch or start a new batch for this "
        "user. --> Name must be unique per owning mailbox.",
        "1.7",
    ),
    ("Error: TooManyBadItemsPermanentException: the number of bad items is greater than the limit", "1.8"),
    (
        "Error: This mailbox exceeded the maximum number of large items that were specified for this "
        "request. --> MapiExceptionMaxSubmissionExceeded: Unable to save changes.",
        "1.9",
    ),
    ("FailureType : TooManyLargeItemsPermanentException", "1.9"),
    (
        "Error: QuotaExceededException/MapiExceptionShutoffQuotaExceeded: Unable to get properties on object",
        "1.10",
    ),
    (
        "This user's on-premises mailbox hasn't been migrated to Exchange Online. The Exchange Online "
        "mailbox will be available after migration is completed.",
        "1.11",
    ),
    (
        'A different type of Active Directory object already exists for "ann@contoso.com" in the target '
        "forest. Please verify that the SMTP address is correct.",
        "1.12",
    ),
    ("Error: MigrationPermanentException: Error: Job is poisoned, poison count = 6.", "1.13"),
    (
        "Error: SyncTimeoutException: Email migration failed for this user because no email could be "
        "downloaded for 5 hours, 0 minutes.",
        "1.13",
    ),
    (
        "Error: MigrationPermanentException: Error: The job has not made progress since 1/2/2024 3:04:05 "
        "AM. Job was picked up at 1/2/2024 1:00:00 AM.",
        "1.13",
    ),
    (
        'The proxy address "SMTP:ann@contoso.com" is already being used by "Ann". Choose another proxy '
        "address.",
        "1.14",
    ),
    ('"/o=NT5/ou=00000000000000000000000000000000/cn=Ann" is not a valid SMTP address', "1.14"),
    (
        "Relinquishing job because of large delays due to unfavorable server health or budget limitations "
        "with a request throttling state 'StalledDueToTarget_DiskLatency'.",
        "1.15",
    ),
    ("Error: MigrationTransientException: The operation timed out.", "1.16"),
    ("Error: TooManyTransientFailuresException: too many transient failures", "1.16"),
    (
        "Unable to connect to the server. Please check the connection settings you supplied and try again.",
        "2.1",
    ),
    (
        "Error: Microsoft.Exchange.Data.Storage.Management.MigrationTransientException: We weren't able to "
        "connect to the remote server. Please verify that the migration endpoint settings are correct and "
        "your certificate is valid, and then try again. ---> Microsoft.Exchange.Rpc."
        "ServerUnavailableException: Error 0x6ba (The RPC server is unavailable) from cli_NspiBind",
        "2.2",
    ),
    (
        "Microsoft.Exchange.Migration.MigrationServerConnectionFailedException: The connection to the server "
        "'mail.contoso.com' could not be completed.",
        "2.3",
    ),
    ("Error: AutoDiscoverFailedConfigurationErrorException: failed", "2.5"),
    ("Error details: Access is denied.", "2.6"),
    (
        "The migration endpoint 'Staged' couldn't be found. Reason: The migration endpoint 'Staged' couldn't "
        "be found.",
        "2.7",
    ),
    ('MigrationPermanentException(MigrationJobConnectionSettingsIncomplete("RpcProxyServer"))', "2.8"),
]


@pytest.mark.parametrize(
    ("summary", "row"), SAMPLES, ids=[f"{row}-{i}" for i, (_, row) in enumerate(SAMPLES)]
)
def test_every_documented_text_matches_its_row(summary: str, row: str) -> None:
    entry = match(summary)
    assert entry is not None and entry.id == row


def test_every_row_is_recognised_by_something_and_matches_its_own_samples() -> None:
    assert {row for _, row in SAMPLES} == set(BY_ID)
    for entry in CATALOGUE:
        assert entry.exceptions or entry.texts, entry.id
        for name in entry.exceptions:
            found = match(f"Error: {name}: anything at all")
            assert found is not None and found.id == entry.id
        for text in entry.texts:
            found = match(f"prefix {text.upper()} suffix")  # case-insensitive, anywhere
            assert found is not None and found.id == entry.id


def test_ids_unique_fixes_cite_nothing_secret_and_sources_are_tags() -> None:
    assert len(BY_ID) == len(CATALOGUE)
    for entry in CATALOGUE:
        assert re.fullmatch(r"[12]\.\d+", entry.id)
        assert re.fullmatch(r"(\[S\d+b?\])+|C", entry.source), entry.source
        assert entry.fix.endswith("."), entry.id
        assert 0 < len(entry.fix) <= 300, entry.id


def test_the_type_decides_before_the_text() -> None:
    # A specific type leading the summary wins over an English phrase of another row later in it.
    entry = match("Error: TooManyBadItemsPermanentException: Access is denied on 3 items")
    assert entry is not None and entry.id == "1.8"
    # A generic wrapper yields to a documented text, and is itself the transient row only last.
    entry = match("Error: MigrationTransientException: Access is denied.")
    assert entry is not None and entry.id == "2.6"
    # An inner specific type is found when the leading one is not in the catalogue.
    entry = match("Error: SomethingNewException: wrapped --> QuotaExceededException: over quota")
    assert entry is not None and entry.id == "1.10"


@pytest.mark.parametrize(
    "summary",
    [
        "",
        "Error: MigrationPermanentException: something nobody documented",
        "Error: BrandNewException: the service changed",
        "Failed",
    ],
)
def test_unknown_errors_are_none(summary: str) -> None:
    assert match(summary) is None


def test_retry_rules() -> None:
    assert [r for r in Retry if r.helps] == [Retry.AUTO, Retry.RETRY]
    assert not Retry.FIX_THEN_RETRY.helps and not Retry.NO.helps
    assert {r.label for r in Retry} == {
        "fix first, then retry",
        "transient: retried",
        "a retry does not help",
        "a retry helps",
    }
    assert BY_ID["1.1"].retry is Retry.FIX_THEN_RETRY
    assert BY_ID["1.4"].retry is Retry.FIX_THEN_RETRY
    assert BY_ID["1.6"].retry is Retry.NO  # Fix -> a new batch
    assert BY_ID["1.13"].retry is Retry.RETRY
    assert BY_ID["1.16"].retry is Retry.AUTO
    assert catalogue.UNKNOWN == "not in the catalogue"


def test_a_long_error_text_is_matched_on_its_first_4kb_in_linear_time() -> None:
    """A long run of word characters made the old type pattern backtrack for seconds (45 s at 100 KB); the
    catalogue now reads a 1 MB ErrorSummary's first 4 KB, token by token."""
    leading = "Error: MigrationPermanentException: x --> TooManyLargeItemsPermanentException: big"
    found = catalogue.match(leading + " " + "a" * 1_000_000)
    assert found is not None and found.id == "1.9"
    assert catalogue.match("Error: " + "a" * 1_000_000 + " TooManyLargeItemsPermanentException") is None
