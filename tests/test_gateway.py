"""The PSRP gateway through the real pypsrp client: parameters, output objects, refusals, TLS and auth."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool
from pypsrp.wsman import WSMan

from controller.exchange import errors
from controller.exchange.psrp import PsrpRunner
from controller.secrets import Credential
from controller.sim.gateway.server import PsrpGateway
from tests.support.gateway import PASSWORD, USER, FakeRunner, Pki, make_pki, running_gateway, settings_for

INJECTION = "x'; Remove-Mailbox -Identity * ;'"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGECTL_TEST_GATEWAY_PASSWORD", PASSWORD)


@pytest.fixture
def fake() -> FakeRunner:
    return FakeRunner()


@pytest.fixture
def gateway(fake: FakeRunner, pki: Pki) -> Iterator[PsrpGateway]:
    with running_gateway(fake, pki=pki) as gateway:
        yield gateway


@pytest.fixture
def client(gateway: PsrpGateway, pki: Pki) -> Iterator[PsrpRunner]:
    runner = PsrpRunner(settings_for(gateway, caBundle=str(pki.ca)))
    yield runner
    runner.close()


def csv_rows(count: int) -> bytes:
    lines = ["EmailAddress"] + [f"user{i:05d}.with.a.longer.name@contoso.com" for i in range(count)]
    return ("\r\n".join(lines) + "\r\n").encode()


def test_get_returns_objects_with_exchange_property_names(fake: FakeRunner, client: PsrpRunner) -> None:
    when = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
    fake.rows["Get-MigrationBatch"] = [
        {"Identity": "Batch1-IT", "Status": "Syncing", "TotalCount": 2, "SyncedCount": 0,
         "CreationDateTime": when, "NotificationEmails": ["a@contoso.com"], "Report": None, "IsStaged": True},
        {"Identity": "Batch2-Sales", "Status": "Synced", "TotalCount": 3000000000, "SyncedCount": 3,
         "CreationDateTime": when, "NotificationEmails": [], "Report": None, "IsStaged": True},
    ]  # fmt: skip
    rows = client.run("Get-MigrationBatch", {})
    assert rows == fake.rows["Get-MigrationBatch"]
    assert fake.calls == [("Get-MigrationBatch", {"ResultSize": "Unlimited"})]


def test_new_endpoint_with_credential_arrives_as_credential_and_is_redacted_in_record(
    fake: FakeRunner, client: PsrpRunner, gateway: PsrpGateway
) -> None:
    parameters = {
        "Name": "StagedEndpoint",
        "ExchangeOutlookAnywhere": True,
        "ExchangeServer": "mail.contoso.com",
        "Credentials": Credential("CONTOSO\\migration", "s3cret:with:colons"),
        "MaxConcurrentMigrations": 20,
    }
    client.run("New-MigrationEndpoint", parameters)
    assert fake.calls == [("New-MigrationEndpoint", parameters)]
    recorded = gateway.received[-1]
    assert recorded.parameters["Credentials"] == Credential("CONTOSO\\migration", "<redacted>")
    assert "s3cret" not in repr(gateway.received)


def test_new_batch_with_2000_row_csv_spans_several_send_fragments(
    fake: FakeRunner, gateway: PsrpGateway, pki: Pki
) -> None:
    csv = csv_rows(2000)
    start = dt.datetime(2026, 12, 1, 18, 0, tzinfo=dt.UTC)
    # A 32 KiB envelope (WinRM's MaxEnvelopeSizekb can be that small) forces the CSV over several Sends.
    runner = PsrpRunner(settings_for(gateway, caBundle=str(pki.ca), maxEnvelopeSize=32768))
    try:
        runner.run(
            "New-MigrationBatch",
            {"Name": "Batch1-IT", "SourceEndpoint": "StagedEndpoint", "CSVData": csv, "AutoStart": True,
             "NotificationEmails": ["ops@contoso.com", "it@contoso.com"], "StartAfter": start},
        )  # fmt: skip
    finally:
        runner.close()
    cmdlet, received = fake.calls[-1]
    assert cmdlet == "New-MigrationBatch"
    assert received["CSVData"] == csv and isinstance(received["CSVData"], bytes)
    assert received["AutoStart"] is True
    assert received["NotificationEmails"] == ["ops@contoso.com", "it@contoso.com"]
    assert received["StartAfter"] == start and received["StartAfter"].tzinfo is not None
    assert max(gateway.sends.values()) >= 3


def test_powershell_syntax_in_a_value_arrives_as_one_plain_string(
    fake: FakeRunner, client: PsrpRunner, gateway: PsrpGateway
) -> None:
    client.run(
        "New-MigrationBatch", {"Name": INJECTION, "CSVData": f"EmailAddress\r\n{INJECTION}\r\n".encode()}
    )
    client.run("Get-MigrationUser", {"Identity": INJECTION})
    assert [c.cmdlet for c in gateway.received] == ["New-MigrationBatch", "Get-MigrationUser"]
    assert gateway.received[0].parameters["Name"] == INJECTION
    assert gateway.received[1].parameters == {"Identity": INJECTION}
    assert all(cmdlet != "Remove-Mailbox" for cmdlet, _ in fake.calls)


def test_a_script_is_refused_as_no_language_mode_refuses_it(
    fake: FakeRunner, gateway: PsrpGateway, pki: Pki
) -> None:
    wsman = WSMan("127.0.0.1", port=gateway.port, username=USER, password=PASSWORD, auth="basic",
                  cert_validation=str(pki.ca), no_proxy=True)  # fmt: skip
    with RunspacePool(wsman) as pool:
        shell = PowerShell(pool)
        shell.add_script("Get-MigrationBatch | Remove-MigrationBatch")
        shell.invoke()
        assert shell.state == PSInvocationState.FAILED
        [record] = shell.streams.error
        assert record.fq_error == "ScriptsNotAllowed"
        assert "no-language mode" in str(record)
        # the same pool still serves cmdlets afterwards
        shell = PowerShell(pool)
        shell.add_cmdlet("Get-MigrationBatch")
        assert shell.invoke() == []
    assert fake.calls == [("Get-MigrationBatch", {})]


def test_an_unknown_cmdlet_is_command_not_found(client: PsrpRunner, fake: FakeRunner) -> None:
    with pytest.raises(errors.CmdletError) as caught:
        client.run("Remove-Mailbox", {"Identity": "*"})
    assert caught.value.exception_type == "CommandNotFoundException"
    assert fake.calls == []


def test_wrong_password_is_an_authentication_error(
    gateway: PsrpGateway, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGECTL_TEST_GATEWAY_PASSWORD", "wrong")
    runner = PsrpRunner(settings_for(gateway, caBundle=str(pki.ca)))
    with pytest.raises(errors.AuthenticationError) as caught:
        runner.run("Get-MigrationBatch", {})
    assert "refused the credentials" in str(caught.value)
    assert "wrong" not in str(caught.value)
    runner.close()


def test_certificate_validation_is_on_by_default(gateway: PsrpGateway, tmp_path: Path) -> None:
    runner = PsrpRunner(settings_for(gateway))  # no caBundle: the system store does not know the test CA
    with pytest.raises(errors.PermanentError, match=r"certificate verify failed.*caBundle"):
        runner.run("Get-MigrationBatch", {})
    other = make_pki(tmp_path / "other", name="some other CA")
    runner = PsrpRunner(settings_for(gateway, caBundle=str(other.ca)))
    with pytest.raises(errors.PermanentError, match="certificate verify failed"):
        runner.run("Get-MigrationBatch", {})


def test_plain_http_gateway_and_one_pool_reused(fake: FakeRunner) -> None:
    with running_gateway(fake) as gateway:
        runner = PsrpRunner(settings_for(gateway))
        runner.run("Get-MigrationBatch", {})
        before = gateway.round_trips
        for _ in range(3):
            runner.run("Get-MigrationBatch", {})
        per_call = (gateway.round_trips - before) / 3
        runner.close()
    assert gateway.url.startswith("http://")
    assert per_call <= 3  # Command + Receive (+ one more at most): no pool re-open per call


def test_receive_without_data_blocks_then_answers_operation_timeout(fake: FakeRunner) -> None:
    with running_gateway(fake, receive_wait=0.2) as gateway:
        wsman = WSMan("127.0.0.1", port=gateway.port, username=USER, password=PASSWORD, auth="basic",
                      ssl=False, encryption="never", no_proxy=True, operation_timeout=1)  # fmt: skip
        with RunspacePool(wsman) as pool:
            from pypsrp.exceptions import WSManFaultError

            with pytest.raises(WSManFaultError) as caught:
                pool.shell.receive("stdout")
            assert caught.value.code == 2150858793
