"""The alert sinks, each an HTTP webhook: generic JSON signed with HMAC, Microsoft Teams and Slack."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from controller import errors, redact
from controller.notify.alerts import Alert
from controller.notify.delivery import DeliveryError

SIGNATURE_HEADER = "X-Stagectl-Signature"
MAX_TEXT = 2900  # Slack section text is limited to 3000 characters
USER_AGENT = "stagectl-alerts/1"


def resolve_secret(reference: str) -> str:
    """`env:NAME` or `file:PATH` to the secret's value; errors name the reference, never a value."""
    scheme, _, target = reference.partition(":")
    if scheme == "env" and target:
        value = os.environ.get(target)
        if not value:
            raise errors.InvalidInput(f"the secret reference {reference} names an unset environment variable")
        return value
    if scheme == "file" and target:
        try:
            value = Path(target).expanduser().read_text(encoding="utf-8").strip()
        except OSError as error:
            raise errors.InvalidInput(
                f"the secret reference {reference} cannot be read: {error.strerror}"
            ) from None
        if not value:
            raise errors.InvalidInput(f"the secret reference {reference} names an empty file")
        return value
    # The text given may be the secret itself: it is never repeated.
    raise errors.InvalidInput("a secret must be given by reference, as env:NAME or file:PATH")


class HttpSink:
    """What every sink shares: a URL kept out of logs, a JSON body per alert, one POST per attempt."""

    kind = "webhook"

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise errors.InvalidInput(f"the {self.kind} alert sink needs an http(s) URL")
        self._url = url
        self.timeout = timeout
        self.name = f"{self.kind} {parts.scheme}://{parts.netloc.rpartition('@')[2]}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    def body(self, alert: Alert) -> dict[str, object]:
        raise NotImplementedError

    def headers(self, body: bytes) -> dict[str, str]:
        return {}

    def send(self, alert: Alert) -> None:
        body = json.dumps(self.body(alert), sort_keys=True, separators=(",", ":")).encode("utf-8")
        post_json(self._url, body, name=self.name, headers=self.headers(body), timeout=self.timeout)


def post_json(url: str, body: bytes, *, name: str, headers: dict[str, str], timeout: float) -> None:
    """POST a JSON body; 2xx is delivered, 408/429/5xx and network failures are worth retrying."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(4096)
    except urllib.error.HTTPError as error:
        retryable = error.code in (408, 425, 429) or error.code >= 500
        delay = _retry_after(error.headers.get("Retry-After") if error.headers else None)
        error.close()
        raise DeliveryError(f"{name} answered HTTP {error.code}", retryable=retryable, delay=delay) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DeliveryError(
            f"{name} could not be reached: {redact.redact_text(str(reason))}", retryable=True
        ) from None


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: our own backoff will do


class WebhookSink(HttpSink):
    """Generic JSON webhook; with a secret, the body is signed: `X-Stagectl-Signature: sha256=<hex>`."""

    def __init__(self, url: str, *, secret_ref: str | None = None, timeout: float = 10.0) -> None:
        super().__init__(url, timeout=timeout)
        self._secret = resolve_secret(secret_ref) if secret_ref else None

    def body(self, alert: Alert) -> dict[str, object]:
        return alert.as_payload()

    def headers(self, body: bytes) -> dict[str, str]:
        if self._secret is None:
            return {}
        digest = hmac.new(self._secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
        return {SIGNATURE_HEADER: f"sha256={digest}"}


class TeamsSink(HttpSink):
    """Microsoft Teams through a Workflows (or legacy incoming) webhook: an Adaptive Card message."""

    kind = "teams"

    def body(self, alert: Alert) -> dict[str, object]:
        return teams_card(alert)


class SlackSink(HttpSink):
    """Slack incoming webhook: `text` for notifications plus blocks; plain_text, so nothing is interpreted."""

    kind = "slack"

    def body(self, alert: Alert) -> dict[str, object]:
        return slack_message(alert)


def teams_card(alert: Alert) -> dict[str, object]:
    payload = alert.as_payload()
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": alert.title, "weight": "Bolder", "size": "Medium", "wrap": True},
            {
                "type": "FactSet",
                "facts": [
                    {"title": "Object", "value": alert.object},
                    {"title": "Revision", "value": alert.revision[:12]},
                    {"title": "Fingerprint", "value": alert.fingerprint[:16]},
                ],
            },
            {
                "type": "TextBlock",
                "text": _bounded(str(payload["description"])),
                "wrap": True,
                "fontType": "Monospace",
            },
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def slack_message(alert: Alert) -> dict[str, object]:
    description = _bounded(str(alert.as_payload()["description"]))
    return {
        "text": f"{alert.title}: {description.splitlines()[0] if description else ''}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
            {"type": "section", "text": {"type": "plain_text", "text": description}},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "plain_text",
                        "text": f"revision {alert.revision[:12]} · fingerprint {alert.fingerprint[:16]}",
                    }
                ],
            },
        ],
    }


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
