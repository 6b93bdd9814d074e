"""The demo's services: the Exchange simulator behind `stagectl sim-gateway` over TLS, and DNS on BIND
when `named` is installed (else the DNS simulator); each stopped by the caller's ExitStack."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import yaml

from controller.sim import bind, pki
from controller.sim.exchange.store import SimStore

START = "2026-11-24T09:00:00Z"
GATEWAY_USER = "stagectl"


@dataclass(frozen=True, slots=True)
class Exchange:
    url: str
    port: int
    ca_bundle: Path
    sim_state: Path


@dataclass(frozen=True, slots=True)
class Dns:
    description: str
    config: dict[str, object]


def start_exchange(stack: contextlib.ExitStack, workspace: Path, *, example: Path) -> Exchange:
    sim_state = workspace / "exchange-online.sqlite"
    _stagectl("sim", "init", "--state", str(sim_state), "--mail-users-from", str(example), "--now", START)
    certificates = pki.make_pki(workspace / "pki", name="stagectl demo CA")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controller",
            "sim-gateway",
            "--state",
            str(sim_state),
            "--port",
            "0",
            "--tls",
            "--cert",
            str(certificates.cert),
            "--key",
            str(certificates.key),
            "--user",
            GATEWAY_USER,
            "--password-ref",
            "env:STAGECTL_GATEWAY_PASSWORD",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    stack.callback(_stop, process)
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url.startswith("https://"):
        raise RuntimeError(f"the simulator gateway did not start (it printed {url!r})")
    port = int(url.split(":")[2].split("/")[0])
    return Exchange(url=url, port=port, ca_bundle=certificates.ca, sim_state=sim_state)


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def start_dns(stack: contextlib.ExitStack, workspace: Path) -> Dns:
    try:
        bind.named_binary()
    except (FileNotFoundError, RuntimeError):
        return _simulated_dns(workspace)
    zone = stack.enter_context(bind.bind_zone())
    key = zone.key_file(workspace / "tsig.key")
    return Dns(
        description=f"BIND 9 on 127.0.0.1:{zone.primary.port}, updates signed with TSIG key {zone.key_name}",
        config={
            "backend": "rfc2136",
            "rfc2136": {"default": {"servers": [f"127.0.0.1:{zone.primary.port}"], "keyRef": f"file:{key}"}},
        },
    )


def _simulated_dns(workspace: Path) -> Dns:
    from controller.model.snapshot import RRset
    from controller.sim.dns import DnsSimBackend

    path = workspace / "dns.json"
    DnsSimBackend(path).seed_zone(
        bind.ZONE,
        [
            RRset(name="@", type="MX", ttl=3600, values=["10 mail.contoso.com."]),
            RRset(name="@", type="TXT", ttl=3600, values=["v=spf1 mx -all", "MS=ms12345678"]),
        ],
    )
    return Dns(
        description="the DNS simulator (BIND's named is not installed here)",
        config={"backend": "sim", "state": str(path)},
    )


def write_config(workspace: Path, *, repo: Path, exchange: Exchange, dns: Dns) -> Path:
    config = {
        "apiVersion": "stagectl/v1",
        "kind": "ControllerConfig",
        "source": {"repo": str(repo), "branch": "main"},
        "stateDir": str(workspace / "state"),
        "clock": "sim",
        "exchange": {
            "backend": "psrp",
            "state": str(exchange.sim_state),  # only for the simulated clock
            "psrp": {
                "host": "127.0.0.1",
                "port": exchange.port,
                "ssl": True,
                "caBundle": str(exchange.ca_bundle),
                "auth": "basic",
                "username": GATEWAY_USER,
                "passwordRef": "env:STAGECTL_GATEWAY_PASSWORD",
                "bootstrap": "none",
            },
        },
        "dns": dns.config,
    }
    path = workspace / "stagectl.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def advance(sim_state: Path, *, hours: int) -> None:
    with SimStore(sim_state).transaction() as simulator:
        simulator.advance(timedelta(hours=hours))


def _stagectl(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "controller", *args], check=True, stdout=subprocess.DEVNULL)
