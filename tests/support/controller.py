"""A controller workspace for end-to-end tests: a real git repository with a small desired state, the
Exchange and DNS simulators seeded, a configuration file, and ways to run passes in-process or as
`stagectl` subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from controller.model.snapshot import RRset
from controller.runtime import audit, status, wiring
from controller.runtime.config import ControllerConfig, load_config
from controller.runtime.reconciler import PassResult, Reconciler
from controller.sim.backends import REHEARSAL
from controller.sim.dns import DnsSimBackend
from controller.sim.exchange.simulator import ExchangeSimulator
from controller.sim.exchange.store import SimStore
from tests.support.gitrepo import GitRepo

START = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
CREDENTIALS_ENV = "ONPREM_MIGRATION_CREDENTIALS"
CREDENTIALS = "CONTOSO\\migadmin:Secret123!"
WEBHOOK_URL_ENV = "STAGECTL_TEST_WEBHOOK_URL"
WEBHOOK_SECRET_ENV = "STAGECTL_TEST_WEBHOOK_SECRET"

PILOT = "Pilot"
PILOT_MEMBERS = ("Emily.Scott@contoso.com", "Vanessa.Khan@contoso.com")
WAVE = "Wave1"
WAVE_MEMBERS = ("Kenji.Green@contoso.com", "Zoe.Allen@contoso.com", "Liam.Suzuki@contoso.com")

# The zone as the on-premises world left it: mail to the Exchange 2007 server, SPF without EXO.
ONPREM_ZONE = (
    RRset(name="@", type="MX", ttl=3600, values=["10 mail.contoso.com."]),
    RRset(name="@", type="TXT", ttl=3600, values=['"v=spf1 mx -all"', '"MS=ms12345678"']),
)


def migration_yaml(*, exchange_drift: str = "warn", dns_drift: str = "correct") -> str:
    return f"""\
apiVersion: stagectl/v1
kind: Migration
metadata:
  name: contoso
spec:
  endpoint:
    name: StagedEndpoint
    autodiscover: false
    exchangeServer: mail.contoso.com
    rpcProxyServer: mail.contoso.com
    emailAddress: migration.admin@contoso.com
    authentication: Basic
    maxConcurrentMigrations: 20
    credentialsRef: env:{CREDENTIALS_ENV}
  notificationEmails:
    - migration-team@contoso.com
  policy:
    lowTtl: 300
    ttlLeadTime: 48h
    removeAfterCutover: 72h
    drift:
      exchange: {exchange_drift}
      dns: {dns_drift}
"""


def batch_yaml(name: str, members: tuple[str, ...], *, state: str = "planned") -> str:
    lines = "".join(f"    - {member}\n" for member in members)
    return f"""\
apiVersion: stagectl/v1
kind: Batch
metadata:
  name: {name}
spec:
  state: {state}
  members:
{lines}"""


ZONE_YAML = """\
apiVersion: stagectl/v1
kind: DnsZone
metadata:
  name: contoso.com
spec:
  records:
    - name: "@"
      type: MX
      ttl: 3600
      values: ["0 contoso-com.mail.protection.outlook.com."]
      cutover: true
    - name: "@"
      type: TXT
      ttl: 3600
      spf: "v=spf1 include:spf.protection.outlook.com -all"
