"""Alert delivery: the sink seam, and a dispatcher that sends from background threads with retries."""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from controller.notify.alerts import Alert

log = logging.getLogger("stagectl.alerts")


class DeliveryError(Exception):
    """A sink could not deliver an alert; `retryable` says whether another attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool, delay: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.delay = delay  # a server's Retry-After, in seconds


class AlertSink(Protocol):
    name: str  # for logs: never the URL path, which is the secret of Teams and Slack webhooks

    def send(self, alert: Alert) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 300.0

    def delay(self, attempt: int, rng: random.Random, hint: float | None = None) -> float:
        """Exponential backoff with equal jitter after the `attempt`-th failure (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
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
