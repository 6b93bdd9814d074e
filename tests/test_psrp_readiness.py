"""The preflight and the post-flight end to end over real PSRP (issue 16 items 3, 4 and 6; contract §4).

The controller's own passes against the simulator behind the PSRP gateway: one call per kind (one
Get-Recipient for every member about to start, one Test-MigrationServerAvailability), the preflight
holding a batch with each member and why, a failing endpoint test shown with its Result and ErrorDetail,
a licence warning that holds nothing, and the post-flight holding the cutover until every member of a
completed batch is a UserMailbox — then remembered, so its members are not looked up again.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from controller.sim.exchange.state import RecipientType
from controller.sim.exchange.store import SimRunner
from tests.support.controller import PILOT, PILOT_MEMBERS, WAVE, WAVE_MEMBERS, batch_yaml, make_workspace
from tests.support.gateway import PASSWORD, controller_psrp, running_gateway

KENJI, ZOE, LIAM = WAVE_MEMBERS
VANESSA = PILOT_MEMBERS[1]
NSPI = (
    "Microsoft.Exchange.Migration.MigrationServerConnectionFailedException: The connection to the server "
    "'mail.contoso.com' could not be completed. ---> Microsoft.Exchange.Rpc.ServerUnavailableException: "
    "Error 0x6ba (The RPC server is unavailable) from cli_NspiBind"
)


def states(pilot: str, wave: str) -> dict[str, str]:
    return {
        "desired/batches/pilot.yaml": batch_yaml(PILOT, PILOT_MEMBERS, state=pilot),
        "desired/batches/wave1.yaml": batch_yaml(WAVE, WAVE_MEMBERS, state=wave),
    }


def calls_since(gateway: Any, seen: int) -> Counter[str]:
    return Counter(call.cmdlet for call in gateway.received[seen:])


def readiness(status: dict[str, Any], batch: str, phase: str) -> dict[str, Any]:
    found = [r for r in status["readiness"] if r["batch"] == batch and r["phase"] == phase]
    assert found, status["readiness"]
    return found[0]


def check(entry: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in entry["checks"] if c["check"] == name)


def test_preflight_and_post_flight_over_the_psrp_gateway(tmp_path: Path) -> None:
    with running_gateway(SimRunner(tmp_path / "ws" / "exchange.sqlite")) as gateway:
        workspace = make_workspace(
            tmp_path / "ws",
            exchange={"backend": "psrp", "psrp": controller_psrp(gateway)},
            clock="system",
        )
        workspace.env["STAGECTL_TEST_GATEWAY_PASSWORD"] = PASSWORD
        (workspace.repo.path / "desired" / "dns" / "contoso.com.yaml").unlink()  # no DNS time gate
        workspace.commit(message="Exchange only")
        with workspace.tenant() as tenant:
            tenant.add_recipient(ZOE, dir_synced=False)  # created in the cloud, not by directory sync
            tenant.remove_recipient(LIAM)  # directory sync has not made him yet
            tenant.add_recipient(VANESSA, licensed=False)
        workspace.run_pass()  # both batches planned: the endpoint is created
        with workspace.tenant() as tenant:
            tenant.fail_endpoint_check(NSPI)

        # Both batches asked to start: one read per kind, and both held by the preflight.
        workspace.commit(states("started", "started"), message="start both")
        seen = len(gateway.received)
        result = workspace.run_pass()
        calls = calls_since(gateway, seen)
        assert calls == Counter(
            {
                "Get-MigrationEndpoint": 1,
                "Get-MigrationBatch": 1,
                "Get-Recipient": 1,
                "Test-MigrationServerAvailability": 1,
            }
        ), calls
        tested = [c for c in gateway.received[seen:] if c.cmdlet == "Test-MigrationServerAvailability"]
        assert tested[0].parameters == {"Endpoint": "StagedEndpoint"}
        assert result.plan.actions == ()
        held = {b.object: b for b in result.plan.blocked if b.gate == "preflight"}
        assert set(held) == {f"batch/{PILOT}", f"batch/{WAVE}"}
        assert "Result Failed" in held[f"batch/{PILOT}"].reason
        assert "The RPC server is unavailable" in held[f"batch/{PILOT}"].reason
        assert f"{ZOE}: IsDirSynced false" in held[f"batch/{WAVE}"].reason
        assert f"{LIAM}: missing" in held[f"batch/{WAVE}"].reason
        status = workspace.status()
        wave = readiness(status, WAVE, "preflight")
        assert wave["verdict"] == "failed"
        assert check(wave, "mail user")["members"] == [f"{LIAM}: missing"]
        assert check(wave, "synced from on-premises")["members"] == [f"{ZOE}: IsDirSynced false"]
        endpoint = check(readiness(status, PILOT, "preflight"), "endpoint")
        assert endpoint["result"] == "fail" and "cli_NspiBind" in endpoint["detail"]
        assert check(readiness(status, PILOT, "preflight"), "licence")["result"] == "warn"
        shown = workspace.stagectl("status", "--config", str(workspace.config_path))
        assert shown.returncode == 0, shown.stderr
        assert "preflight Wave1: failed" in shown.stdout and f"{ZOE}: IsDirSynced false" in shown.stdout

        # The source answers again: the pilot starts (its unlicensed member a warning only); the wave waits.
        with workspace.tenant() as tenant:
            tenant.fail_endpoint_check(None)
        result = workspace.run_pass()
        assert [a.object for a in result.plan.actions] == [f"batch/{PILOT}"]
        assert {b.object for b in result.plan.blocked if b.gate == "preflight"} == {f"batch/{WAVE}"}
        licence = check(readiness(workspace.status(), PILOT, "preflight"), "licence")
        assert licence["result"] == "warn" and licence["members"] == [f"{VANESSA}: no licence"]

        # Directory sync catches up: the wave starts.
        with workspace.tenant() as tenant:
            tenant.add_recipient(ZOE)
            tenant.add_recipient(LIAM)
        result = workspace.run_pass()
        assert [a.object for a in result.plan.actions] == [f"batch/{WAVE}"]
        with workspace.tenant() as tenant:
            tenant.advance(timedelta(hours=1))

        # Both completed; Kenji's mail user was never converted (by hand, for the test): post-flight holds.
        workspace.commit(states("completed", "completed"), message="complete both")
        workspace.run_pass()  # Complete-MigrationBatch for both
        with workspace.tenant() as tenant:
            tenant.advance(timedelta(hours=1))
            tenant.add_recipient(KENJI, RecipientType.MAIL_USER)
        result = workspace.run_pass()
        assert [[b.object, b.gate] for b in result.plan.blocked] == [["migration", "post-flight"]]
        assert f"{KENJI}: still a MailUser" in result.plan.blocked[0].reason
        status = workspace.status()
        assert readiness(status, PILOT, "post-flight")["verdict"] == "passed"
        assert readiness(status, WAVE, "post-flight")["verdict"] == "failed"
        assert set(result.plan.memory.postflight) == {PILOT.lower()}

        # The next pass looks up the wave's members only: the pilot's verdict is remembered.
        seen = len(gateway.received)
        workspace.run_pass()
        looked_up = " ".join(
            str(c.parameters.get("Filter")) for c in gateway.received[seen:] if c.cmdlet == "Get-Recipient"
        ).lower()
        assert KENJI.lower() in looked_up, looked_up
        assert not any(m.lower() in looked_up for m in PILOT_MEMBERS), looked_up

        # Kenji's mailbox is there: the post-flight passes, and a steady pass looks nobody up.
        with workspace.tenant() as tenant:
            tenant.add_recipient(KENJI, RecipientType.USER_MAILBOX)
        result = workspace.run_pass()
        assert not [b for b in result.plan.blocked if b.gate == "post-flight"]
        assert set(result.plan.memory.postflight) == {PILOT.lower(), WAVE.lower()}
        seen = len(gateway.received)
        workspace.run_pass()
        steady = calls_since(gateway, seen)
        assert steady == Counter({"Get-MigrationEndpoint": 1, "Get-MigrationBatch": 1}), steady
