"""The Exchange Online simulator follows the documented rules (exchange-facts §1–§4, §8, §9)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.exchange.errors import CmdletError, ThrottledError
from controller.secrets import Credential
from controller.sim.exchange.simulator import ExchangeSimulator
from controller.sim.exchange.state import Completion, RecipientType, ThrottleMode

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def csv(*addresses: str) -> bytes:
    return ("EmailAddress\r\n" + "".join(f"{a}\r\n" for a in addresses)).encode()


def users(n: int, start: int = 0) -> list[str]:
    return [f"user{i}@contoso.com" for i in range(start, start + n)]


@pytest.fixture
def sim() -> ExchangeSimulator:
    simulator = ExchangeSimulator(now=T0)
    for address in users(30):
        simulator.add_recipient(address)
    simulator.call(
        "New-MigrationEndpoint",
        {
            "ExchangeOutlookAnywhere": True,
            "Name": "StagedEndpoint",
            "Credentials": Credential("CONTOSO\\migrator", "pw"),
            "ExchangeServer": "mail.contoso.com",
            "RpcProxyServer": "mail.contoso.com",
            "EmailAddress": "admin@contoso.com",
            "MaxConcurrentMigrations": 5,
        },
    )
    return simulator


def new_batch(sim: ExchangeSimulator, name: str, members: list[str], **extra: object) -> dict[str, object]:
    return sim.call(
        "New-MigrationBatch",
        {"Name": name, "SourceEndpoint": "StagedEndpoint", "CSVData": csv(*members), **extra},
    )[0]


def batch(sim: ExchangeSimulator, name: str) -> dict[str, object]:
    return sim.call("Get-MigrationBatch", {"Identity": name})[0]


def user(sim: ExchangeSimulator, address: str) -> dict[str, object]:
    return sim.call("Get-MigrationUserStatistics", {"Identity": address})[0]


def refused(sim: ExchangeSimulator, cmdlet: str, parameters: dict[str, object]) -> CmdletError:
    with pytest.raises(CmdletError) as caught:
        sim.call(cmdlet, parameters)
    assert caught.value.category == f"Cmdlet-{caught.value.exception_type}"
    return caught.value


def test_endpoint_output_and_rules(sim: ExchangeSimulator) -> None:
    [endpoint] = sim.call("Get-MigrationEndpoint", {})
    assert endpoint["Identity"] == "StagedEndpoint"
    assert endpoint["EndpointType"] == "ExchangeOutlookAnywhere"
    assert endpoint["Authentication"] == "Basic" and endpoint["UseAutoDiscover"] is False
    assert endpoint["MaxConcurrentMigrations"] == 5
    assert "pw" not in sim.to_json()  # the password is never stored
    sim.call("Set-MigrationEndpoint", {"Identity": "StagedEndpoint", "MaxConcurrentMigrations": 10})
    assert (
        sim.call("Get-MigrationEndpoint", {"Identity": "stagedendpoint"})[0]["MaxConcurrentMigrations"] == 10
    )
    manual = {"ExchangeOutlookAnywhere": True, "Name": "E2", "Credentials": Credential("u", "p")}
    assert "ExchangeServer" in str(refused(sim, "New-MigrationEndpoint", manual))
    auto = {**manual, "Autodiscover": True, "EmailAddress": "admin@contoso.com"}
    assert sim.call("New-MigrationEndpoint", auto)[0]["UseAutoDiscover"] is True
    assert refused(sim, "Get-MigrationEndpoint", {"Identity": "Nope"}).not_found


def test_batch_names_unique_and_capped(sim: ExchangeSimulator) -> None:
    for name in ("has space", "x" * 65, "under_score"):
        refused(
            sim,
            "New-MigrationBatch",
            {"Name": name, "SourceEndpoint": "StagedEndpoint", "CSVData": csv("user0@contoso.com")},
        )
    new_batch(sim, "A" * 64, ["user0@contoso.com"])
    assert "already exists" in str(
        refused(
            sim,
            "New-MigrationBatch",
            {"Name": "a" * 64, "SourceEndpoint": "StagedEndpoint", "CSVData": csv("user1@contoso.com")},
        )
    )


def test_at_most_100_batches(sim: ExchangeSimulator) -> None:
    for i in range(100):
        new_batch(sim, f"B{i}", [f"extra{i}@contoso.com"])
    error = refused(
        sim,
        "New-MigrationBatch",
        {"Name": "B100", "SourceEndpoint": "StagedEndpoint", "CSVData": csv("x@contoso.com")},
    )
    assert error.remote_message.startswith("The maximum number of migration batches is already running.")
    sim.call("Remove-MigrationBatch", {"Identity": "B0"})
    sim.advance(timedelta(hours=1))
    new_batch(sim, "B100", ["x@contoso.com"])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"EmailAddress\r\n", "no rows"),
        (b"Mail\r\nuser0@contoso.com\r\n", "EmailAddress"),
        (b"EmailAddress,Password\r\nuser0@contoso.com\r\n", "columns"),
        (b"EmailAddress,Colour\r\nuser0@contoso.com,red\r\n", "unknown column"),
        (b"EmailAddress\r\nnot-an-address\r\n", "valid SMTP"),
        (b"EmailAddress\r\n\xff\xfe\r\n", "UTF-8"),
        (csv(*[f"u{i}@contoso.com" for i in range(2001)]), "at most 2000"),
    ],
)
def test_csv_checks(sim: ExchangeSimulator, data: bytes, reason: str) -> None:
    error = refused(
        sim, "New-MigrationBatch", {"Name": "B", "SourceEndpoint": "StagedEndpoint", "CSVData": data}
    )
    assert reason in error.remote_message
    assert sim.call("Get-MigrationBatch", {}) == []


def test_csv_with_bom_and_2000_rows_accepted(sim: ExchangeSimulator) -> None:
    data = b"\xef\xbb\xbf" + csv(*[f"u{i}@contoso.com" for i in range(2000)])
    out = sim.call("New-MigrationBatch", {"Name": "Big", "SourceEndpoint": "StagedEndpoint", "CSVData": data})
    assert out[0]["TotalCount"] == 2000 and out[0]["Status"] == "Created"


def test_endpoint_must_exist(sim: ExchangeSimulator) -> None:
    error = refused(
        sim,
        "New-MigrationBatch",
        {"Name": "B", "SourceEndpoint": "Missing", "CSVData": csv("user0@contoso.com")},
    )
    assert error.not_found
    assert error.remote_message.startswith("The migration endpoint 'Missing' couldn't be found.")


def test_not_found_text(sim: ExchangeSimulator) -> None:
    for cmdlet in (
        "Get-MigrationBatch",
        "Start-MigrationBatch",
        "Stop-MigrationBatch",
        "Remove-MigrationBatch",
    ):
        error = refused(sim, cmdlet, {"Identity": "Ghost"})
        assert error.exception_type == "ManagementObjectNotFoundException" and error.not_found
        assert error.remote_message.startswith('Couldn\'t find object "Ghost". Please make sure')


def test_sync_respects_concurrency_and_converts_to_mailbox(sim: ExchangeSimulator) -> None:
    members = users(12)
    sim.set_sync_time(members[0], timedelta(minutes=50))
    out = new_batch(sim, "B1", members, AutoStart=True)
    assert out["Status"] == "Syncing"
    statuses = [u["Status"] for u in sim.call("Get-MigrationUser", {"BatchId": "B1"})]
    assert statuses.count("Syncing") == 5 and statuses.count("Queued") == 7
    sim.advance(timedelta(minutes=20))
    assert batch(sim, "B1")["SyncedCount"] == 4  # the slow first mailbox still holds a slot
    assert sim.recipient_type(members[1]) == RecipientType.USER_MAILBOX
    assert sim.recipient_type(members[11]) == RecipientType.MAIL_USER
    sim.advance(timedelta(days=1))
    result = batch(sim, "B1")
    assert (result["Status"], result["SyncedCount"], result["FailedCount"]) == ("Synced", 12, 0)
    assert result["LastSyncedDateTime"] == T0 + timedelta(minutes=60)
    assert user(sim, members[0])["LastSuccessfulSyncTime"] == T0 + timedelta(minutes=50)
    mailboxes = sim.call("Get-Recipient", {"RecipientTypeDetails": ["UserMailbox"]})
    assert len(mailboxes) == 12


def test_missing_recipient_fails_with_row_1_1(sim: ExchangeSimulator) -> None:
    sim.add_recipient("plain@contoso.com", RecipientType.USER)
    new_batch(sim, "B1", ["user0@contoso.com", "ghost@contoso.com", "plain@contoso.com"], AutoStart=True)
    ghost = user(sim, "ghost@contoso.com")
    assert ghost["Status"] == "Failed"
    assert ghost["ErrorSummary"] == (
        "Error: MigrationRecipientNotFoundException: A recipient wasn't found for "
        '"ghost@contoso.com" on the target. Create a recipient of the appropriate type for this migration '
        "on the target and try again."
    )
    assert user(sim, "plain@contoso.com")["Status"] == "Failed"
    sim.advance(timedelta(hours=1))
    assert batch(sim, "B1")["Status"] == "SyncedWithErrors"
    # Start retries failed users: once the mail user exists, it syncs.
    sim.add_recipient("ghost@contoso.com")
    sim.call("Start-MigrationBatch", {"Identity": "B1"})
    assert user(sim, "ghost@contoso.com")["Status"] == "Syncing"


def test_all_failed_is_failed_and_start_retries(sim: ExchangeSimulator) -> None:
    sim.fail_user(
        "user0@contoso.com", exception_type="TooManyBadItemsPermanentException", message="bad items", times=1
    )
    new_batch(sim, "B1", ["user0@contoso.com"], AutoStart=True)
    sim.advance(timedelta(hours=1))
    assert batch(sim, "B1")["Status"] == "Failed"
    assert (
        user(sim, "user0@contoso.com")["ErrorSummary"]
        == "Error: TooManyBadItemsPermanentException: bad items"
    )
    sim.call("Start-MigrationBatch", {"Identity": "B1"})
    sim.advance(timedelta(hours=1))
    assert batch(sim, "B1")["Status"] == "Synced"  # the failure cleared after one retry


def test_duplicate_member_fails_per_user_row_1_6(sim: ExchangeSimulator) -> None:
    new_batch(sim, "B1", ["user0@contoso.com"])
    new_batch(sim, "B2", ["user0@contoso.com", "user1@contoso.com"], AutoStart=True)
    users_b2 = {u["Identity"]: u for u in sim.call("Get-MigrationUser", {"BatchId": "B2"})}
    assert users_b2["user0@contoso.com"]["Status"] == "Failed"
    assert users_b2["user0@contoso.com"]["ErrorSummary"] == (
        'Error: UserDuplicateInOtherBatchException: The user "user0@contoso.com" is already included in '
        'migration batch "B1." Please remove the user from any other batch and try again.'
    )
    assert users_b2["user1@contoso.com"]["Status"] == "Syncing"
    sim.call("Remove-MigrationUser", {"Identity": "user0@contoso.com"})  # the real member, from B1
    assert batch(sim, "B1")["TotalCount"] == 0
    sim.advance(timedelta(hours=1))
    sim.call("Start-MigrationBatch", {"Identity": "B2"})
    sim.advance(timedelta(hours=1))
    assert batch(sim, "B2")["Status"] == "Synced"


def test_start_rules(sim: ExchangeSimulator) -> None:
    new_batch(sim, "B1", users(2))
    assert batch(sim, "B1")["Status"] == "Created"
    sim.call("Start-MigrationBatch", {"Identity": "B1"})
    assert "MigrationJobAlreadyStarted" in str(refused(sim, "Start-MigrationBatch", {"Identity": "B1"}))
    sim.advance(timedelta(hours=1))
    assert batch(sim, "B1")["Status"] == "Synced"
    assert "MigrationJobAlreadyStarted" in str(refused(sim, "Start-MigrationBatch", {"Identity": "B1"}))


def test_stop_only_while_moving_and_restart(sim: ExchangeSimulator) -> None:
    new_batch(sim, "B1", users(8), AutoStart=True)
    sim.call("Stop-MigrationBatch", {"Identity": "B1"})
    assert batch(sim, "B1")["Status"] == "Stopping"
    assert "MigrationJobAlreadyStopping" in str(refused(sim, "Stop-MigrationBatch", {"Identity": "B1"}))
    sim.advance(timedelta(minutes=5))
    assert batch(sim, "B1")["Status"] == "Stopped"
    assert "MigrationJobAlreadyStopped" in str(refused(sim, "Stop-MigrationBatch", {"Identity": "B1"}))
    sim.call("Start-MigrationBatch", {"Identity": "B1"})
    sim.advance(timedelta(hours=2))
    assert batch(sim, "B1")["Status"] == "Synced"
    assert "MigrationJobCannotBeStopped" in str(refused(sim, "Stop-MigrationBatch", {"Identity": "B1"}))
    new_batch(sim, "B2", users(1, 20))
    assert "MigrationJobCannotBeStopped" in str(refused(sim, "Stop-MigrationBatch", {"Identity": "B2"}))


def test_complete_only_from_synced(sim: ExchangeSimulator) -> None:
    new_batch(sim, "B1", users(2), AutoStart=True)
    error = refused(sim, "Complete-MigrationBatch", {"Identity": "B1"})
    assert error.exception_type == "MigrationBatchCannotBeCompletedException"
    sim.advance(timedelta(hours=1))
    sim.call("Complete-MigrationBatch", {"Identity": "B1"})
    assert batch(sim, "B1")["Status"] == "Completing"
    assert batch(sim, "B1")["CompleteAfterUTC"] == sim.now
    sim.advance(timedelta(hours=1))
    assert batch(sim, "B1")["Status"] == "Completed"
    assert {u["Status"] for u in sim.call("Get-MigrationUser", {})} == {"Completed"}
    assert "MigrationJobCannotRetryCompletion" in str(
        refused(sim, "Complete-MigrationBatch", {"Identity": "B1"})
    )


def test_completed_with_errors_and_retry(sim: ExchangeSimulator) -> None:
    sim.fail_user("user1@contoso.com", exception_type="MigrationPermanentException", message="x", times=1)
    new_batch(sim, "B1", users(2), AutoStart=True)
    sim.advance(timedelta(hours=1))
    assert batch(sim, "B1")["Status"] == "SyncedWithErrors"
    sim.call("Complete-MigrationBatch", {"Identity": "B1"})
    sim.advance(timedelta(hours=1))
    assert batch(sim, "B1")["Status"] == "CompletedWithErrors"
    sim.call("Start-MigrationBatch", {"Identity": "B1"})
    assert batch(sim, "B1")["Status"] == "Completing"
    sim.advance(timedelta(hours=1))
    assert batch(sim, "B1")["Status"] == "Completed"


def test_completion_unsupported(sim: ExchangeSimulator) -> None:
    sim.state.completion = Completion.UNSUPPORTED
    new_batch(sim, "B1", users(1), AutoStart=True)
    sim.advance(timedelta(hours=1))
    error = refused(sim, "Complete-MigrationBatch", {"Identity": "B1"})
    assert error.category == "Cmdlet-MigrationBatchCannotBeCompletedException"
    assert batch(sim, "B1")["Status"] == "Synced"


def test_add_users_only_new_rows_and_refusals(sim: ExchangeSimulator) -> None:
    new_batch(sim, "B1", users(2))
    sim.call("Set-MigrationBatch", {"Identity": "B1", "AddUsers": True, "CSVData": csv(*users(3))})
    assert batch(sim, "B1")["TotalCount"] == 3 and batch(sim, "B1")["Status"] == "Created"
    sim.call("Start-MigrationBatch", {"Identity": "B1"})
    error = refused(
        sim, "Set-MigrationBatch", {"Identity": "B1", "AddUsers": True, "CSVData": csv("user9@contoso.com")}
    )
    assert "SyncingMigrationJobCannotBeAppendedTo" in error.remote_message
    sim.advance(timedelta(hours=1))
    first_sync = user(sim, "user0@contoso.com")["LastSuccessfulSyncTime"]
    sim.call("Set-MigrationBatch", {"Identity": "B1", "AddUsers": True, "CSVData": csv(*users(4))})
    assert user(sim, "user3@contoso.com")["Status"] == "Syncing"  # a running batch syncs new rows at once
    assert user(sim, "user0@contoso.com")["LastSuccessfulSyncTime"] == first_sync  # old rows untouched
    sim.advance(timedelta(hours=1))
    sim.call("Complete-MigrationBatch", {"Identity": "B1"})
    sim.advance(timedelta(hours=1))
    error = refused(
        sim, "Set-MigrationBatch", {"Identity": "B1", "AddUsers": True, "CSVData": csv("user9@contoso.com")}
    )
    assert "CompletedMigrationJobCannotBeModified" in error.remote_message


def test_set_batch_settings(sim: ExchangeSimulator) -> None:
    new_batch(sim, "B1", users(1), NotificationEmails=["team@contoso.com"])
    later = T0 + timedelta(days=3)
    sim.call(
        "Set-MigrationBatch",
        {"Identity": "B1", "NotificationEmails": ["ops@contoso.com"], "CompleteAfter": later},
    )
    out = batch(sim, "B1")
    assert out["NotificationEmails"] == ["ops@contoso.com"] and out["CompleteAfterUTC"] == later


def test_start_after_waits(sim: ExchangeSimulator) -> None:
    # Assumption: a started batch whose StartAfter is in the future shows Waiting.
    start = "2026-11-03T18:00:00Z"
    new_batch(sim, "B1", users(1), AutoStart=True, StartAfter=start)
    assert batch(sim, "B1")["Status"] == "Waiting"
    assert batch(sim, "B1")["StartAfterUTC"] == datetime(2026, 11, 3, 18, tzinfo=UTC)
    sim.advance(timedelta(days=1))
    assert batch(sim, "B1")["Status"] == "Waiting"
    sim.advance(timedelta(hours=9))
    assert batch(sim, "B1")["Status"] == "Syncing"
    sim.advance(timedelta(hours=1))
    assert batch(sim, "B1")["Status"] == "Synced"


def test_remove_rules(sim: ExchangeSimulator) -> None:
    new_batch(sim, "B1", users(1), AutoStart=True)
    assert "MigrationJobCannotBeRemoved" in str(refused(sim, "Remove-MigrationBatch", {"Identity": "B1"}))
    sim.advance(timedelta(hours=1))
    sim.call("Remove-MigrationBatch", {"Identity": "B1"})
    assert batch(sim, "B1")["Status"] == "Removing"
    sim.advance(timedelta(hours=1))
    assert refused(sim, "Get-MigrationBatch", {"Identity": "B1"}).not_found
    assert sim.call("Get-MigrationUser", {}) == []


def test_result_size_default_1000_and_null_identity(sim: ExchangeSimulator) -> None:
    members = [f"m{i}@contoso.com" for i in range(1500)]
    new_batch(sim, "B1", members)
    assert len(sim.call("Get-MigrationUser", {})) == 1000
    assert len(sim.call("Get-MigrationUser", {"ResultSize": "Unlimited"})) == 1500
    assert len(sim.call("Get-MigrationUser", {"ResultSize": 10})) == 10
    assert len(sim.call("Get-MigrationUser", {"Identity": None, "ResultSize": "unlimited"})) == 1500
    for address in members:
        sim.add_recipient(address)
    assert len(sim.call("Get-Recipient", {})) == 1000
    assert len(sim.call("Get-Recipient", {"ResultSize": "Unlimited"})) == 1530
    # exchange-facts §3: Get-MigrationUser with a non-existent -Identity returns all objects.
    assert (
        len(sim.call("Get-MigrationUser", {"Identity": "nobody@contoso.com", "ResultSize": "Unlimited"}))
        == 1500
    )


def test_parameter_binding(sim: ExchangeSimulator) -> None:
    assert refused(sim, "Get-MigrationBatch", {"Idnetity": "x"}).exception_type == "ParameterBindingException"
    assert refused(sim, "Invoke-Expression", {"Command": "x"}).exception_type == "CommandNotFoundException"
    assert sim.call("get-migrationbatch", {"resultsize": "Unlimited"}) == []


def test_throttling_and_call_counts(sim: ExchangeSimulator) -> None:
    sim.throttle("Get-MigrationBatch", 2)
    for _ in range(2):
        with pytest.raises(ThrottledError):
            sim.call("Get-MigrationBatch", {})
    assert sim.call("Get-MigrationBatch", {}) == []
    sim.throttle("Get-MigrationBatch", 1, mode=ThrottleMode.WARNING)
    output = sim.call("Get-MigrationBatch", {})
    assert output.warnings and output.warnings[0].startswith("Micro delay applied")
    assert sim.call("Get-MigrationBatch", {}).warnings == []
    assert sim.calls("Get-MigrationBatch") == 5 and sim.calls("New-MigrationEndpoint") == 1


def test_large_advance_is_event_driven(sim: ExchangeSimulator) -> None:
    members = [f"m{i}@contoso.com" for i in range(2000)]
    for address in members:
        sim.add_recipient(address)
    new_batch(sim, "B1", members, AutoStart=True)
    sim.advance(timedelta(days=30))
    result = batch(sim, "B1")
    assert (result["Status"], result["SyncedCount"]) == ("Synced", 2000)
    assert result["LastSyncedDateTime"] == T0 + timedelta(minutes=20 * 400)  # 2,000 / 5 slots x 20 min
