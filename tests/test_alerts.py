"""Drift alerts against a real HTTP server on loopback: payloads, HMAC signatures, retries, dedup."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from controller import errors
from controller.notify import alerts, delivery, webhooks
from controller.runtime import store

FLUSH = 60.0  # an upper bound for a stuck test, never an expectation about speed
FAST = delivery.RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.01)
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        return json.loads(self.body)


@dataclass
class Endpoint:
    """A loopback HTTP server answering with scripted statuses (200 once the script runs out)."""

    url: str
    statuses: list[int]
    received: list[Received] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    state = Endpoint(url="", statuses=[])
    state.gate.set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.gate.wait(FLUSH)
            state.received.append(Received(self.path, dict(self.headers.items()), body))
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/B000/secret-path"
    yield state
    state.gate.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=FLUSH)


def batch_drift(kind: str = "opened") -> alerts.Alert:
    return alerts.Alert.drift(
        kind,  # type: ignore[arg-type]
        object="batch/pilot",
        desired={"Status": "Syncing", "members": ["a@example.com", "b@example.com"]},
        observed={"Status": "Stopped", "members": ["a@example.com"]},
        revision="c" * 40,
    )


_started: list[delivery.AlertDispatcher] = []


def dispatcher(*sinks: delivery.AlertSink, **options: object) -> delivery.AlertDispatcher:
    sender = delivery.AlertDispatcher(list(sinks), retry=FAST, rng=random.Random(7), **options)  # type: ignore[arg-type]
    _started.append(sender)
    return sender


@pytest.fixture(autouse=True)
def stop_dispatchers() -> Iterator[None]:
    yield
    while _started:
        _started.pop().close(FLUSH)


def test_fingerprint_is_canonical_and_distinct() -> None:
    one = alerts.fingerprint("batch/pilot", {"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 2})
    assert one == alerts.fingerprint("batch/pilot", {"b": [1, 2], "a": 1}, {"a": 2, "b": [1, 2]})
    assert one != alerts.fingerprint("batch/pilot", {"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 3})
    assert one != alerts.fingerprint("batch/other", {"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 2})
    assert len(one) == 64


def test_describe_drift_in_words() -> None:
    text = alerts.describe_drift(
        {"Status": "Syncing", "members": ["a", "b"], "ttl": 300},
        {"Status": "Stopped", "members": ["a"], "ttl": 300},
    )
    assert text.splitlines() == ["members: missing 'b'", "Status: expected 'Syncing', found 'Stopped'"]
    assert alerts.describe_drift({"ttl": 300}, None) == "the object is missing"
    assert alerts.describe_drift({"x": 1}, {"x": 1}) == "no difference"


def test_webhook_is_signed_with_hmac(endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGECTL_TEST_HOOK_SECRET", "shared-secret")
    sink = webhooks.WebhookSink(endpoint.url, secret_ref="env:STAGECTL_TEST_HOOK_SECRET")
    assert sink.name == f"webhook {endpoint.url.split('/hooks')[0]}"  # the path is not in the name
    assert "secret-path" not in repr(sink) and "shared-secret" not in repr(sink)
    sender = dispatcher(sink)
    alert = batch_drift()
    assert sender.submit(alert)
    assert sender.flush(FLUSH)

    [request] = endpoint.received
    expected = hmac.new(b"shared-secret", request.body, hashlib.sha256).hexdigest()
    assert request.headers[webhooks.SIGNATURE_HEADER] == f"sha256={expected}"
    assert request.headers["Content-Type"] == "application/json"
    payload = request.json()
    assert payload == {
        "kind": "opened",
        "object": "batch/pilot",
        "desired": {"Status": "Syncing", "members": ["a@example.com", "b@example.com"]},
        "observed": {"Status": "Stopped", "members": ["a@example.com"]},
        "description": "members: missing 'b@example.com'\nStatus: expected 'Syncing', found 'Stopped'",
        "revision": "c" * 40,
        "fingerprint": alert.fingerprint,
    }
    assert sender.stats == delivery.DeliveryStats(delivered=1)
    sender.close()


def test_webhook_without_secret_is_unsigned(endpoint: Endpoint, tmp_path: Path) -> None:
    sender = dispatcher(webhooks.WebhookSink(endpoint.url))
    sender.submit(batch_drift())
    assert sender.flush(FLUSH)
    assert webhooks.SIGNATURE_HEADER not in endpoint.received[0].headers
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text("from-a-file\n", encoding="utf-8")
    assert webhooks.resolve_secret(f"file:{secret_file}") == "from-a-file"


def test_delivery_is_retried_after_a_500(endpoint: Endpoint) -> None:
    endpoint.statuses = [500, 503, 429]
    outcomes: list[str] = []
    sender = dispatcher(
        webhooks.WebhookSink(endpoint.url), on_result=lambda _s, _a, outcome: outcomes.append(outcome)
    )
    sender.submit(batch_drift())
    assert sender.flush(FLUSH)
    assert len(endpoint.received) == 4
    assert len({request.body for request in endpoint.received}) == 1  # the same alert each time
    assert sender.stats == delivery.DeliveryStats(delivered=1)
    assert outcomes == ["delivered"]


def test_retries_end_and_a_client_error_is_not_retried(endpoint: Endpoint) -> None:
    endpoint.statuses = [500] * FAST.attempts + [400]
    sender = dispatcher(webhooks.WebhookSink(endpoint.url))
    sender.submit(batch_drift("opened"))
    sender.submit(batch_drift("cleared"))
    assert sender.flush(FLUSH)
    assert len(endpoint.received) == FAST.attempts + 1
    assert sender.stats == delivery.DeliveryStats(failed=2)


def test_an_unreachable_sink_does_not_block(endpoint: Endpoint) -> None:
    port = endpoint.url.split(":")[2].split("/")[0]
    sender = dispatcher(
        webhooks.SlackSink(f"http://127.0.0.1:{port}/x"), webhooks.SlackSink("http://127.0.0.1:9/x")
    )
    sender.submit(batch_drift())
    assert sender.flush(FLUSH)
    assert sender.stats == delivery.DeliveryStats(delivered=1, failed=1)


def test_submit_never_waits_for_delivery_and_a_full_queue_drops(endpoint: Endpoint) -> None:
    endpoint.gate.clear()  # the server holds every request until the test lets it go
    sender = dispatcher(webhooks.WebhookSink(endpoint.url), queue_size=2)
    assert sender.submit(batch_drift("opened"))
    assert sender.submit(batch_drift("cleared"))
    assert not sender.submit(batch_drift("opened"))  # returned while the first is still in flight
    assert sender.stats.dropped == 1
    endpoint.gate.set()
    assert sender.flush(FLUSH)
    assert [request.json()["kind"] for request in endpoint.received] == ["opened", "cleared"]  # in order
    assert sender.close(FLUSH)


def test_teams_card(endpoint: Endpoint) -> None:
    sender = dispatcher(webhooks.TeamsSink(endpoint.url))
    sender.submit(batch_drift())
    assert sender.flush(FLUSH)
    body = endpoint.received[0].json()
    assert body["type"] == "message"
    [attachment] = body["attachments"]  # type: ignore[misc]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["body"][0]["text"] == "Drift detected on batch/pilot"
    assert {"title": "Object", "value": "batch/pilot"} in card["body"][1]["facts"]
    assert "Status: expected 'Syncing', found 'Stopped'" in card["body"][2]["text"]


def test_slack_message(endpoint: Endpoint) -> None:
    sender = dispatcher(webhooks.SlackSink(endpoint.url))
    sender.submit(batch_drift("cleared"))
    assert sender.flush(FLUSH)
    body = endpoint.received[0].json()
    assert body["text"].startswith("Drift cleared on batch/pilot: ")  # type: ignore[union-attr]
    header, section, context = body["blocks"]  # type: ignore[misc]
    assert header["text"] == {"type": "plain_text", "text": "Drift cleared on batch/pilot"}
    assert section["text"]["type"] == "plain_text"  # nothing in drift data is interpreted as markup
    assert context["elements"][0]["text"].startswith("revision cccccccccccc")


def test_secrets_in_observed_data_are_not_sent(endpoint: Endpoint) -> None:
    alert = alerts.Alert.drift(
        "opened",
        object="endpoint/onprem",
        desired={"Authentication": "Basic", "Password": "old-secret"},
        observed={"Authentication": "Ntlm", "Password": "new-secret"},
        revision="d" * 40,
    )
    sender = dispatcher(webhooks.WebhookSink(endpoint.url), webhooks.SlackSink(endpoint.url))
    sender.submit(alert)
    assert sender.flush(FLUSH)
    for request in endpoint.received:
        assert b"old-secret" not in request.body and b"new-secret" not in request.body
    assert alert.description == "Authentication: expected 'Basic', found 'Ntlm'"


def test_secret_references_fail_without_showing_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAGECTL_TEST_UNSET", raising=False)
    with pytest.raises(errors.InvalidInput, match="env:STAGECTL_TEST_UNSET names an unset"):
        webhooks.WebhookSink("https://hooks.example.com/x", secret_ref="env:STAGECTL_TEST_UNSET")
    with pytest.raises(errors.InvalidInput, match="by reference") as caught:
        webhooks.resolve_secret("hunter2")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(errors.InvalidInput, match="http"):
        webhooks.SlackSink("ftp://example.com/x")


def test_one_alert_per_drift_across_a_restart_and_one_when_it_clears(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    """The reconciler's use: the store decides whether an alert is news; the dispatcher sends it."""
    drift = batch_drift()

    def observe(sender: delivery.AlertDispatcher, db: store.Store, *, drifting: bool) -> None:
        if drifting and db.open_alert(
            drift.fingerprint, object=drift.object, desired=drift.desired, observed=drift.observed, now=NOW
        ):
            sender.submit(drift)
        if not drifting and (closed := db.close_alert(drift.fingerprint)) is not None:
            sender.submit(
                alerts.Alert.drift(
                    "cleared",
                    object=closed.object,
                    desired=closed.desired,
                    observed=closed.observed,
                    revision="e" * 40,
                )
            )

    for drifting in (True, True, None, True, False, False):
        if drifting is None:  # a restart: new process state, same state directory
            continue
        db = store.Store.open(tmp_path)
        sender = dispatcher(webhooks.WebhookSink(endpoint.url))
        observe(sender, db, drifting=drifting)
        assert sender.close(FLUSH)
        db.close()
    kinds = [request.json()["kind"] for request in endpoint.received]
    assert kinds == ["opened", "cleared"]
    assert endpoint.received[1].json()["fingerprint"] == drift.fingerprint
