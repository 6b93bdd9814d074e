"""Every read over PSRP is complete or an error: lost Receive replies, cut streams; the traffic counters."""

from __future__ import annotations

import threading

import pytest
from pypsrp.complex_objects import PSInvocationState
from pypsrp.exceptions import WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.serializer import Serializer
from pypsrp.wsman import WSMan

from controller.exchange import errors, psrp
from controller.exchange.psrp import PsrpRunner
from controller.sim.gateway import pipelines
from controller.sim.gateway import wsman as wsman_codes
from controller.sim.gateway.server import PsrpGateway
from tests.support.gateway import PASSWORD, USER, FakeRunner, running_gateway, settings_for

ROWS = 5_000
OUTPUT_CHUNKS = 4  # a reply of this many fragments' payloads carries output objects, not just state


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGECTL_TEST_GATEWAY_PASSWORD", PASSWORD)


@pytest.fixture
def fake() -> FakeRunner:
    fake = FakeRunner()
    fake.rows["Get-Recipient"] = [
        {"PrimarySmtpAddress": f"user{i:05d}@contoso.com", "RecipientTypeDetails": "UserMailbox"}
        for i in range(ROWS)
    ]
    return fake


class LateReply:
    """Holds back one Receive reply carrying output until the client has sent the next Receive.

    This is the gateway handler that was slow (at 200,000 rows: starved of the shell lock for ~27 s) after it
    had taken fragments from the outbox: the client's HTTP read timed out and pypsrp sent the same Receive
    again, on a new connection, while the first reply was still on its way to a socket nobody reads.
    """

    def __init__(self, *, hold: int) -> None:
        self.hold = hold  # which reply carrying output objects to hold back (1 = the first)
        self.seen = 0
        self.held = False
        self.released = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, command_id: str | None, chunks: list[bytes]) -> list[bytes]:
        with self._lock:
            if self.held:
                self.released.set()  # any later reply: the client has sent its Receive again
                return chunks
            if command_id is None or len(chunks) < OUTPUT_CHUNKS:
                return chunks
            self.seen += 1
            if self.seen < self.hold:
                return chunks
            self.held = True
        self.released.wait(10)
        return chunks


def fast_resend_client(gateway: PsrpGateway) -> PsrpRunner:
    """A client whose HTTP read times out after 2 s, before a held-back reply, and resends at once."""
    runner = PsrpRunner(settings_for(gateway, operationTimeout=1, readTimeout=2))
    runner.run("Get-MigrationBatch", {})  # opens the pool
    assert runner._wsman is not None
    runner._wsman.transport.reconnection_backoff = 0.0  # pypsrp sleeps 2 s before a resend by default
    return runner


def test_a_receive_resent_after_a_read_timeout_loses_no_row(fake: FakeRunner) -> None:
    late = LateReply(hold=1)
    with running_gateway(fake, before_reply=late) as gateway:
        runner = fast_resend_client(gateway)
        try:
            rows = runner.run("Get-Recipient", {"ResultSize": "Unlimited"})
        finally:
            runner.close()
    assert late.held and late.released.is_set()  # the fault was driven
    assert len(rows) == ROWS
    assert [row["PrimarySmtpAddress"] for row in rows] == [
        row["PrimarySmtpAddress"] for row in fake.rows["Get-Recipient"]
    ]


def fragment_id(payload: bytes) -> int:
    """The FragmentId of the first PSRP fragment in a payload (MS-PSRP 2.2.4)."""
    return int.from_bytes(payload[8:16], "big")


def test_a_message_whose_end_never_came_is_unavailable_not_an_empty_read(fake: FakeRunner) -> None:
    fake.rows["Get-Mailbox"] = [{"Identity": "big", "Notes": "x" * 50_000}]  # one message, two fragments

    def drop_continuations(command_id: str | None, chunks: list[bytes]) -> list[bytes]:
        return [chunk for chunk in chunks if fragment_id(chunk) == 0]

    with running_gateway(fake, before_reply=drop_continuations) as gateway:
        runner = PsrpRunner(settings_for(gateway))
        with pytest.raises(errors.UnavailableError, match="arrived only in part"):
            runner.run("Get-Mailbox", {})
        runner.close()


