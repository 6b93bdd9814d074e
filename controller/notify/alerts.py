"""Drift alerts: fingerprints, human descriptions, webhook/Teams/Slack sinks and a non-blocking dispatcher."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import random
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from deepdiff import DeepDiff

from controller import errors, redact
from controller.model.snapshot import at

log = logging.getLogger("stagectl.alerts")

SIGNATURE_HEADER = "X-Stagectl-Signature"
MAX_TEXT = 2900  # Slack section text is limited to 3000 characters
USER_AGENT = "stagectl-alerts/1"


def plain(value: object) -> object:
    """Models, dataclasses and datetimes as JSON data, so fingerprints and diffs see values only."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, datetime):
        return at(value)
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def fingerprint(object: str, desired: object, observed: object) -> str:
    """sha256 of the canonical JSON of (object, desired, observed): one per distinct drift."""
    canonical = json.dumps(
        [object, plain(desired), plain(observed)], sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def describe_drift(desired: object, observed: object) -> str:
    """What differs, one line per difference, in words: "Status: expected 'Syncing', found 'Stopped'"."""
    if observed is None:
        return "the object is missing"
    diff = DeepDiff(plain(desired), plain(observed), ignore_order=True, view="tree", verbose_level=2)
    lines: list[str] = []
    for kind in sorted(diff):
        for level in diff[kind]:
            where = _path(level.path(output_format="list")) or "the value"
            if kind in ("values_changed", "type_changes"):
                lines.append(f"{where}: expected {level.t1!r}, found {level.t2!r}")
            elif kind in ("dictionary_item_added", "attribute_added"):
                lines.append(f"{where}: not expected, found {level.t2!r}")
            elif kind in ("dictionary_item_removed", "attribute_removed"):
                lines.append(f"{where}: expected {level.t1!r}, missing")
            elif kind == "iterable_item_added":
                lines.append(
                    f"{_path(level.path(output_format='list')[:-1]) or 'the list'}: unexpected {level.t2!r}"
                )
            elif kind == "iterable_item_removed":
                lines.append(
                    f"{_path(level.path(output_format='list')[:-1]) or 'the list'}: missing {level.t1!r}"
                )
            else:
                lines.append(f"{where}: differs ({kind.replace('_', ' ')})")
    return "\n".join(lines) if lines else "no difference"


def _path(parts: Sequence[object]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts).lstrip(".")


@dataclass(frozen=True, slots=True)
class Alert:
    kind: Literal["opened", "cleared"]
    object: str
    desired: object
    observed: object
    description: str
    revision: str
    fingerprint: str

    @classmethod
    def drift(
        cls,
        kind: Literal["opened", "cleared"],
        *,
        object: str,
        desired: object,
        observed: object,
        revision: str,
        known_fingerprint: str | None = None,
    ) -> Alert:
        """A drift alert, shown redacted; a "cleared" one passes the fingerprint its "opened" one had."""
        shown_desired, shown_observed = (
            redact.redact_data(plain(desired)),
            redact.redact_data(plain(observed)),
        )
        return cls(
            kind=kind,
            object=object,
            desired=shown_desired,
            observed=shown_observed,
            description=describe_drift(shown_desired, shown_observed),
            revision=revision,
            fingerprint=known_fingerprint or fingerprint(object, desired, observed),
        )

    @property
    def title(self) -> str:
        return f"Drift {'detected' if self.kind == 'opened' else 'cleared'} on {self.object}"

    def as_payload(self) -> dict[str, object]:
        """The generic webhook body; redacted, since observed data may carry what it should not."""
        return redact.redact_data(asdict(self))  # type: ignore[return-value]


# --- sinks ---------------------------------------------------------------------------------------


class DeliveryError(Exception):
    def __init__(self, message: str, *, retryable: bool, delay: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.delay = delay  # a server's Retry-After, in seconds


class AlertSink(Protocol):
    name: str  # for logs: never the URL path, which is the secret of Teams and Slack webhooks

    def send(self, alert: Alert) -> None: ...


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


# --- delivery ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 300.0

    def delay(self, attempt: int, rng: random.Random, hint: float | None = None) -> float:
        """Exponential backoff with equal jitter after the `attempt`-th failure (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        chosen = ceiling / 2 + rng.uniform(0, ceiling / 2)
        return min(self.max_delay, max(chosen, hint or 0.0))


@dataclass
class DeliveryStats:
    delivered: int = 0
    failed: int = 0  # given up after retries, or refused permanently
    dropped: int = 0  # the queue was full


class AlertDispatcher:
    """Delivers alerts in background threads (one per sink, so each keeps its order); never blocks.

    `submit()` returns at once; `flush(timeout)` waits for the queues to drain (shutdown, tests).
    """

    def __init__(
        self,
        sinks: Sequence[AlertSink],
        *,
        queue_size: int = 1000,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        on_result: Callable[[AlertSink, Alert, str], None] | None = None,
    ) -> None:
        self.stats = DeliveryStats()
        self._retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._on_result = on_result  # e.g. a metrics counter: (sink, alert, "delivered"|"failed"|"dropped")
        self._queue_size = queue_size
        self._condition = threading.Condition()
        self._stopping = False
        self._queues: list[deque[Alert]] = [deque() for _ in sinks]
        self._busy = [False for _ in sinks]
        self._sinks = list(sinks)
        self._threads = [
            threading.Thread(target=self._work, args=(index,), name=f"stagectl-alerts-{index}", daemon=True)
            for index in range(len(sinks))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, alert: Alert) -> bool:
        """Queue `alert` for every sink; False if some sink's queue was full (the alert dropped there)."""
        accepted = True
        with self._condition:
            for index, queue in enumerate(self._queues):
                if len(queue) >= self._queue_size or self._stopping:
                    accepted = False
                    self.stats.dropped += 1
                    log.warning(
                        "alert for %s dropped: the queue of %s is full", alert.object, self._sinks[index].name
                    )
                    self._report(self._sinks[index], alert, "dropped")
                else:
                    queue.append(alert)
            self._condition.notify_all()
        return accepted

    def flush(self, timeout: float) -> bool:
        """Wait until every queued alert is delivered or given up; False if `timeout` ran out first."""
        with self._condition:
            return self._condition.wait_for(self._idle, timeout=timeout)

    def close(self, timeout: float = 10.0) -> bool:
        """Flush, then stop the threads; alerts still queued after `timeout` are abandoned (and logged)."""
        drained = self.flush(timeout)
        with self._condition:
            self._stopping = True
            abandoned = sum(len(queue) for queue in self._queues)
            self._condition.notify_all()
        if abandoned:
            log.warning("%d alert deliveries abandoned at shutdown", abandoned)
        for thread in self._threads:
            thread.join(timeout=1.0)
        return drained

    def _idle(self) -> bool:
        return not any(self._queues) and not any(self._busy)

    def _report(self, sink: AlertSink, alert: Alert, outcome: str) -> None:
        if self._on_result is not None:
            try:
                self._on_result(sink, alert, outcome)
            except Exception:  # a metrics hook must never stop delivery
                log.exception("alert result hook failed")

    def _work(self, index: int) -> None:
        sink, queue = self._sinks[index], self._queues[index]
        while True:
            with self._condition:
                self._condition.wait_for(lambda: bool(queue) or self._stopping)
                if self._stopping:
                    return
                alert = queue[0]
                self._busy[index] = True
            outcome = self._deliver(sink, alert)
            with self._condition:
                if queue and queue[0] is alert:
                    queue.popleft()
                self._busy[index] = False
                if outcome == "delivered":
                    self.stats.delivered += 1
                elif outcome == "failed":
                    self.stats.failed += 1
                self._condition.notify_all()
            if outcome != "stopped":
                self._report(sink, alert, outcome)

    def _deliver(self, sink: AlertSink, alert: Alert) -> str:
        for attempt in range(1, self._retry.attempts + 1):
            try:
                sink.send(alert)
                return "delivered"
            except DeliveryError as error:
                if not error.retryable or attempt == self._retry.attempts:
                    log.error("%s alert for %s not delivered: %s", alert.kind, alert.object, error)
                    return "failed"
                delay = self._retry.delay(attempt, self._rng, error.delay)
                log.warning("%s; retrying in %.1f s", error, delay)
            except Exception as error:  # a bug in a sink must not kill the delivery thread
                log.error(
                    "%s alert for %s failed in %s: %s",
                    alert.kind,
                    alert.object,
                    sink.name,
                    type(error).__name__,
                )
                return "failed"
            with self._condition:
                # Sleeping on the condition lets close() cut a long backoff short.
                if self._condition.wait_for(lambda: self._stopping, timeout=delay):
                    return "stopped"
        return "failed"
