"""A small DNS proxy on loopback (UDP and TCP, threads) in front of a real BIND, to inject transport faults,
and a second BIND that disagrees with the primary.

The proxy forwards each message to its upstream and the answer back, unless a switch says otherwise:
`down` (nothing is answered: the primary is down, every question times out), `delay` (each answer is held
that many seconds), `swallow_updates` (the next N UPDATEs are forwarded and applied by BIND, but their
responses never reach the client, which times out). It counts what it forwarded.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from controller.sim.bind import Named, free_port

OPCODE_UPDATE = 5
POLL = 0.1  # seconds: how often a blocked thread checks that the proxy is stopping
UPSTREAM_TIMEOUT = 5.0  # seconds an upstream answer may take (a bound for a broken BIND, never expected)


def opcode(message: bytes) -> int:
    """The DNS header's OPCODE (RFC 1035 §4.1.1)."""
    return (message[2] >> 3) & 0x0F if len(message) > 2 else -1


@dataclass
class Counts:
    queries: int = 0  # questions forwarded (UDP and TCP)
    updates: int = 0  # UPDATEs forwarded to BIND
    swallowed: int = 0  # UPDATE responses not passed back
    unanswered: int = 0  # messages dropped while `down`


@dataclass
class DnsProxy:
    """UDP and TCP on 127.0.0.1:`port`, forwarding to `upstream` (host, port). Use as a context manager."""

    upstream: tuple[str, int]
    port: int = field(default_factory=free_port)
    down: bool = False
    delay: float = 0.0
    swallow_updates: int = 0
    counts: Counts = field(default_factory=Counts)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> DnsProxy:
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind(("127.0.0.1", self.port))
        self._udp.settimeout(POLL)
        self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._tcp.bind(("127.0.0.1", self.port))
        self._tcp.listen(16)
        self._tcp.settimeout(POLL)
        self._spawn(self._serve_udp)
        self._spawn(self._serve_tcp)
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        for thread in list(self._threads):
            thread.join(timeout=UPSTREAM_TIMEOUT + 1)
        self._udp.close()
        self._tcp.close()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _hold(self) -> bool:
        """Wait `delay` (or until stopping); False when the proxy is stopping."""
        return not self._stopping.wait(self.delay) if self.delay > 0 else not self._stopping.is_set()

    # --- UDP: one thread per datagram, so a held answer does not hold the others ---------------------------

    def _serve_udp(self) -> None:
        while not self._stopping.is_set():
            try:
                data, client = self._udp.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            if self.down:
                with self._lock:
                    self.counts.unanswered += 1
                continue
            self._spawn(self._forward_udp, data, client)

    def _forward_udp(self, data: bytes, client: tuple[str, int]) -> None:
        with self._lock:
            self.counts.queries += 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as upstream:
            upstream.settimeout(UPSTREAM_TIMEOUT)
            try:
                upstream.sendto(data, self.upstream)
                answer, _ = upstream.recvfrom(65535)
            except OSError:
                return
        if self._hold():
            with contextlib.suppress(OSError):
                self._udp.sendto(answer, client)

    # --- TCP: one thread per connection, one upstream connection each ---------------------------------------

    def _serve_tcp(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._tcp.accept()
            except (TimeoutError, OSError):
                continue
            self._spawn(self._forward_tcp, connection)

    def _forward_tcp(self, connection: socket.socket) -> None:
        connection.settimeout(POLL)
        upstream: socket.socket | None = None
        try:
            while not self._stopping.is_set():
                message = _read_message(connection, self._stopping)
                if message is None:
                    return  # the client closed the connection
                if self.down:
                    with self._lock:
                        self.counts.unanswered += 1
                    continue  # read and never answered: the client times out
                if upstream is None:
                    upstream = socket.create_connection(self.upstream, timeout=UPSTREAM_TIMEOUT)
                upstream.sendall(struct.pack(">H", len(message)) + message)
                answer = _read_message(upstream, self._stopping, timeout=UPSTREAM_TIMEOUT)
                if answer is None:
                    return
                with self._lock:
                    if opcode(message) == OPCODE_UPDATE:
                        self.counts.updates += 1
                        swallow = self.swallow_updates > 0
                        if swallow:
                            self.swallow_updates -= 1
                            self.counts.swallowed += 1
                    else:
                        self.counts.queries += 1
                        swallow = False
                if swallow:
                    continue  # BIND applied it; the client never hears so
                if not self._hold():
                    return
                connection.sendall(struct.pack(">H", len(answer)) + answer)
        except OSError:
            return
        finally:
            connection.close()
            if upstream is not None:
                upstream.close()


def _read_message(
    sock: socket.socket, stopping: threading.Event, *, timeout: float | None = None
) -> bytes | None:
    """One length-prefixed DNS message over TCP; None when the peer closed (or the proxy is stopping)."""
    header = _read_exactly(sock, 2, stopping, timeout)
    if header is None:
        return None
    return _read_exactly(sock, struct.unpack(">H", header)[0], stopping, timeout)


def _read_exactly(
    sock: socket.socket, size: int, stopping: threading.Event, timeout: float | None
) -> bytes | None:
    data = b""
    deadline = None if timeout is None else time.monotonic() + timeout
    while len(data) < size:
        if stopping.is_set() or (deadline is not None and time.monotonic() > deadline):
            return None
        try:
            chunk = sock.recv(size - len(data))
        except TimeoutError:
            continue
        if not chunk:
            return None
        data += chunk
    return data


# --- a second authoritative server that disagrees with the primary ----------------------------------------


@contextmanager
def disagreeing_server(zone: str, zone_text: str) -> Iterator[Named]:
    """A BIND serving `zone` from its own zone file (`zone_text`), fed by nobody: listed among a zone's
    servers, it disagrees with the primary (another serial, other data)."""
    root = Path(tempfile.mkdtemp(prefix="stagectl-bind-other-"))
    server = Named("disagreeing", free_port(), root, zone=zone)
    try:
        (root / f"{zone}.db").write_text(zone_text)
        (root / "named.conf").write_text(
            f'options {{ directory "{root}"; listen-on port {server.port} {{ 127.0.0.1; }};'
            " listen-on-v6 { none; }; pid-file none; session-keyfile none; recursion no;"
            " dnssec-validation no; notify no; };\ncontrols { };\n"
            f'zone "{zone}" {{ type primary; file "{zone}.db"; }};\n'
        )
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