def test_a_payload_delivered_twice_is_unavailable_not_duplicate_rows(fake: FakeRunner) -> None:
    fake.rows["Get-Mailbox"] = [{"Identity": f"m{i}"} for i in range(3)]

    def twice(command_id: str | None, chunks: list[bytes]) -> list[bytes]:
        return chunks + chunks if command_id is not None else chunks

    with running_gateway(fake, before_reply=twice) as gateway:
        runner = PsrpRunner(settings_for(gateway))
        with pytest.raises(errors.UnavailableError, match="twice or out of order"):
            runner.run("Get-Mailbox", {})
        runner.close()


def test_a_pipeline_that_did_not_complete_is_named_by_its_state() -> None:
    fragmenter = psrp._CheckedFragmenter(153600, Serializer())
    assert fragmenter.incomplete(PSInvocationState.STOPPED) == "the pipeline ended Stopped, not Completed"
    assert fragmenter.incomplete(PSInvocationState.COMPLETED) is None
    assert fragmenter.incomplete(PSInvocationState.FAILED) is None  # its error record says why


def test_a_receive_for_a_command_already_read_to_the_end_faults_at_once(fake: FakeRunner) -> None:
    # Waiting instead would leave the client polling for ever: pypsrp retries the timeout fault.
    with running_gateway(fake) as gateway:
        wsman = WSMan("127.0.0.1", port=gateway.port, username=USER, password=PASSWORD, auth="basic",
                      ssl=False, encryption="never", no_proxy=True, operation_timeout=5)  # fmt: skip
        with RunspacePool(wsman) as pool:
            shell = PowerShell(pool)
            shell.add_cmdlet("Get-MigrationBatch")
            shell.invoke()
            assert shell.state == PSInvocationState.COMPLETED
            with pytest.raises(WSManFaultError) as caught:
                pool.shell.receive("stdout", command_id=shell._command_id)
    assert caught.value.code == wsman_codes.ERROR_INVALID_SELECTORS


def test_the_gateway_serialises_no_further_ahead_than_the_outbox_limit(
    fake: FakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipelines, "OUTBOX_LIMIT", 32 * 1024)
    fake.rows["Get-Mailbox"] = [{"Identity": f"mailbox{i:05d}", "Notes": "n" * 200} for i in range(1200)]
    with running_gateway(fake) as gateway:
        wsman = WSMan("127.0.0.1", port=gateway.port, username=USER, password=PASSWORD, auth="basic",
                      ssl=False, encryption="never", no_proxy=True, operation_timeout=5)  # fmt: skip
        with RunspacePool(wsman) as pool:
            shell = PowerShell(pool)
            shell.add_cmdlet("Get-Mailbox")
            shell.begin_invoke()  # Command sent, nothing received yet
            written = threading.Event()
            for _ in range(100):  # the first slices go at once, up to the limit; then the pipeline waits
                if gateway.rows_written.get("Get-Mailbox", 0) > 0:
                    break
                written.wait(0.05)
            written.wait(0.2)  # time to run ahead, were it not held back
            assert 0 < gateway.rows_written["Get-Mailbox"] < 1200
            output = shell.end_invoke()
    assert len(output) == 1200
    assert gateway.rows_written["Get-Mailbox"] == 1200


def test_traffic_counters_count_requests_bytes_and_rows(fake: FakeRunner) -> None:
    fake.rows["Get-Mailbox"] = [{"Identity": f"m{i}"} for i in range(3)]
    with running_gateway(fake) as gateway:
        runner = PsrpRunner(settings_for(gateway))
        runner.run("Get-MigrationBatch", {})
        requests, sent = gateway.round_trips, gateway.response_bytes
        assert len(runner.run("Get-Mailbox", {})) == 3
        runner.close()
        assert gateway.rows_written == {"Get-MigrationBatch": 0, "Get-Mailbox": 3}
        assert gateway.round_trips > requests > 0
        assert gateway.response_bytes > sent > 0
