"""Drift end to end: a batch stopped by hand raises exactly one signed webhook alert, none again on the
next pass or after a restart, and one "cleared" on recovery — by hand under `warn`, by the controller
under `correct`."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.notify.webhooks import SIGNATURE_HEADER
from controller.sim.exchange.state import STOP_SECONDS
from tests.support.controller import (
    PILOT,
    Delivery,
    WebhookReceiver,
    Workspace,
    make_workspace,
    webhook_alerts,
)

SECRET = "hmac-test-secret-0123456789"
FLUSH = 60.0  # an upper bound for a stuck delivery, never an expectation about speed


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def settled(root: Path, receiver: WebhookReceiver, *, policy: str) -> Workspace:
    """The pilot created and started (syncing: the sim clock stands still), then baselined by a pass
    that found nothing to do."""
    workspace = make_workspace(root, pilot="started", exchange_drift=policy)
    workspace.write_config(alerts=webhook_alerts(workspace, receiver, secret=SECRET))
    first = workspace.run_pass()
    assert [o.action.cmdlet for o in first.report.outcomes if o.action.system == "exchange"] == [
        "New-MigrationEndpoint",
        "New-MigrationBatch",
    ]
    baseline = workspace.run_pass()
    assert baseline.report.outcomes == []
    assert workspace.exchange().batch_status(PILOT) == "Syncing"
    assert receiver.deliveries == []
    return workspace


def stop_by_hand(workspace: Workspace) -> None:
    stopped = workspace.stagectl("sim", "stop-batch", "--state", str(workspace.exo_path), PILOT)
    assert stopped.returncode == 0, stopped.stderr
    advanced = workspace.stagectl(
        "sim", "advance", "--state", str(workspace.exo_path), f"{int(STOP_SECONDS)}s"
    )
    assert advanced.returncode == 0, advanced.stderr
    assert workspace.exchange().batch_status(PILOT) == "Stopped"


def verified(delivery: Delivery) -> dict[str, object]:
    """The alert body, after checking its HMAC-SHA256 signature with the shared secret."""
    expected = hmac.new(SECRET.encode(), delivery.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(delivery.headers[SIGNATURE_HEADER], f"sha256={expected}")
    return delivery.json()


def test_a_batch_stopped_by_hand_under_warn_alerts_once_and_clears_once(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    workspace = settled(tmp_path / "ws", receiver, policy="warn")
    stop_by_hand(workspace)

    with workspace.reconciler() as reconciler:
        detected = reconciler.run_pass()
        assert reconciler.alerts.flush(FLUSH)
        assert len(receiver.deliveries) == 1
        again = reconciler.run_pass()  # the same drift on the next pass: no second alert
    assert len(receiver.deliveries) == 1

    alert = verified(receiver.deliveries[0])
    assert (alert["kind"], alert["object"]) == ("opened", f"batch/{PILOT}")
    assert alert["revision"] == workspace.repo.head()
    assert "stopped" in str(alert["description"])
    for result in (detected, again):
        assert result.report.outcomes == []  # warn holds the Start
        assert [d.object for d in result.plan.drift] == [f"batch/{PILOT}"]
        assert "reported only (policy warn)" in result.plan.drift[0].reason
    assert workspace.exchange().calls("Start-MigrationBatch") == 0
    drift = workspace.status()["drift"]
    assert [d["object"] for d in drift] == [f"batch/{PILOT}"]  # type: ignore[index, union-attr]

    # A restart (a new process on the same state directory) remembers the alert it sent.
    restarted = workspace.stagectl("run", "--config", str(workspace.config_path), "--once")
    assert restarted.returncode == 0, restarted.stderr
    assert f"drift batch/{PILOT}" in restarted.stdout
    assert len(receiver.deliveries) == 1
    assert workspace.exchange().calls("Start-MigrationBatch") == 0

    with workspace.tenant() as tenant:  # the administrator starts it again by hand
        tenant.call("Start-MigrationBatch", {"Identity": PILOT}, by_hand=True)
    recovered = workspace.run_pass()
    assert recovered.plan.drift == ()
    assert len(receiver.deliveries) == 2
    cleared = verified(receiver.deliveries[1])
    assert (cleared["kind"], cleared["object"]) == ("cleared", f"batch/{PILOT}")
    assert cleared["fingerprint"] == alert["fingerprint"]
    assert workspace.status()["drift"] == []

    workspace.run_pass()
    assert len(receiver.deliveries) == 2
    assert workspace.exchange().calls("Start-MigrationBatch") == 0


def test_a_batch_stopped_by_hand_under_correct_is_restarted_and_alerts_once_each_way(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    workspace = settled(tmp_path / "ws", receiver, policy="correct")
    stop_by_hand(workspace)

    with workspace.reconciler() as reconciler:
        corrected = reconciler.run_pass()
        assert reconciler.alerts.flush(FLUSH)
        assert len(receiver.deliveries) == 1
        after = reconciler.run_pass()

    assert [(o.action.cmdlet, o.ok) for o in corrected.report.outcomes] == [("Start-MigrationBatch", True)]
    assert corrected.plan.drift[0].reason.startswith("corrected")
    assert workspace.exchange().calls("Start-MigrationBatch") == 1
    assert after.report.outcomes == []
    assert after.plan.drift == ()
    opened, cleared = (verified(d) for d in receiver.deliveries)
    assert (opened["kind"], opened["object"]) == ("opened", f"batch/{PILOT}")
    assert (cleared["kind"], cleared["object"]) == ("cleared", f"batch/{PILOT}")
    assert cleared["fingerprint"] == opened["fingerprint"]
    starts = [r for r in workspace.audit_records() if r["action"].get("cmdlet") == "Start-MigrationBatch"]  # type: ignore[union-attr]
    assert [(r["revision"], r["result"]) for r in starts] == [(workspace.repo.head(), "ok")]

    restarted = workspace.run_pass()  # a new Reconciler on the same state directory
    assert restarted.report.outcomes == []
    assert len(receiver.deliveries) == 2
    assert workspace.exchange().calls("Start-MigrationBatch") == 1
    assert workspace.status()["drift"] == []
