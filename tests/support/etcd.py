"""A real 3-member etcd cluster on loopback for the high-availability tests (issue 17).

Every member is Debian's `etcd` (etcd-server 3.4) with its own data directory under `root`, a client URL
`https://127.0.0.1:<free port>` that demands a client certificate signed by a throwaway CA, and a peer URL
`http://127.0.0.1:<free port>` (peers speak plain HTTP on loopback). Nothing uses 2379/2380, so a system
etcd that Debian's package may have started does not matter. Logs stay in `root` (`m0.log`, ...) so a
failing test can show them. On exit every member is SIGKILLed and waited for, whatever the test did.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
from cryptography.x509.oid import ExtendedKeyUsageOID
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import Etcd3Exception

from controller.runtime.config import EtcdConfig
from controller.sim import pki as certificates

START_DEADLINE = 20.0  # seconds; a fresh cluster elects a leader in ~1-2 s, this only bounds a broken start
HEALTHY_DEADLINE = 15.0
CLIENT_TIMEOUT = 2.0
CLUSTER_TOKEN = "stagectl-test-cluster"
PROBE_KEY = "/stagectl-test/probe"


def etcd_binary() -> str:
    found = shutil.which("etcd")
    if found is None:
        raise RuntimeError("etcd is not installed: run `make etcd` (as root) or apt-get install etcd-server")
    return found


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback TCP ports free at the time of asking: each socket is bound to port 0 and
    kept open until all are chosen (so no two are the same), then closed."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(tcp)
            tcp.bind(("127.0.0.1", 0))
        return [int(tcp.getsockname()[1]) for tcp in sockets]
    finally:
        for tcp in sockets:
            tcp.close()


@dataclass(frozen=True, slots=True)
class EtcdPki:
    ca: Path  # the CA certificate (PEM): the servers' trusted CA and the clients' CA bundle
    server_cert: Path
    server_key: Path
    client_cert: Path  # CN "stagectl", clientAuth
    client_key: Path


def make_etcd_pki(directory: Path) -> EtcdPki:
    """A self-signed CA, a 127.0.0.1/localhost server certificate and a client certificate it signed.

    The server certificate carries clientAuth as well as serverAuth: etcd 3.4's JSON gateway dials the
    member's own gRPC port with the server certificate as its client certificate, and with
    --client-cert-auth that certificate must be valid for client authentication too."""
    authority = certificates.Authority("stagectl etcd test CA")
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    server_cert, server_key = authority.issue("localhost", both, certificates.LOOPBACK, key_usage=True)
    client_cert, client_key = authority.issue("stagectl", [ExtendedKeyUsageOID.CLIENT_AUTH], key_usage=True)
    directory.mkdir(parents=True, exist_ok=True)
    return EtcdPki(
        ca=certificates.write_cert(directory / "ca.pem", authority.cert),
        server_cert=certificates.write_cert(directory / "server.pem", server_cert),
        server_key=certificates.write_key(directory / "server.key", server_key),
        client_cert=certificates.write_cert(directory / "client.pem", client_cert),
        client_key=certificates.write_key(directory / "client.key", client_key),
    )


@dataclass
class EtcdMember:
    """One member: its name, ports, data directory, log file and (while it runs) its process."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_file: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@dataclass
