"""A git host's push webhook for tests: the request `stagectl run` listens for, signed as GitHub signs it."""

from __future__ import annotations

import hashlib
import hmac
import urllib.error
import urllib.request

TIMEOUT = 120.0  # an upper bound for a stuck server, never an expectation about speed


def github(body: bytes, secret: str) -> dict[str, str]:
    """The headers of a GitHub push: the body's HMAC-SHA256 under the shared secret."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/json"}


def post(port: int, body: bytes, headers: dict[str, str], path: str = "/hooks/git") -> int:
    """POST to the controller's webhook on loopback; the HTTP status it answered."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code
