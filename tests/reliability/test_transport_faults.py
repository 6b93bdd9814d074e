"""Transport faults through the real pypsrp client and the project's PSRP gateway, and through a proxy in
front of a real BIND (issue 14, item 3). Every test runs real controller passes: each fault either
converges or stops with the object unknown, nothing acts on unknown state, an effect whose answer was lost
is settled by the next observation (never sent twice), and busy answers are backed off with jitter."""

from __future__ import annotations

import signal
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.model.actions import DnsAction, ExchangeAction
from controller.runtime.reconciler import PassResult
from controller.sim.bind import KEY_NAME, ZONE, ZONE_TEXT, BindZone, bind_zone
from controller.sim.exchange.store import SimRunner
from controller.sim.gateway.server import PsrpGateway
from tests.support.controller import PILOT, Workspace, make_workspace
from tests.support.dnsproxy import DnsProxy, disagreeing_server
from tests.support.gateway import PASSWORD, USER, controller_psrp

GATEWAY_PASSWORD_ENV = "STAGECTL_TEST_GATEWAY_PASSWORD"
TSIG_ENV = "STAGECTL_TEST_TSIG_KEY"
# The client's timeouts, short so that a reply held past them costs seconds, not minutes.
OPERATION_TIMEOUT, READ_TIMEOUT = 1, 2
SLOWER_THAN_READ_TIMEOUT = READ_TIMEOUT + 1.5
DNS_TIMEOUT = 0.5
BOUND = 120.0  # an upper bound for a stuck process, never an expectation about speed
SIGN_IN = {
    "bootstrap": "connect-exchangeonline",
    "appId": "00000000-1111-2222-3333-444444444444",
    "certificateThumbprint": "ABCDEF0123456789",
    "organization": "contoso.onmicrosoft.com",
}
EXCHANGE_WRITES = ("New-", "Set-", "Start-", "Stop-", "Complete-", "Remove-")


# --- the world: a workspace whose Exchange is the simulator behind the gateway ----------------------------


@dataclass
class World:
    workspace: Workspace
    gateway: PsrpGateway

    def received(self, cmdlet: str) -> int:
        return sum(1 for call in self.gateway.received if call.cmdlet == cmdlet)

    def writes_received(self) -> Counter[str]:
        return Counter(c.cmdlet for c in self.gateway.received if c.cmdlet.startswith(EXCHANGE_WRITES))


@contextmanager
def psrp_world(
    tmp_path: Path, *, sign_in: bool = False, dns: dict[str, object] | None = None, pilot: str = "started"
) -> Iterator[World]:
    """The example's pilot (started by default) over PSRP to the gateway in this process (the simulator
    behind it, its clock the controller's), DNS as given (the simulator by default)."""
    workspace = make_workspace(tmp_path / "ws", pilot=pilot)
    workspace.env[GATEWAY_PASSWORD_ENV] = PASSWORD
    gateway = PsrpGateway(SimRunner(workspace.exo_path), username=USER, password=PASSWORD, sign_in=sign_in)
    with gateway:
        psrp = psrp_settings(gateway)
        if sign_in:
            psrp.update(SIGN_IN)
        workspace.write_config(
            exchange={"backend": "psrp", "psrp": psrp, "state": str(workspace.exo_path)},
            dns=dns or {"backend": "sim", "state": str(workspace.dns_path)},
        )
        yield World(workspace, gateway)


def applied(result: PassResult) -> list[str]:
    """What the pass applied, as cmdlets and `dns <object>`, in order."""
    return [
        o.action.cmdlet if isinstance(o.action, ExchangeAction) else f"dns {o.action.object}"
        for o in result.report.outcomes
        if o.ok
    ]


def unknown(world: World) -> dict[str, str]:
    """What the last pass could not read, and why, as `stagectl status` shows it."""
    found = world.workspace.status()["unknown"]
    assert isinstance(found, dict)
    return found


def failed(result: PassResult) -> str | None:
    return None if result.report.failed is None else result.report.failed.detail


def assert_converged(world: World) -> None:
    """A pass with nothing to do, nothing unknown, nothing failed, and the pilot syncing."""
    result = world.workspace.run_pass()
    assert result.plan.actions == () and unknown(world) == {}, (result.plan.actions, unknown(world))
    assert failed(result) is None
    assert world.workspace.exchange().batch_status(PILOT) in ("Syncing", "Synced")
    assert world.workspace.status()["lastPass"] == {"applied": 0, "failed": None, "notDone": 0}