"""


def desired_files(
    *, pilot: str = "planned", wave: str = "planned", exchange_drift: str = "warn"
) -> dict[str, str]:
    """The whole desired tree: a Migration, two small batches and the contoso.com zone."""
    return {
        "desired/migration.yaml": migration_yaml(exchange_drift=exchange_drift),
        "desired/batches/pilot.yaml": batch_yaml(PILOT, PILOT_MEMBERS, state=pilot),
        "desired/batches/wave1.yaml": batch_yaml(WAVE, WAVE_MEMBERS, state=wave),
        "desired/dns/contoso.com.yaml": ZONE_YAML,
    }


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Workspace:
    """Handles on one controller's world. Everything lives under `root`."""

    root: Path
    repo: GitRepo
    config_path: Path
    state_dir: Path
    exo_path: Path
    dns_path: Path
    env: dict[str, str] = field(default_factory=dict)

    # --- the repository ---------------------------------------------------------------------------

    def commit(
        self, files: Mapping[str, str] | None = None, *, message: str = "change", sign: bool = False
    ) -> str:
        return self.repo.commit(files, message=message, sign=sign)

    def commit_desired(self, *, message: str = "change", sign: bool = False, **states: str) -> str:
        return self.repo.commit(desired_files(**states), message=message, sign=sign)

    # --- the configuration ------------------------------------------------------------------------

    def write_config(self, **extra: object) -> None:
        """(Re)write the configuration; `extra` adds top-level keys (alerts, metricsPort, verify)."""
        import yaml

        data: dict[str, object] = {
            "apiVersion": "stagectl/v1",
            "kind": "ControllerConfig",
            "source": {"repo": str(self.repo.path), "branch": "main", "desiredDir": "desired"},
            "stateDir": str(self.state_dir),
            "exchange": {"backend": "sim", "state": str(self.exo_path)},
            "dns": {"backend": "sim", "state": str(self.dns_path)},
            "clock": "sim",
            "interval": "1h",
        }
        verify = extra.pop("verify", None)
        if verify is not None:
            data["source"]["verify"] = verify  # type: ignore[index]
        data.update(extra)
        self.config_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    def config(self) -> ControllerConfig:
        return load_config(self.config_path)

    # --- in-process passes ------------------------------------------------------------------------

    @contextmanager
    def reconciler(self) -> Iterator[Reconciler]:
        """A Reconciler on the state directory, closed afterwards (alerts flushed)."""
        with _environment(self.env):
            built = wiring.build(self.config(), rehearsal=REHEARSAL)
            try:
                yield built
            finally:
                wiring.close(built)

    def run_pass(self) -> PassResult:
        with self.reconciler() as reconciler:
            return reconciler.run_pass()

    # --- subprocesses -----------------------------------------------------------------------------

    def process_env(self) -> dict[str, str]:
        return {**self.repo.env, **self.env, "PYTHONUNBUFFERED": "1"}

    def stagectl(self, *args: str, timeout: float = 120) -> CliResult:
        result = subprocess.run(
            [sys.executable, "-m", "controller", *args],
            cwd=self.root,
            env=self.process_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return CliResult(result.returncode, result.stdout, result.stderr)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """`stagectl ARGS` in the background; the caller waits for or ends it."""
        return subprocess.Popen(
            [sys.executable, "-m", "controller", *args],
            cwd=self.root,
            env=self.process_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # --- what the world looks like ----------------------------------------------------------------

    def exchange(self) -> ExchangeSimulator:
        return SimStore(self.exo_path).load()

    @contextmanager
    def tenant(self) -> Iterator[ExchangeSimulator]:
        """Change the simulated tenant (a person's hand, faults, the clock)."""
        with SimStore(self.exo_path).transaction() as simulator:
            yield simulator

    def writes(self) -> Counter[str]:
        """Calls per cmdlet that change the tenant (every cmdlet but the reads: Get-*, and Test-* such as
        Test-MigrationServerAvailability, which only checks the endpoint)."""
        calls = self.exchange().state.calls
        return Counter({name: n for name, n in calls.items() if not name.startswith(("Get-", "Test-"))})

    def dns(self) -> DnsSimBackend:
        return DnsSimBackend(self.dns_path)

    def audit_records(
        self, revision: str | None = None, *, phase: str | None = "result"
    ) -> list[dict[str, object]]:
        """The audit records of one phase (every action's `result`, by default; None: all of them)."""
        records = audit.show(audit.path_in(self.state_dir), revision)
        return [r for r in records if phase is None or r.get("phase") == phase]

    def status(self) -> dict[str, object]:
        data = status.read(self.state_dir)
        assert data is not None, "no status.json yet"
        return data


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def make_workspace(
    root: Path,
    *,
    pilot: str = "planned",
    wave: str = "planned",
    exchange_drift: str = "warn",
    signing_key: Path | None = None,
    **config: object,
) -> Workspace:
    """A repository with one commit of the desired state (SSH-signed with `signing_key`), a tenant with
    every member as a mail user (the clock at START), the on-premises contoso.com zone, and the
    configuration file; `config` adds top-level configuration keys."""
    root.mkdir(parents=True, exist_ok=True)
    workspace = Workspace(
        root=root,
        repo=GitRepo(root / "repo"),
        config_path=root / "stagectl.yaml",
        state_dir=root / "state",
        exo_path=root / "exchange.sqlite",
        dns_path=root / "dns.json",
        env={CREDENTIALS_ENV: CREDENTIALS},
    )
    if signing_key is not None:
        workspace.repo.use_ssh_signing(signing_key)
    workspace.commit_desired(
        pilot=pilot,
        wave=wave,
        exchange_drift=exchange_drift,
        message="Desired state for contoso.com",
        sign=signing_key is not None,
    )
    simulator = ExchangeSimulator(now=START)
    for address in (*PILOT_MEMBERS, *WAVE_MEMBERS):
        simulator.add_recipient(address)
    SimStore(workspace.exo_path).create(simulator)
    workspace.dns().seed_zone("contoso.com", ONPREM_ZONE)
    workspace.write_config(**config)
    return workspace


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        return json.loads(self.body)


class WebhookReceiver:
    """A real HTTP server on loopback that records every POST and answers 200."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        deliveries = self.deliveries

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                deliveries.append(Delivery(dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/stagectl"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def webhook_alerts(workspace: Workspace, receiver: WebhookReceiver, *, secret: str) -> list[dict[str, str]]:
    """Point the workspace's webhook at `receiver`, signed with `secret`; returns the `alerts` setting."""
    workspace.env[WEBHOOK_URL_ENV] = receiver.url
    workspace.env[WEBHOOK_SECRET_ENV] = secret
    return [{"type": "webhook", "urlRef": f"env:{WEBHOOK_URL_ENV}", "secretRef": f"env:{WEBHOOK_SECRET_ENV}"}]
