"""The push webhook: a git host tells `stagectl run` that the branch moved, so a merge reaches Exchange in
seconds instead of at the next interval (a local repository is watched instead, see loop._wait).

A request only wakes the loop; the loop then fetches and compares the head itself, so a forged or
replayed request can at worst cause one extra pass, never a revision: events are hints. Still, only a
signed request wakes it: GitHub, Gitea and Forgejo sign the body with HMAC-SHA256 in
`X-Hub-Signature-256: sha256=<hex>`; GitLab sends the shared secret in `X-Gitlab-Token`. Compared in
constant time; a push to another branch is acknowledged and ignored. Nothing of the request is logged
but its outcome.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("stagectl.webhook")

MAX_BODY = 1024 * 1024  # a push event of thousands of commits is still well under this
PATH = "/hooks/git"


def signed(body: bytes, headers: dict[str, str], secret: str) -> bool:
    """Whether the request carries the shared secret: as an HMAC of the body, or as GitLab's token."""
    signature = headers.get("x-hub-signature-256", "")
    if signature.startswith("sha256="):
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature[len("sha256=") :].strip().lower(), expected)
    token = headers.get("x-gitlab-token")
    if token is not None:
        return hmac.compare_digest(token.encode(), secret.encode())
    return False


def pushed_ref(body: bytes) -> str | None:
    """The `ref` a push event names (`refs/heads/main`), None when the body names none (a ping)."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return None
    ref = data.get("ref") if isinstance(data, dict) else None
    return ref if isinstance(ref, str) else None


class WebhookServer:
    """Serves POST /hooks/git on `address:port` in a thread; calls `wake()` for each signed push to
    `branch` (or a signed event naming no ref)."""

    def __init__(
        self, address: str, port: int, *, secret: str, branch: str, wake: Callable[[], None]
    ) -> None:
        self._secret = secret
        self._branch_ref = f"refs/heads/{branch}"
        self._wake = wake
        self.accepted = 0
        self.refused = 0
        handler = self._handler()
        self._server = ThreadingHTTPServer((address, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> WebhookServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def receive(self, body: bytes, headers: dict[str, str]) -> HTTPStatus:
        if not signed(body, headers, self._secret):
            self.refused += 1
            log.warning("webhook: refused a request that is not signed with the configured secret")
            return HTTPStatus.UNAUTHORIZED
        ref = pushed_ref(body)
        if ref is not None and ref != self._branch_ref:
            return HTTPStatus.ACCEPTED  # another branch: nothing to do
        self.accepted += 1
        log.info("webhook: the git host reports a push to %s; passing now", ref or self._branch_ref)
        self._wake()
        return HTTPStatus.ACCEPTED

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path.split("?")[0] != PATH:
                    self._answer(HTTPStatus.NOT_FOUND)
                    return
                try:
                    length = int(self.headers.get("Content-Length") or "0")
                except ValueError:
                    length = -1
                if length < 0 or length > MAX_BODY:
                    self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
                    return
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                self._answer(server.receive(body, headers))

            def do_GET(self) -> None:
                self._answer(HTTPStatus.METHOD_NOT_ALLOWED)

            def _answer(self, status: HTTPStatus) -> None:
                text = f"{status.value} {status.phrase}\n".encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, format: str, *args: object) -> None:
                pass  # the outcome is logged by receive(), never the request

        return Handler
