"""The psrp backend's error mapping; the simulator over real PSRP (the gateway, `stagectl sim-gateway`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool
from pypsrp.wsman import WSMan

from controller.exchange import errors
from controller.exchange.psrp import PsrpRunner, PsrpSettings
from controller.secrets import Credential
from controller.sim.exchange.simulator import ExchangeSimulator
from controller.sim.exchange.state import ThrottleMode
from controller.sim.exchange.store import SimRunner, SimStore
from controller.sim.gateway.server import PsrpGateway
from tests.support.gateway import PASSWORD, USER, FakeRunner, running_gateway, settings_for

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
ENDPOINT = {
    "ExchangeOutlookAnywhere": True,
    "Name": "StagedEndpoint",
    "Credentials": Credential("CONTOSO\\migrator", "pw:with:colons"),
    "ExchangeServer": "mail.contoso.com",
    "RpcProxyServer": "mail.contoso.com",
    "EmailAddress": "admin@contoso.com",
    "MaxConcurrentMigrations": 5,
}


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGECTL_TEST_GATEWAY_PASSWORD", PASSWORD)


@pytest.fixture
def fake() -> FakeRunner:
    return FakeRunner()


@pytest.fixture
def gateway(fake: FakeRunner) -> Iterator[PsrpGateway]:
    with running_gateway(fake) as gateway:
        yield gateway


@pytest.fixture
def client(gateway: PsrpGateway) -> Iterator[PsrpRunner]:
    runner = PsrpRunner(settings_for(gateway))
    yield runner
    runner.close()


def invoke_raw(gateway: PsrpGateway, cmdlet: str, parameters: dict[str, object]) -> PowerShell:
    wsman = WSMan("127.0.0.1", port=gateway.port, username=USER, password=PASSWORD, auth="basic",
                  ssl=False, encryption="never", no_proxy=True)  # fmt: skip
    with RunspacePool(wsman) as pool:
        shell = PowerShell(pool)
        shell.add_cmdlet(cmdlet).add_parameters(parameters)
        shell.invoke()
    return shell


def test_not_found_on_get_is_non_terminating_and_maps_to_not_found(
    fake: FakeRunner, gateway: PsrpGateway, client: PsrpRunner
) -> None:
    fake.raises["Get-MigrationBatch"] = errors.CmdletError(
        "Get-MigrationBatch", "ManagementObjectNotFoundException", 'Couldn\'t find object "Nope".'
    )
    shell = invoke_raw(gateway, "Get-MigrationBatch", {"Identity": "Nope"})
    assert shell.state == PSInvocationState.COMPLETED and shell.had_errors is False
    assert "[FailureCategory=Cmdlet-ManagementObjectNotFoundException]" in shell.streams.error[0].fq_error
    with pytest.raises(errors.CmdletError) as caught:
        client.run("Get-MigrationBatch", {"Identity": "Nope"})
    assert caught.value.not_found
    assert caught.value.category == "Cmdlet-ManagementObjectNotFoundException"


def test_state_error_on_start_is_terminating_and_keeps_type_and_category(
    fake: FakeRunner, gateway: PsrpGateway, client: PsrpRunner
) -> None:
    fake.raises["Start-MigrationBatch"] = errors.CmdletError(
        "Start-MigrationBatch", "MigrationPermanentException", "The batch is already running.",
        category="Cmdlet-MigrationPermanentException",
    )  # fmt: skip
    shell = invoke_raw(gateway, "Start-MigrationBatch", {"Identity": "B1"})
    assert shell.state == PSInvocationState.FAILED
    with pytest.raises(errors.CmdletError) as caught:
        client.run("Start-MigrationBatch", {"Identity": "B1"})
    error = caught.value
    assert (error.exception_type, error.category, error.not_found) == (
        "MigrationPermanentException", "Cmdlet-MigrationPermanentException", False,
    )  # fmt: skip
    assert "already running" in error.remote_message
    # the pool survives a failed pipeline
    fake.rows["Get-MigrationBatch"] = [{"Identity": "B1"}]
    assert client.run("Get-MigrationBatch", {}) == [{"Identity": "B1"}]


def test_throttling_maps_to_throttled_error_with_the_delay(fake: FakeRunner, client: PsrpRunner) -> None:
    fake.raises["Get-MigrationUser"] = errors.ThrottledError("the server is busy", delay=2.5)
    with pytest.raises(errors.ThrottledError) as caught:
        client.run("Get-MigrationUser", {})
    assert caught.value.delay == 2.5


def test_warnings_reach_the_warning_stream_and_the_runner(fake: FakeRunner, client: PsrpRunner) -> None:
    delay = "Micro delay applied. Actual delayed: 250 msecs, Enforced: True"
    fake.warn_on["Get-MigrationBatch"] = delay
    output = client.run("Get-MigrationBatch", {})
    assert output == [] and output.warnings == [delay]  # type: ignore[attr-defined]
    assert client.warnings == [delay]


def test_select_object_is_a_second_command_and_only_the_named_properties_travel(
    fake: FakeRunner, client: PsrpRunner, gateway: PsrpGateway
) -> None:
    fake.rows["Get-MigrationBatch"] = [{"Identity": "B1", "Status": "Syncing", "TotalCount": 3, "Extra": "x"}]
    rows = client.run("Get-MigrationBatch", {}, select=["Identity", "Status", "TotalCount"])
    assert rows == [{"Identity": "B1", "Status": "Syncing", "TotalCount": 3}]
    assert fake.selected[-1] == ("Identity", "Status", "TotalCount")
    wsman = WSMan("127.0.0.1", port=gateway.port, username=USER, password=PASSWORD, auth="basic",
                  ssl=False, encryption="never", no_proxy=True)  # fmt: skip
    with RunspacePool(wsman) as pool:  # any other second command is refused
        shell = PowerShell(pool)
        shell.add_cmdlet("Get-MigrationBatch").add_cmdlet("Sort-Object").add_parameter("Property", "Identity")
        shell.invoke()
    assert shell.had_errors and "more than one command" in str(shell.streams.error[0])


def test_gateway_down_is_unavailable(fake: FakeRunner) -> None:
    with running_gateway(fake) as gateway:
        settings = settings_for(gateway)
    runner = PsrpRunner(settings)
    with pytest.raises(errors.UnavailableError, match="cannot reach"):
        runner.run("Get-MigrationBatch", {})


def signing_in(gateway: PsrpGateway) -> PsrpSettings:
    """Settings whose bootstrap signs in with Connect-ExchangeOnline (app and certificate)."""
    return settings_for(
        gateway, bootstrap="connect-exchangeonline", appId="00000000-1111-2222-3333-444444444444",
        certificateThumbprint="ABCDEF0123456789", organization="contoso.onmicrosoft.com",
    )  # fmt: skip


def test_bootstrap_sends_connect_exchangeonline_as_a_cmdlet(fake: FakeRunner) -> None:
    cmdlets = {"Connect-ExchangeOnline", "Get-MigrationBatch"}
    with running_gateway(fake, cmdlets=cmdlets) as gateway:
        settings = signing_in(gateway)
        runner = PsrpRunner(settings)
        runner.run("Get-MigrationBatch", {})
        runner.run("Get-MigrationBatch", {})
        runner.close()
    assert [call.cmdlet for call in gateway.received] == [
        "Connect-ExchangeOnline", "Get-MigrationBatch", "Get-MigrationBatch",
    ]  # fmt: skip
    assert gateway.received[0].parameters == {
        "AppId": "00000000-1111-2222-3333-444444444444", "CertificateThumbprint": "ABCDEF0123456789",
        "Organization": "contoso.onmicrosoft.com", "ShowBanner": False,
    }  # fmt: skip


def test_a_failed_sign_in_leaves_no_session_and_the_next_call_signs_in_again(fake: FakeRunner) -> None:
    """Connect-ExchangeOnline fails once: no cmdlet may then run in that session, unsigned in."""
    fake.raises["Connect-ExchangeOnline"] = errors.CmdletError(
        "Connect-ExchangeOnline", "AuthenticationFailedException", "the certificate was not found"
    )
    cmdlets = {"Connect-ExchangeOnline", "Get-MigrationBatch"}
    with running_gateway(fake, cmdlets=cmdlets) as gateway:
        settings = signing_in(gateway)
        runner = PsrpRunner(settings)
        with pytest.raises(errors.CmdletError):
            runner.run("Get-MigrationBatch", {})
        del fake.raises["Connect-ExchangeOnline"]  # the certificate is installed
        runner.run("Get-MigrationBatch", {})
        runner.close()
    assert [call.cmdlet for call in gateway.received] == [
        "Connect-ExchangeOnline", "Connect-ExchangeOnline", "Get-MigrationBatch",
    ]  # fmt: skip


def test_settings_need_the_app_for_the_default_bootstrap_and_refuse_inline_secrets() -> None:
    with pytest.raises(ValidationError, match=r"app_id"):
        PsrpSettings.model_validate({"host": "gw.contoso.com"})
    with pytest.raises(ValidationError):
        PsrpSettings.model_validate({"host": "gw", "bootstrap": "none", "passwordRef": "hunter2"})
    settings = PsrpSettings.model_validate({"host": "gw.contoso.com", "bootstrap": "none"})
    assert settings.endpoint == "https://gw.contoso.com:5986/wsman" and settings.cert_validation


# --- the real simulator behind the gateway ------------------------------------------------------------------


@pytest.fixture
def state(tmp_path: Path) -> Path:
    simulator = ExchangeSimulator(now=T0)
    for i in range(2000):
        simulator.add_recipient(f"user{i:04d}@contoso.com")
    path = tmp_path / "exchange.sqlite"
    SimStore(path).create(simulator)
    return path


def test_simulator_round_trip_through_the_gateway(state: Path) -> None:
    csv = ("EmailAddress\r\n" + "".join(f"user{i:04d}@contoso.com\r\n" for i in range(2000))).encode()
    with running_gateway(SimRunner(state)) as gateway:
        runner = PsrpRunner(settings_for(gateway, maxEnvelopeSize=32768))
        try:
            endpoint = runner.run("New-MigrationEndpoint", ENDPOINT)
            assert endpoint[0]["Identity"] == "StagedEndpoint"
            runner.run("New-MigrationBatch", {"Name": "Batch1-IT", "SourceEndpoint": "StagedEndpoint",
                                              "CSVData": csv, "AutoStart": True})  # fmt: skip
            [batch] = runner.run("Get-MigrationBatch", {})
            assert batch["Identity"] == "Batch1-IT" and batch["TotalCount"] == 2000
            assert len(runner.run("Get-MigrationUser", {"BatchId": "Batch1-IT"})) == 2000
            with pytest.raises(errors.CmdletError) as caught:
                runner.run("Get-MigrationBatch", {"Identity": "Nope"})
            assert caught.value.not_found
            with SimStore(state).transaction() as simulator:
                simulator.throttle("Get-MigrationBatch", 1)
            with pytest.raises(errors.ThrottledError):
                runner.run("Get-MigrationBatch", {})
            with SimStore(state).transaction() as simulator:
                simulator.throttle("Get-MigrationBatch", 1, mode=ThrottleMode.WARNING)
            assert runner.run("Get-MigrationBatch", {}).warnings  # type: ignore[attr-defined]
        finally:
            runner.close()
    assert max(gateway.sends.values()) >= 2  # the CSV arrived over the Command and several Sends
    assert gateway.received[0].parameters["Credentials"] == Credential("CONTOSO\\migrator", "<redacted>")


def test_sim_gateway_command_prints_its_url_and_stops_on_sigterm(state: Path) -> None:
    env = {**os.environ, "GW_PASSWORD": PASSWORD}
    command = [sys.executable, "-m", "controller", "sim-gateway", "--state", str(state), "--port", "0",
               "--user", USER, "--password-ref", "env:GW_PASSWORD"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/wsman")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        runner = PsrpRunner(PsrpSettings.model_validate({
            "host": "127.0.0.1", "port": port, "ssl": False, "auth": "basic", "username": USER,
            "passwordRef": "env:STAGECTL_TEST_GATEWAY_PASSWORD", "bootstrap": "none",
        }))  # fmt: skip
        assert runner.run("Get-MigrationBatch", {}) == []
        runner.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sim_gateway_with_sign_in_rehearses_the_connect_exchangeonline_bootstrap(state: Path) -> None:
    """`stagectl sim-gateway --sign-in` answers Connect-ExchangeOnline and refuses cmdlets before it, so a
    configuration with the real bootstrap can be rehearsed (operator guide §5)."""
    env = {**os.environ, "GW_PASSWORD": PASSWORD}
    command = [sys.executable, "-m", "controller", "sim-gateway", "--state", str(state), "--port", "0",
               "--user", USER, "--password-ref", "env:GW_PASSWORD", "--sign-in"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().strip().rsplit(":", 1)[1].split("/")[0])
        settings = {"host": "127.0.0.1", "port": port, "ssl": False, "auth": "basic", "username": USER,
                    "passwordRef": "env:STAGECTL_TEST_GATEWAY_PASSWORD"}  # fmt: skip
        unsigned = PsrpRunner(PsrpSettings.model_validate({**settings, "bootstrap": "none"}))
        with pytest.raises(errors.ExchangeError):  # no sign-in: refused, as the real module would
            unsigned.run("Get-MigrationBatch", {})
        unsigned.close()
        signed = PsrpRunner(PsrpSettings.model_validate({
            **settings, "bootstrap": "connect-exchangeonline",
            "appId": "00000000-0000-0000-0000-000000000001",
            "certificateThumbprint": "0123456789ABCDEF0123456789ABCDEF01234567",
            "organization": "contoso.onmicrosoft.com",
        }))  # fmt: skip
        assert signed.run("Get-MigrationBatch", {}) == []
        signed.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