# --- Exchange: the connection dropped while a pipeline's output is received ---------------------------------


def test_a_read_whose_connection_drops_mid_output_is_read_again_on_a_new_session(tmp_path: Path) -> None:
    with psrp_world(tmp_path) as world:
        world.gateway.faults.drop_output("Get-MigrationBatch", times=1)
        result = world.workspace.run_pass()
        assert world.gateway.faults.fired == {"drop": 1}
        assert failed(result) is None and unknown(world) == {}
        assert "New-MigrationBatch" in applied(result)
        assert world.received("Get-MigrationBatch") == 2  # the dropped read, then the same read again
        assert world.writes_received() == {"New-MigrationEndpoint": 1, "New-MigrationBatch": 1}
        assert_converged(world)


def test_a_write_whose_answer_is_lost_is_not_sent_again_and_the_next_pass_settles_it(tmp_path: Path) -> None:
    """The gateway ran New-MigrationBatch and dropped the connection while its output was received: the
    client cannot know whether it took effect, so it is not repeated; the next pass observes the batch."""
    with psrp_world(tmp_path) as world:
        world.gateway.faults.drop_output("New-MigrationBatch", times=1)
        first = world.workspace.run_pass()
        assert world.gateway.faults.fired == {"drop": 1}
        assert first.report.failed is not None
        assert first.report.failed.action.object == f"batch/{PILOT}"
        assert "may have run: the next observation decides" in first.report.failed.detail
        assert world.received("New-MigrationBatch") == 1  # sent once, never repeated blindly
        assert world.workspace.exchange().batch_status(PILOT) is not None  # it did take effect

        second = world.workspace.run_pass()
        assert "New-MigrationBatch" not in applied(second), "settled by observation, not sent again"
        assert failed(second) is None
        assert world.workspace.writes()["New-MigrationBatch"] == 1
        assert_converged(world)
        assert world.received("New-MigrationBatch") == 1
        audit = world.workspace.audit_records()
        assert any(
            str(r["result"]).startswith("unknown: ") and "may have run" in str(r["result"]) for r in audit
        )
        # The intent stayed open until the second pass observed the batch: settled as applied.
        [settled] = world.workspace.audit_records(phase="settled")
        assert settled["action"]["object"] == f"batch/{PILOT}"  # type: ignore[index]
        assert str(settled["result"]).startswith("settled: applied: ")


def test_a_read_that_always_drops_leaves_its_kind_unknown_and_nothing_acts_on_it(tmp_path: Path) -> None:
    with psrp_world(tmp_path) as world:
        world.gateway.faults.drop_output("Get-MigrationBatch", times=None)
        result = world.workspace.run_pass()
        assert "exchange/batches" in unknown(world)
        assert "IndeterminateError" in unknown(world)["exchange/batches"]
        batch_actions = [a for a in result.plan.actions if "batch" in a.object]
        assert batch_actions == [], "no action on batches that could not be read"
        assert not world.writes_received().keys() - {"New-MigrationEndpoint"}
        status = world.workspace.status()
        assert "exchange/batches" in status["unknown"]  # type: ignore[operator]
        assert status["batches"][0]["status"] is None  # type: ignore[index]

        world.gateway.faults.clear()
        world.workspace.run_pass()
        assert_converged(world)
        assert world.writes_received()["New-MigrationBatch"] == 1


# --- Exchange: answers slower than the client's read timeout ------------------------------------------------


def test_a_write_answered_after_the_read_timeout_is_not_repeated_and_settles(tmp_path: Path) -> None:
    """The Command that starts New-MigrationBatch is answered after the client gave up: the cmdlet ran."""
    with psrp_world(tmp_path) as world:
        world.gateway.faults.delay(SLOWER_THAN_READ_TIMEOUT, action="Command", cmdlet="New-MigrationBatch")
        first = world.workspace.run_pass()
        assert world.gateway.faults.fired == {"delay": 1}
        assert first.report.failed is not None and "may have run" in first.report.failed.detail
        assert world.received("New-MigrationBatch") == 1
        second = world.workspace.run_pass()
        assert "New-MigrationBatch" not in applied(second)
        assert_converged(world)
        assert world.received("New-MigrationBatch") == 1


