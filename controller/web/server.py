"""The page's HTTP server: uvicorn (an ASGI server) on a thread of its own, so that `stagectl run` keeps
its loop on the main thread, and stopped cleanly when the command ends (SIGTERM included).

uvicorn installs signal handlers only on the main thread; on this thread it installs none and stops when
`should_exit` is set.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette

from controller import errors

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8080
_START_SECONDS = 10.0


def parse_listen(text: str) -> tuple[str, int]:
    """`8080`, `:8080`, `127.0.0.1:8080`, `[::1]:8080` or `0.0.0.0:8080`; without an address, loopback.

    A host other than loopback is served only when written out: the page is for the migration team,
    and exposing it is a decision."""
    host, colon, port = text.strip().rpartition(":")
    if not colon:
        host, port = "", text.strip()
    host = host.strip("[]") or LOOPBACK
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise errors.InvalidInput(f"--http {text!r}: give [ADDRESS:]PORT, e.g. 127.0.0.1:8080")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise errors.InvalidInput(f"--http {text!r}: {host!r} is not an IP address") from None
    return host, int(port)


def is_loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


@dataclass
class PageServer:
    """A running server: its address and port (the real one when 0 was asked), and `stop()`."""

    host: str
    port: int
    _server: uvicorn.Server
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=_START_SECONDS)


def start(app: Starlette, host: str, port: int) -> PageServer:
    """Serve `app` on host:port (0: any free port) on a daemon thread; returns once it listens."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off", server_header=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="stagectl-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_SECONDS
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        server.should_exit = True
        thread.join(timeout=_START_SECONDS)
        raise errors.InvalidInput(
            f"the migration page cannot listen on {host}:{port} (in use, or not allowed)"
        )
    sockets = [s for listener in server.servers for s in listener.sockets]
    return PageServer(host, int(sockets[0].getsockname()[1]) if sockets else port, server, thread)
