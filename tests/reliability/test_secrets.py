"""No secret ever leaks: a whole migration over real PSRP and real BIND, with a recognisable value in every
secret, and then every place a secret could end up is searched for each of them (issue 14, item 6)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from controller.model.actions import ExchangeAction
from controller.notify.webhooks import SIGNATURE_HEADER
from controller.runtime.store import DATABASE_FILE
from controller.sim.bind import KEY_NAME, BindZone, bind_zone, free_port
from controller.sim.exchange.state import STOP_SECONDS
from controller.sim.exchange.store import SimRunner
from controller.sim.gateway.server import PsrpGateway
from controller.web import app as web_app
from tests.support.controller import (
    CREDENTIALS_ENV,
    PILOT,
    WEBHOOK_URL_ENV,
    CliResult,
    WebhookReceiver,
    Workspace,
    desired_files,
    make_workspace,
    webhook_alerts,
)
from tests.support.gateway import USER, controller_psrp
from tests.support.pushes import github, post

with warnings.catch_warnings():  # Starlette's TestClient asks for httpx2; httpx is what is installed
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

BOUND = 120.0  # an upper bound for a stuck process or delivery, never an expectation about speed
GATEWAY_PASSWORD_ENV = "STAGECTL_TEST_GATEWAY_PASSWORD"
TSIG_ENV = "STAGECTL_TEST_TSIG_KEY"
PUSH_SECRET_ENV = "STAGECTL_TEST_PUSH_SECRET"


@dataclass(frozen=True)
class Secrets:
    """One recognisable value per secret: a find can only be a leak."""

    onprem_password: str = field(default_factory=lambda: f"S3cr3t-onprem-{secrets.token_hex(8)}")
    gateway_password: str = field(default_factory=lambda: f"S3cr3t-gateway-{secrets.token_hex(8)}")
    alert_url_token: str = field(default_factory=lambda: f"S3cr3t-alerturl-{secrets.token_hex(8)}")
    alert_hmac: str = field(default_factory=lambda: f"S3cr3t-alerthmac-{secrets.token_hex(8)}")
    push_secret: str = field(default_factory=lambda: f"S3cr3t-push-{secrets.token_hex(8)}")
    wrong_password: str = field(default_factory=lambda: f"S3cr3t-wrong-{secrets.token_hex(8)}")

    @property
    def onprem_credentials(self) -> str:
        return f"CONTOSO\\migadmin:{self.onprem_password}"

    def needles(self, tsig_secret: str) -> dict[str, bytes]:
        """What must appear nowhere, by name: each value, the TSIG key (base64 and raw) and the Basic
        authorization each credential would make, which belongs on the wire only."""
        return {
            "on-premises password": self.onprem_password.encode(),
            "on-premises Basic": base64.b64encode(self.onprem_credentials.encode()),
            "gateway password": self.gateway_password.encode(),
            "gateway Basic": base64.b64encode(f"{USER}:{self.gateway_password}".encode()),
            "TSIG secret": tsig_secret.encode(),
            "TSIG secret (raw)": base64.b64decode(tsig_secret),
            "alert URL token": self.alert_url_token.encode(),
            "alert HMAC secret": self.alert_hmac.encode(),
            "push webhook secret": self.push_secret.encode(),
            "refused gateway password": self.wrong_password.encode(),
        }


@dataclass
class Evidence:
    """Everything the controller wrote or said, by where it came from."""

    places: dict[str, bytes] = field(default_factory=dict)

    def add(self, where: str, content: bytes | str) -> None:
        name, repeat = where, 1
        while name in self.places:  # the same command run again keeps both outputs
            repeat += 1
            name = f"{where} #{repeat}"
        self.places[name] = content.encode() if isinstance(content, str) else content

    def command(self, where: str, result: CliResult) -> CliResult:
        self.add(f"{where} stdout", result.stdout)
        self.add(f"{where} stderr", result.stderr)
        return result

    def leaks(self, needles: dict[str, bytes]) -> list[str]:
        return [
            f"{name} in {where}"
            for name, needle in needles.items()
            for where, content in self.places.items()
            if needle in content
        ]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def configure(
    workspace: Workspace,
    gateway: PsrpGateway,
    bind: BindZone,
    receiver: WebhookReceiver,
    values: Secrets,
    *,
    metrics_port: int,
    push_port: int,
) -> None:
    """PSRP to the gateway (the simulator's clock), RFC 2136 to BIND with a TSIG key, a signed alert
    webhook whose URL carries a token, the push webhook and a metrics page."""
    alerts = webhook_alerts(workspace, receiver, secret=values.alert_hmac)
    workspace.env[WEBHOOK_URL_ENV] = f"{receiver.url}?token={values.alert_url_token}"
    workspace.env[CREDENTIALS_ENV] = values.onprem_credentials
    workspace.env[GATEWAY_PASSWORD_ENV] = values.gateway_password
    workspace.env[TSIG_ENV] = f"{KEY_NAME}:hmac-sha256:{bind.secret}"
    workspace.env[PUSH_SECRET_ENV] = values.push_secret
    primary = bind.primary.address
    workspace.write_config(
        source={
            "repo": str(workspace.repo.path),
            "branch": "main",
            "desiredDir": "desired",
            "webhook": {"listen": f"127.0.0.1:{push_port}", "secretRef": f"env:{PUSH_SECRET_ENV}"},
        },
        exchange={
            "backend": "psrp",
            "psrp": controller_psrp(gateway, password_env=GATEWAY_PASSWORD_ENV),
            "state": str(workspace.exo_path),  # for `clock: sim` only: every cmdlet goes over PSRP
        },
        dns={
            "backend": "rfc2136",
            "rfc2136": {"default": {"servers": [primary], "primary": primary, "keyRef": f"env:{TSIG_ENV}"}},
        },
        alerts=alerts,
        metricsPort=metrics_port,
    )


def sim(workspace: Workspace, evidence: Evidence, *args: str) -> CliResult:
    result = evidence.command(
        f"stagectl sim {args[0]}", workspace.stagectl("sim", *args, "--state", str(workspace.exo_path))
    )
    assert result.returncode == 0, result.stderr
    return result


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {BOUND}s"
        time.sleep(0.05)


def drive(workspace: Workspace, receiver: WebhookReceiver, evidence: Evidence, values: Secrets) -> None:
    """Endpoint and batch created, a batch stopped by hand (an alert opens and clears), the batch
    completed, and the failing command with --debug."""
    config = ("--config", str(workspace.config_path))
    desired = ("--repo", str(workspace.repo.path), *config)
    first = workspace.run_pass()
    assert {o.action.cmdlet for o in first.report.outcomes if isinstance(o.action, ExchangeAction)} == {
        "New-MigrationEndpoint",
        "New-MigrationBatch",
    }
    assert any(o.action.system == "dns" for o in first.report.outcomes)  # a TSIG-signed update
    workspace.run_pass()

    # Drift: the pilot stopped by hand; under warn an alert opens, and clears when it is started again.
    sim(workspace, evidence, "stop-batch", PILOT)
    sim(workspace, evidence, "advance", f"{int(STOP_SECONDS)}s")
    once = workspace.stagectl("--debug", "run", "--once", *config)
    assert once.returncode == 0, once.stderr
    evidence.command("stagectl run --once (drift)", once)
    wait_for(lambda: len(receiver.deliveries) >= 1, "drift alert")
    with workspace.tenant() as tenant:
        tenant.call("Start-MigrationBatch", {"Identity": PILOT}, by_hand=True)
    workspace.run_pass()
    wait_for(lambda: len(receiver.deliveries) >= 2, "cleared alert")

    # The pilot synced and completed.
    workspace.commit(desired_files(pilot="completed"), message="Complete the pilot")
    for _ in range(20):
        if workspace.exchange().batch_status(PILOT) == "Completed":
            break
        sim(workspace, evidence, "advance", "6h")
        workspace.run_pass()
    assert workspace.exchange().batch_status(PILOT) == "Completed"

    # A cmdlet error under --debug: the wave's New-MigrationBatch is throttled for good.
    workspace.commit(desired_files(pilot="completed", wave="started"), message="Start the wave")
    with workspace.tenant() as tenant:
        tenant.throttle("New-MigrationBatch", 1000)
    failed = evidence.command(
        "stagectl apply --debug", workspace.stagectl("--debug", "apply", "--yes", *desired)
    )
    assert "New-MigrationBatch" in failed.stdout + failed.stderr, failed

    for fmt in ("text", "json", "markdown"):
        evidence.command(
            f"stagectl plan --format {fmt}", workspace.stagectl("plan", "--format", fmt, *desired)
        )
    evidence.command("stagectl observe", workspace.stagectl("observe", *desired))
    for fmt in ("text", "json"):
        evidence.command(
            f"stagectl status --format {fmt}", workspace.stagectl("status", "--format", fmt, *config)
        )
    state = ("--state", str(workspace.state_dir))
    for fmt in ("text", "json"):
        evidence.command(
            f"stagectl audit show {fmt}", workspace.stagectl("audit", "show", "--format", fmt, *state)
        )
    evidence.command("stagectl audit verify", workspace.stagectl("audit", "verify", *state))

    # The gateway refuses a wrong password: the failure, with --debug, must not show the one tried.
    workspace.env[GATEWAY_PASSWORD_ENV] = values.wrong_password
    refused = evidence.command(
        "stagectl plan --debug (wrong password)", workspace.stagectl("--debug", "plan", *desired)
    )
    workspace.env[GATEWAY_PASSWORD_ENV] = values.gateway_password
    assert refused.returncode != 0 or "could not be read" in refused.stdout + refused.stderr, refused

    # A traceback, with --debug: the state database locked by another process ends `apply` in the CLI.
    holder = sqlite3.connect(workspace.state_dir / DATABASE_FILE, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        traced = evidence.command(
            "stagectl apply --debug (state locked)", workspace.stagectl("--debug", "apply", "--yes", *desired)
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "Traceback (most recent call last)" in traced.stderr, traced


def scrape(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=BOUND) as answer:
        body: bytes = answer.read()
    return body


def passes_counted(port: int) -> float:
    try:
        body = scrape(port)
    except OSError:  # not listening yet
        return 0.0
    for line in body.decode().splitlines():
        if line.startswith("stagectl_pass_duration_seconds_count"):
            return float(line.split()[-1])
    return 0.0


def follow(
    workspace: Workspace, evidence: Evidence, values: Secrets, *, metrics_port: int, push_port: int
) -> None:
    """`stagectl run --debug`: a pass, a forged and a signed push (a second pass), the metrics page."""
    process = workspace.start("--debug", "run", "--config", str(workspace.config_path))
    try:
        wait_for(lambda: process.poll() is not None or passes_counted(metrics_port) >= 1, "first pass")
        assert process.poll() is None, process.communicate()
        body = json.dumps({"ref": "refs/heads/main", "after": workspace.repo.head()}).encode()
        assert post(push_port, body, github(body, "forged")) == 401
        assert post(push_port, body, github(body, values.push_secret)) == 202
        wait_for(lambda: process.poll() is not None or passes_counted(metrics_port) >= 2, "pushed pass")
        evidence.add("metrics page", scrape(metrics_port))
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=BOUND)
    evidence.add("stagectl run stdout", out)
    evidence.add("stagectl run stderr", err)
    assert process.returncode == 0, err


def collect_state(state_dir: Path, evidence: Evidence) -> None:
    """Every file under the state directory as its bytes, and every SQLite database as a dump."""
    files = sorted(path for path in state_dir.rglob("*") if path.is_file())
    assert any(path.name == "audit.jsonl" for path in files) and any(
        path.name == "status.json" for path in files
    )
    for path in files:
        content = path.read_bytes()
        evidence.add(str(path.relative_to(state_dir)), content)
        if content.startswith(b"SQLite format 3\x00"):
            connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                evidence.add(f"{path.relative_to(state_dir)} (dump)", "\n".join(connection.iterdump()))
            finally:
                connection.close()


def test_no_secret_appears_anywhere_the_controller_writes_or_speaks(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    values = Secrets()
    evidence = Evidence()
    workspace = make_workspace(tmp_path / "ws", pilot="started")
    metrics_port, push_port = free_port(), free_port()
    gateway = PsrpGateway(SimRunner(workspace.exo_path), username=USER, password=values.gateway_password)
    with bind_zone() as bind, gateway:
        configure(workspace, gateway, bind, receiver, values, metrics_port=metrics_port, push_port=push_port)
        drive(workspace, receiver, evidence, values)
        follow(workspace, evidence, values, metrics_port=metrics_port, push_port=push_port)
        # The on-premises credentials crossed the gateway (redacted in what it recorded).
        assert any(
            "Credentials" in call.parameters
            for call in gateway.received
            if call.cmdlet == "New-MigrationEndpoint"
        )
        evidence.add("gateway received", repr(gateway.received))
        tsig_secret = bind.secret
    # The gateway gone: the failure to reach it, with a traceback.
    unreachable = workspace.stagectl(
        "--debug",
        "plan",
        "--detailed-exitcode",
        "--repo",
        str(workspace.repo.path),
        "--config",
        str(workspace.config_path),
    )
    assert unreachable.returncode == 3, unreachable  # part of the state could not be read
    evidence.command("stagectl plan --debug (unreachable gateway)", unreachable)

    export = sim(workspace, evidence, "export")
    assert export.stdout
    for number, delivery in enumerate(receiver.deliveries):
        evidence.add(f"alert {number} body", delivery.body)
        evidence.add(f"alert {number} headers", json.dumps(delivery.headers))
    assert len(receiver.deliveries) >= 2
    for delivery in receiver.deliveries:  # signed with the secret searched for below
        expected = hmac.new(values.alert_hmac.encode(), delivery.body, hashlib.sha256).hexdigest()
        assert delivery.headers[SIGNATURE_HEADER] == f"sha256={expected}"
    collect_state(workspace.state_dir, evidence)
    # What leaves the state directory for people and CI: the git notes on the commits, the migration page
    # and its JSON (the published snapshot is in the state directory, collected above).
    notes = subprocess.run(
        ["git", "-C", str(workspace.repo.path), "log", "--notes=stagectl", "--format=%H %s%n%N"],
        capture_output=True,
        check=True,
    )
    assert b"-> ok [audit " in notes.stdout  # the notes were written: the search below has something to see
    evidence.add("git log --notes=stagectl", notes.stdout)
    page = TestClient(web_app.create(workspace.state_dir))
    for path in ("/", "/api/status.json"):
        answer = page.get(path)
        assert answer.status_code == 200
        evidence.add(f"migration page {path}", answer.content)

    # The search does see what is not secret: the endpoint's user name, in the export and the gateway.
    assert {"user name in gateway received", "user name in stagectl sim export stdout"} <= set(
        evidence.leaks({"user name": b"migadmin"})
    )
    assert evidence.leaks(values.needles(tsig_secret)) == []
