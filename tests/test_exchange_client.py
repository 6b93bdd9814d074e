"""The Exchange client over the real simulator: bulk observation, unknown kinds, retries, references."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller import secrets
from controller.exchange.client import ExchangeClient
from controller.exchange.errors import AuthenticationError, CmdletError, UnavailableError
from controller.model.actions import CredentialRef, CsvRows, ExchangeAction
from controller.sim.exchange.simulator import ExchangeSimulator, LocalRunner

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
SECRETS = {"env:ONPREM": "CONTOSO\\migrator:pa:ss"}


class RecordingRunner(LocalRunner):
    """The simulator's runner, recording each call's parameters and failing chosen cmdlets."""

    def __init__(self, simulator: ExchangeSimulator) -> None:
        super().__init__(simulator)
        self.seen: list[tuple[str, dict[str, object]]] = []
        self.broken: dict[str, Exception] = {}

    def run(
        self, cmdlet: str, parameters: Mapping[str, object], select: Sequence[str] = ()
    ) -> list[dict[str, object]]:
        self.seen.append((cmdlet, dict(parameters)))
        if cmdlet in self.broken:
            raise self.broken[cmdlet]
        return super().run(cmdlet, parameters, select)


def action(cmdlet: str, **parameters: object) -> ExchangeAction:
    return ExchangeAction(cmdlet=cmdlet, parameters=tuple(parameters.items()), object="test", reason="test")


@pytest.fixture
def sim() -> ExchangeSimulator:
    simulator = ExchangeSimulator(now=T0)
    for i in range(3):
        simulator.add_recipient(f"User{i}@Contoso.com")
    return simulator


@pytest.fixture
def runner(sim: ExchangeSimulator) -> RecordingRunner:
    return RecordingRunner(sim)


def client_for(runner: RecordingRunner, delays: list[float] | None = None) -> ExchangeClient:
    sink = delays if delays is not None else []
    return ExchangeClient(runner, resolve_secret=SECRETS.__getitem__, sleep=sink.append, rng=random.Random(7))


def create_endpoint(client: ExchangeClient) -> None:
    client.apply(
        action(
            "New-MigrationEndpoint",
            ExchangeOutlookAnywhere=True,
            Name="StagedEndpoint",
            Credentials=CredentialRef("env:ONPREM"),
            ExchangeServer="mail.contoso.com",
            RpcProxyServer="mail.contoso.com",
            MaxConcurrentMigrations=20,
        )
    )


def test_apply_converts_references_and_observe_reads_each_kind_once(
    sim: ExchangeSimulator, runner: RecordingRunner
) -> None:
    client = client_for(runner)
    create_endpoint(client)
    credential = runner.seen[0][1]["Credentials"]
    assert (credential.username, credential.password) == ("CONTOSO\\migrator", "pa:ss")  # type: ignore[attr-defined]
    client.apply(
        action(
            "New-MigrationBatch",
            Name="B1",
            SourceEndpoint="StagedEndpoint",
            CSVData=CsvRows(("user0@contoso.com", "user1@contoso.com")),
            NotificationEmails=("team@contoso.com",),
            AutoStart=True,
        )
    )
    sent = runner.seen[1][1]
    assert isinstance(sent["CSVData"], bytes) and sent["NotificationEmails"] == ["team@contoso.com"]
    sim.advance(timedelta(hours=1))
    runner.seen.clear()
    observed = client.observe()
    assert [cmdlet for cmdlet, _ in runner.seen] == [
        "Get-MigrationEndpoint",
        "Get-MigrationBatch",
        "Get-MigrationUser",
        "Get-Recipient",
    ]
    assert all("Identity" not in parameters for _, parameters in runner.seen)  # never a null -Identity
    assert observed.endpoints is not None and observed.endpoints[0].MaxConcurrentMigrations == 20
    assert observed.batches is not None and observed.batches[0].Status == "Synced"
    assert observed.batches[0].CreationDateTime == T0  # type: ignore[attr-defined]  # extra property kept
    assert observed.users is not None and {u.Status for u in observed.users} == {"Synced"}
    assert observed.mailUsers == ["user0@contoso.com", "user1@contoso.com", "user2@contoso.com"]


def test_result_size_truncation_bites_a_client_that_forgets_unlimited(
    sim: ExchangeSimulator, runner: RecordingRunner
) -> None:
    client = client_for(runner)
    create_endpoint(client)
    members = tuple(f"m{i}@contoso.com" for i in range(1200))
    client.apply(
        action("New-MigrationBatch", Name="B1", SourceEndpoint="StagedEndpoint", CSVData=CsvRows(members))
    )
    assert len(client.call("Get-MigrationUser", {})) == 1000  # the forgetful read silently loses 200
    observed = client.observe()
    assert observed.users is not None and len(observed.users) == 1200


def test_a_kind_that_cannot_be_read_is_unknown(runner: RecordingRunner) -> None:
    runner.broken["Get-MigrationUser"] = CmdletError(
        "Get-MigrationUser", "MigrationPermanentException", "boom"
    )
    runner.broken["Get-Recipient"] = UnavailableError("gateway went away")
    client = client_for(runner)
    observed = client.observe()
    assert observed.users is None and observed.mailUsers is None
    assert observed.batches == [] and observed.endpoints == []
    assert set(client.unreadable) == {"exchange/users", "exchange/mailUsers", "exchange/mailboxes"}


def test_why_a_kind_could_not_be_read_is_kept_bounded_and_without_secrets(runner: RecordingRunner) -> None:
    runner.broken["Get-MigrationBatch"] = CmdletError(
        "Get-MigrationBatch", "MigrationPermanentException", "refused for password=hunter2 " + "x" * 600
    )
    runner.broken["Get-Recipient"] = UnavailableError("gateway went away")
    client = client_for(runner)
    client.max_attempts = 1
    client.observe()
    assert set(client.unreadable) == {"exchange/batches", "exchange/mailUsers", "exchange/mailboxes"}
    batches = client.unreadable["exchange/batches"]
    assert batches.startswith("CmdletError: Get-MigrationBatch failed: MigrationPermanentException: refused")
    assert "hunter2" not in batches and len(batches) <= 300
    assert client.unreadable["exchange/mailUsers"] == "UnavailableError: Get-Recipient: gateway went away"
    client.observe()
    runner.broken.clear()
    client.observe()
    assert client.unreadable == {}, "each observe() says only what it could not read"


def test_not_found_on_a_bulk_read_means_none_exist(runner: RecordingRunner) -> None:
    runner.broken["Get-MigrationBatch"] = CmdletError(
        "Get-MigrationBatch", "ManagementObjectNotFoundException", "Couldn't find object"
    )
    assert client_for(runner).observe().batches == []


def test_authentication_failure_propagates(runner: RecordingRunner) -> None:
    runner.broken["Get-MigrationEndpoint"] = AuthenticationError("the gateway refused the credentials")
    with pytest.raises(AuthenticationError):
        client_for(runner).observe()


def test_throttling_is_retried_with_growing_jittered_delays(
    sim: ExchangeSimulator, runner: RecordingRunner
) -> None:
    sim.throttle("Get-MigrationBatch", 4)
    delays: list[float] = []
    client = ExchangeClient(runner, sleep=delays.append, max_attempts=5, base_delay=1.0, rng=random.Random(3))
    assert client.call("Get-MigrationBatch", {"ResultSize": "Unlimited"}) == []
    assert len(delays) == 4 and sim.calls("Get-MigrationBatch") == 5
    for attempt, delay in enumerate(delays):
        # full jitter: uniform up to base * 2**attempt, never below the server's 0.5 s hint
        assert 0.5 <= delay <= 2**attempt
    sim.throttle("Get-MigrationBatch", 5)
    with pytest.raises(Exception, match="busy"):
        client.call("Get-MigrationBatch", {})


def test_micro_delay_warning_slows_down_without_repeating(
    sim: ExchangeSimulator, runner: RecordingRunner
) -> None:
    from controller.sim.exchange.state import ThrottleMode

    sim.throttle("Get-MigrationBatch", 1, mode=ThrottleMode.WARNING)
    delays: list[float] = []
    client = client_for(runner, delays)
    client.call("Get-MigrationBatch", {})
    assert sim.calls("Get-MigrationBatch") == 1 and len(delays) == 1
    assert client.warnings[0].startswith("Micro delay applied")


def test_permanent_errors_are_raised_unchanged(runner: RecordingRunner) -> None:
    delays: list[float] = []
    with pytest.raises(CmdletError) as caught:
        client_for(runner, delays).apply(action("Start-MigrationBatch", Identity="Ghost"))
    assert caught.value.not_found and delays == []


def test_secret_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGECTL_TEST_CRED", "admin:pw:with:colons")
    assert secrets.credential("env:STAGECTL_TEST_CRED").password == "pw:with:colons"
    secret_file = tmp_path / "cred"
    secret_file.write_text("svc:hunter2\n")
    assert secrets.credential(f"file:{secret_file}").username == "svc"
    monkeypatch.setenv("STAGECTL_TEST_NOCOLON", "hunter2")
    for ref, needle in (
        ("env:STAGECTL_TEST_MISSING", "not set"),
        (f"file:{tmp_path / 'nope'}", "cannot read"),
        ("env:STAGECTL_TEST_NOCOLON", "username:password"),
    ):
        with pytest.raises(secrets.SecretError, match=needle) as caught:
            secrets.credential(ref)
        assert ref in str(caught.value) and "hunter2" not in str(caught.value)


@pytest.mark.parametrize("pasted", ["vault:x", "hunter2", "svc:hunter2", "Hunter2:"])
def test_a_value_that_is_not_a_reference_is_never_repeated(pasted: str) -> None:
    """Someone pasted the secret where its reference belongs: the error must not carry it to a log."""
    with pytest.raises(secrets.SecretError, match="unknown scheme") as caught:
        secrets.credential(pasted)
    assert pasted not in str(caught.value) and "hunter2" not in str(caught.value).lower()