def test_a_receive_answered_after_the_read_timeout_is_resent_and_loses_nothing(tmp_path: Path) -> None:
    with psrp_world(tmp_path) as world:
        world.gateway.faults.delay(SLOWER_THAN_READ_TIMEOUT, action="Receive", cmdlet="Get-MigrationEndpoint")
        result = world.workspace.run_pass()
        assert world.gateway.faults.fired == {"delay": 1}
        assert failed(result) is None and unknown(world) == {}
        assert world.received("Get-MigrationEndpoint") == 1  # the Receive was re-sent, not the cmdlet


def test_reads_always_slower_than_the_timeout_leave_the_kind_unknown(tmp_path: Path) -> None:
    with psrp_world(tmp_path) as world:
        world.gateway.faults.delay(
            SLOWER_THAN_READ_TIMEOUT, action="Command", cmdlet="Get-MigrationEndpoint", times=None
        )
        result = world.workspace.run_pass()
        assert "exchange/endpoints" in unknown(world)
        assert "Timeout" in unknown(world)["exchange/endpoints"]
        assert not [a for a in result.plan.actions if "endpoint" in a.object]
        assert world.received("New-MigrationEndpoint") == 0
        assert not [a for a in result.plan.actions if isinstance(a, ExchangeAction) and "Batch" in a.cmdlet]


# --- Exchange: session expiry and the sign-in ---------------------------------------------------------------


def test_an_expired_session_is_opened_again_and_signed_in_before_any_cmdlet(tmp_path: Path) -> None:
    with psrp_world(tmp_path, sign_in=True) as world, world.workspace.reconciler() as reconciler:
        first = reconciler.run_pass()
        assert failed(first) is None and unknown(world) == {}
        assert world.received("Connect-ExchangeOnline") == 1
        # Between two passes of the same controller the gateway forgets its runspace pools ...
        world.gateway.faults.expire_sessions()
        second = reconciler.run_pass()
        assert failed(second) is None and unknown(world) == {}
        # ... and within a pass, just before a write.
        world.workspace.commit_desired(pilot="started", wave="started", message="Start the wave")
        world.gateway.faults.expire_sessions(before="New-MigrationBatch")  # the wave's, refused: not run
        third = reconciler.run_pass()
        assert failed(third) is None, failed(third)
        assert world.gateway.faults.fired.get("expire") == 2
        assert world.received("Connect-ExchangeOnline") == 3  # one sign-in per session
        assert world.gateway.faults.fired.get("unsigned", 0) == 0  # no cmdlet ran in a pool not signed in
        assert world.writes_received() == {"New-MigrationEndpoint": 1, "New-MigrationBatch": 2}
        assert world.workspace.writes()["New-MigrationBatch"] == 2  # each batch created once
        assert world.workspace.exchange().batch_status("Wave1") is not None


def test_a_sign_in_that_fails_once_leaves_no_unsigned_session(tmp_path: Path) -> None:
    with psrp_world(tmp_path, sign_in=True) as world:
        world.gateway.faults.fail_sign_in(times=1)
        world.workspace.run_pass()
        assert world.gateway.faults.fired.get("sign-in") == 1
        assert world.gateway.faults.fired.get("unsigned", 0) == 0
        assert "exchange/endpoints" in unknown(world)
        assert "AADSTS700027" in unknown(world)["exchange/endpoints"]
        assert world.received("New-MigrationEndpoint") == 0  # nothing acted on the unknown endpoint
        world.workspace.run_pass()
        assert_converged(world)
        assert world.gateway.faults.fired.get("unsigned", 0) == 0


# --- Exchange: 30% of calls busy or warned, under the real `stagectl run` loop ------------------------------

BUSY_RATE, BUSY_SEED = 0.3, 14
LOOP_INTERVAL = "1s"
LOOP_WINDOW = 30.0  # seconds the loop runs under busy answers: the measurement window
CALLS_PER_MINUTE_CEILING = 300