class EtcdCluster:
    """A running cluster: `endpoints` are the members' https client URLs in member order."""

    root: Path
    pki: EtcdPki
    members: list[EtcdMember] = field(default_factory=list)
    client_cert_auth: bool = True  # the members demand a client certificate

    @property
    def endpoints(self) -> list[str]:
        return [member.client_url for member in self.members]

    @property
    def ca(self) -> Path:
        return self.pki.ca

    @property
    def client_cert(self) -> Path:
        return self.pki.client_cert

    @property
    def client_key(self) -> Path:
        return self.pki.client_key

    def client(
        self, i: int | None = None, *, timeout: float = CLIENT_TIMEOUT, with_cert: bool = True
    ) -> Etcd3Client:
        """An etcd3gw client to member `i` (member 0 if None), verifying the CA and presenting the client
        certificate (`with_cert=False`: none, which the members refuse).

        The client gets its own requests session with `trust_env = False`: requests lets REQUESTS_CA_BUNDLE
        or CURL_CA_BUNDLE from the environment replace a session's `verify`, so etcd3gw's `ca_cert` alone is
        silently ignored wherever those are set (and a proxy from the environment would catch loopback)."""
        member = self.members[0 if i is None else i]
        session = requests.Session()
        session.trust_env = False
        session.verify = str(self.pki.ca)
        if with_cert:
            session.cert = (str(self.pki.client_cert), str(self.pki.client_key))
        return Etcd3Client(
            host="127.0.0.1",
            port=member.client_port,
            protocol="https",
            timeout=timeout,
            api_path="/v3/",
            session=session,
        )

    def alive(self, i: int) -> bool:
        """Whether member i's process exists (a paused member is alive)."""
        process = self.members[i].process
        return process is not None and process.poll() is None

    def kill(self, i: int) -> None:
        """SIGKILL member i and wait for it."""
        self._signal_and_wait(i, signal.SIGKILL)

    def stop(self, i: int) -> None:
        """SIGTERM member i and wait for it (SIGKILL if it has not gone in 10 s)."""
        self._signal_and_wait(i, signal.SIGTERM)

    def pause(self, i: int) -> None:
        self._signal(i, signal.SIGSTOP)

    def resume(self, i: int) -> None:
        self._signal(i, signal.SIGCONT)

    def start(self, i: int) -> None:
        """Start member i again on its data directory (`--initial-cluster-state existing`) and wait until
        it answers (etcd serves clients only once it is part of a quorum again)."""
        if self.alive(i):
            raise RuntimeError(f"etcd member {self.members[i].name} is already running")
        self._launch(i, state="existing")
        self._wait_answers(i, time.monotonic() + START_DEADLINE)

    def wait_healthy(self, timeout: float = HEALTHY_DEADLINE) -> None:
        """Until a put of a probe key through some live member succeeds (the cluster has a quorum)."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(len(self.members)):
                if not self.alive(i):
                    continue
                try:
                    self.client(i, timeout=1.0).put(PROBE_KEY, str(time.time()))
                    return
                except Etcd3Exception:
                    pass
            if time.monotonic() >= deadline:
                raise RuntimeError(f"the etcd cluster took no write within {timeout} s\n{self.logs()}")
            time.sleep(0.1)

    def logs(self, tail: int = 3000) -> str:
        """The tail of each member's log, for failure messages."""
        return "\n".join(
            f"--- {member.name} ({member.log_file}) ---\n{member.log()[-tail:]}" for member in self.members
        )

    def kill_all(self) -> None:
        for i in range(len(self.members)):
            self.kill(i)

    def _signal(self, i: int, signum: signal.Signals) -> None:
        process = self.members[i].process
        if process is None or process.poll() is not None:
            raise RuntimeError(f"etcd member {self.members[i].name} is not running")
        os.kill(process.pid, signum)

    def _signal_and_wait(self, i: int, signum: signal.Signals) -> None:
        member = self.members[i]
        if member.process is None:
            return
        process, member.process = member.process, None
        if process.poll() is None:
            os.kill(process.pid, signum)
            if signum != signal.SIGKILL:
                os.kill(process.pid, signal.SIGCONT)  # a paused member cannot act on SIGTERM
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def _initial_cluster(self) -> str:
        return ",".join(f"{member.name}={member.peer_url}" for member in self.members)

    def _launch(self, i: int, *, state: str) -> None:
        member = self.members[i]
        command = [
            etcd_binary(),
            "--name", member.name,
            "--data-dir", str(member.data_dir),
            "--listen-client-urls", member.client_url,
            "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", self._initial_cluster(),
            "--initial-cluster-state", state,
            "--initial-cluster-token", CLUSTER_TOKEN,
            "--heartbeat-interval", "100",
            "--election-timeout", "1000",
            "--cert-file", str(self.pki.server_cert),
            "--key-file", str(self.pki.server_key),
            # A trusted CA alone makes etcd ask for a client certificate: both or neither.
            *(["--trusted-ca-file", str(self.pki.ca), "--client-cert-auth"] if self.client_cert_auth else []),
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip
        # etcd reads its configuration from ETCD_* variables too: none may set what the flags leave unset.
        env = {key: value for key, value in os.environ.items() if not key.startswith("ETCD")}
        with member.log_file.open("ab") as log:
            log.write(f"=== {' '.join(command)}\n".encode())
            log.flush()
            member.process = subprocess.Popen(
                command,
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _wait_answers(self, i: int, deadline: float) -> None:
        """Until member i answers a status request over TLS with the client certificate."""
        member = self.members[i]
        while True:
            if member.process is None or member.process.poll() is not None:
                raise RuntimeError(f"etcd member {member.name} exited at start\n{self.logs()}")
            try:
                self.client(i, timeout=1.0).status()
                return
            except Etcd3Exception:
                pass
            if time.monotonic() >= deadline:
                raise RuntimeError(f"etcd member {member.name} did not answer in time\n{self.logs()}")
            time.sleep(0.05)


@contextmanager
def etcd_cluster(root: Path, members: int = 3, *, client_cert_auth: bool = True) -> Iterator[EtcdCluster]:
    """Start `members` etcd members under `root` and wait until all answer and a put succeeds (20 s at
    most; the error carries each member's log tail). On exit every member is SIGKILLed and waited for.
    `client_cert_auth=False`: TLS without client certificates (etcd's users and passwords instead: etcd
    3.4's JSON gateway refuses requests that carry both)."""
    etcd_binary()  # a clear error before anything is created
    root.mkdir(parents=True, exist_ok=True)
    cluster = EtcdCluster(root=root, pki=make_etcd_pki(root / "pki"), client_cert_auth=client_cert_auth)
    ports = free_ports(2 * members)
    for i in range(members):
        cluster.members.append(
            EtcdMember(
                name=f"m{i}",
                client_port=ports[2 * i],
                peer_port=ports[2 * i + 1],
                data_dir=root / f"m{i}.etcd",
                log_file=root / f"m{i}.log",
            )
        )
    with ExitStack() as stack:
        stack.callback(cluster.kill_all)
        for i in range(members):
            cluster._launch(i, state="new")
        deadline = time.monotonic() + START_DEADLINE
        for i in range(members):
            cluster._wait_answers(i, deadline)
        cluster.wait_healthy(timeout=max(deadline - time.monotonic(), 0.5))
        yield cluster


def etcd_section(cluster: EtcdCluster, **extra: object) -> dict[str, object]:
    """The configuration's `coordination.etcd` for this cluster (mutual TLS), as YAML data; `extra` adds keys
    such as `timeout`."""
    return {
        "endpoints": cluster.endpoints,
        "caBundle": str(cluster.ca),
        "certificatePem": str(cluster.client_cert),
        "certificateKeyPem": str(cluster.client_key),
        **extra,
    }


def etcd_config(cluster: EtcdCluster, endpoints: list[str] | None = None) -> EtcdConfig:
    """The same settings as `etcd_section`, as the model the product reads (`endpoints` to name others)."""
    return EtcdConfig(
        endpoints=endpoints or cluster.endpoints,
        ca_bundle=str(cluster.ca),
        certificate_pem=str(cluster.client_cert),
        certificate_key_pem=str(cluster.client_key),
    )


def until(what: str, check: Callable[[], object], timeout: float = 15.0) -> float:
    """Call `check()` until it returns something true; the seconds it took (AssertionError past `timeout`)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")