@pytest.mark.slow
def test_busy_answers_on_30_percent_of_calls_are_backed_off_with_jitter_and_no_hot_loop(
    tmp_path: Path,
) -> None:
    """The figure in docs/reliability.md: calls per minute the loop makes with 30% of calls busy."""
    with psrp_world(tmp_path) as world:
        workspace = world.workspace
        workspace.run_pass()  # the pilot created and started: the loop below only observes and waits
        workspace.write_config(
            exchange={
                "backend": "psrp",
                "psrp": psrp_settings(world.gateway),
                "state": str(workspace.exo_path),
            },
            dns={"backend": "sim", "state": str(workspace.dns_path)},
            interval=LOOP_INTERVAL,
        )
        with workspace.tenant() as tenant:
            tenant.busy(BUSY_RATE, seed=BUSY_SEED)
        before = len(world.gateway.received)
        process = workspace.start("run", "--config", str(workspace.config_path))
        try:
            time.sleep(LOOP_WINDOW)  # the measurement window, not an expectation about speed
        finally:
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=BOUND)
        assert process.returncode == 0, err
        assert "Traceback" not in out + err
        calls = world.gateway.received[before:]
        busy = workspace.exchange().state.busy
        assert busy is not None

    # The simulator's draws are deterministic: replay them to know which call got which answer.
    fates = replay_busy(len(calls))
    errors = [i for i, fate in enumerate(fates) if fate == "error"]
    assert busy.errors == len(errors) and busy.draws == len(calls)
    assert len(calls) >= 30, len(calls)  # seed 14 busies 6 of the first 30 calls and warns 7
    minutes = (calls[-1].at - calls[0].at) / 60
    per_minute = len(calls) / minutes
    print(f"{len(calls)} calls in {minutes * 60:.1f} s: {per_minute:.0f} calls per minute under 30% busy")
    assert per_minute <= CALLS_PER_MINUTE_CEILING, per_minute
    # Each busy answer is followed by a wait of at least its "Retry after" before the call is sent again...
    retries = [i for i in errors if i + 1 < len(calls) and calls[i + 1].cmdlet == calls[i].cmdlet]
    gaps = [calls[i + 1].at - calls[i].at for i in retries]
    assert gaps and min(gaps) >= busy.retry_after, gaps
    # ... and the waits are jittered, not one fixed delay.
    assert len({round(gap, 1) for gap in gaps}) > 1, gaps
    print(f"retry gaps after a busy answer: min {min(gaps):.2f} s, median {statistics.median(gaps):.2f} s")


def psrp_settings(gateway: PsrpGateway) -> dict[str, object]:
    """The controller's `exchange.psrp` for the gateway, with short client timeouts."""
    psrp = controller_psrp(gateway, password_env=GATEWAY_PASSWORD_ENV)
    psrp.update(operationTimeout=OPERATION_TIMEOUT, readTimeout=READ_TIMEOUT, connectionTimeout=2)
    return psrp


def replay_busy(count: int) -> list[str | None]:
    from controller.sim.exchange.state import Busy

    busy = Busy(rate=BUSY_RATE, seed=BUSY_SEED)
    return [None if (fate := busy.draw()) is None else fate.value for _ in range(count)]


# --- DNS: a proxy in front of BIND ------------------------------------------------------------------------


@dataclass
class DnsWorld:
    world: World
    bind: BindZone
    proxy: DnsProxy

    def txt(self) -> list[str]:
        answer = self.bind.primary.query(ZONE, "TXT")
        return sorted(b"".join(rdata.strings).decode() for rdata in answer.answer[0])

    def serial(self) -> int | None:
        return self.bind.primary.serial()


@contextmanager
def dns_world(tmp_path: Path, *, secondary: str | None = None, lagging: bool = False) -> Iterator[DnsWorld]:
    """The pilot over PSRP; contoso.com on BIND behind the proxy, which is the primary the controller
    knows; with `secondary`, a second server listed (that address)."""
    with (
        bind_zone(secondary=lagging, notify=False) as bind,
        DnsProxy(("127.0.0.1", bind.primary.port)) as proxy,
    ):
        servers = [proxy.address]
        if lagging:
            assert bind.secondary is not None
            servers.append(bind.secondary.address)
        if secondary is not None:
            servers.append(secondary)
        dns = {
            "backend": "rfc2136",
            "rfc2136": {
                "default": {
                    "servers": servers,
                    "primary": proxy.address,
                    "keyRef": f"env:{TSIG_ENV}",
                    "timeout": DNS_TIMEOUT,
                }
            },
        }
        with psrp_world(tmp_path, dns=dns) as world:
            world.workspace.env[TSIG_ENV] = f"{KEY_NAME}:hmac-sha256:{bind.secret}"
            yield DnsWorld(world, bind, proxy)


ONPREM_TXT = ["MS=ms12345678", "v=spf1 mx -all"]
COEXISTENCE_TXT = ["MS=ms12345678", "v=spf1 mx include:spf.protection.outlook.com -all"]


def dns_applied(result: PassResult) -> list[str]:
    return [o.action.object for o in result.report.outcomes if isinstance(o.action, DnsAction) and o.ok]


def test_the_primary_down_leaves_the_zone_unknown_and_nothing_acts_on_it(tmp_path: Path) -> None:
    with dns_world(tmp_path) as dw:
        dw.proxy.down = True
        result = dw.world.workspace.run_pass()
        assert f"dns/{ZONE}" in unknown(dw.world)
        assert not [a for a in result.plan.actions if isinstance(a, DnsAction)]
        assert dw.proxy.counts.updates == 0 and dw.proxy.counts.unanswered > 0
        # The SPF string could not be read: no batch starts while it may not authorise Exchange Online.
        assert dw.world.received("New-MigrationBatch") == 0
        assert dw.txt() == ONPREM_TXT and dw.serial() == 1

        dw.proxy.down = False
        dw.world.workspace.run_pass()
        assert_converged(dw.world)
        assert dw.txt() == COEXISTENCE_TXT
        assert dw.proxy.counts.updates == 2  # the SPF string and the MX TTL, once each


def test_answers_slower_than_the_timeout_leave_the_zone_unknown_and_faster_ones_converge(
    tmp_path: Path,
) -> None:
    with dns_world(tmp_path) as dw:
        dw.proxy.delay = DNS_TIMEOUT * 3
        dw.world.workspace.run_pass()
        assert "timed out" in unknown(dw.world)[f"dns/{ZONE}"]
        assert dw.proxy.counts.updates == 0 and dw.serial() == 1

        dw.proxy.delay = DNS_TIMEOUT / 5  # slow, within the timeout
        first = dw.world.workspace.run_pass()
        assert failed(first) is None and unknown(dw.world) == {}
        assert dns_applied(first) == [f"dns/{ZONE}/@/TXT", f"dns/{ZONE}/@/MX"]
        assert_converged(dw.world)
        assert dw.proxy.counts.updates == 2


def test_an_update_whose_response_is_lost_after_bind_applied_it_is_settled_by_observation(
    tmp_path: Path,
) -> None:
    with dns_world(tmp_path) as dw:
        dw.proxy.swallow_updates = 1
        first = dw.world.workspace.run_pass()
        assert dw.proxy.counts.swallowed == 1
        assert first.report.failed is not None and first.report.failed.action.object == f"dns/{ZONE}/@/TXT"
        assert "did not answer the update in time" in first.report.failed.detail
        assert "may have been applied: the next observation decides" in first.report.failed.detail
        assert dw.txt() == COEXISTENCE_TXT and dw.serial() == 2  # BIND applied it
        assert dw.world.received("New-MigrationBatch") == 0  # the pass stopped at the failure

        second = dw.world.workspace.run_pass()
        assert f"dns/{ZONE}/@/TXT" not in dns_applied(second), "observed as done: not sent again"
        assert "New-MigrationBatch" in applied(second)
        assert_converged(dw.world)
        assert dw.proxy.counts.updates == 2  # the TXT once (its answer lost), the MX TTL once
        assert dw.txt() == COEXISTENCE_TXT and dw.serial() == 3
        [settled] = dw.world.workspace.audit_records(phase="settled")
        assert settled["action"]["object"] == f"dns/{ZONE}/@/TXT"  # type: ignore[index]
        assert str(settled["result"]).startswith("settled: applied: ")


def test_a_secondary_ahead_of_the_primary_makes_the_zone_unknown(tmp_path: Path) -> None:
    other = ZONE_TEXT.replace(" 1 86400 ", " 7 86400 ").replace(
        "10 mail.contoso.com.", "10 mx.elsewhere.net."
    )
    with disagreeing_server(ZONE, other) as server, dns_world(tmp_path, secondary=server.address) as dw:
        result = dw.world.workspace.run_pass()
        why = unknown(dw.world)[f"dns/{ZONE}"]
        assert "looks stale" in why and server.address in why
        assert not [a for a in result.plan.actions if isinstance(a, DnsAction)]
        assert dw.proxy.counts.updates == 0 and dw.serial() == 1


def test_a_lagging_secondary_is_a_finding_and_nothing_is_applied_twice(tmp_path: Path) -> None:
    with dns_world(tmp_path, lagging=True) as dw:
        first = dw.world.workspace.run_pass()
        assert failed(first) is None and dw.proxy.counts.updates == 2
        second = dw.world.workspace.run_pass()
        assert dns_applied(second) == []
        findings = dw.world.workspace.status()["findings"]
        assert any("differs between the primary" in f for f in findings), findings  # type: ignore[union-attr]
        assert dw.proxy.counts.updates == 2 and dw.txt() == COEXISTENCE_TXT
