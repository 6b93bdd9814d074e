"""`stagectl run`: a pass on every interval and on every new commit; backoff on failures; a clean stop."""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from controller import errors
from controller.dns.base import DnsError
from controller.exchange.errors import ExchangeError
from controller.runtime import status, wiring
from controller.runtime.backends import Rehearsal
from controller.runtime.config import ControllerConfig
from controller.runtime.lock import StateLock
from controller.runtime.reconciler import PassResult, Reconciler

if TYPE_CHECKING:
    from controller.runtime.metrics import Metrics

log = logging.getLogger("stagectl.run")

MAX_BACKOFF = 600.0


def backoff(failures: int, *, base: float = 2.0, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter, so a flapping gateway is not hammered in lockstep."""
    ceiling = min(MAX_BACKOFF, base * 2 ** (failures - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)


def run(
    config: ControllerConfig,
    *,
    once: bool,
    report: Callable[[PassResult], None],
    rehearsal: Rehearsal | None = None,
) -> int:
    state_dir = config.path(config.state_dir)
    stop = threading.Event()
    with StateLock.acquire(state_dir):
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
        reconciler = wiring.build(config, rehearsal=rehearsal, should_stop=stop.is_set)
        stop_metrics = _nothing
        try:
            metrics, stop_metrics = _start_metrics(config)
            return _loop(reconciler, config, stop, once=once, report=report, metrics=metrics)
        finally:
            stop_metrics()
            wiring.close(reconciler)
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _loop(
    reconciler: Reconciler,
    config: ControllerConfig,
    stop: threading.Event,
    *,
    once: bool,
    report: Callable[[PassResult], None],
    metrics: Metrics | None = None,
) -> int:
    failures = 0
    watched = reconciler.source.watch_paths()
    while not stop.is_set():
        started = time.monotonic()
        try:
            result = reconciler.run_pass()
            if metrics is not None:
                metrics.record_pass(
                    result, seconds=time.monotonic() - started, status=status.read(reconciler.state_dir)
                )
            report(result)
            failures = 0
        except (ExchangeError, DnsError, errors.ExternalFailure) as error:
            if metrics is not None:
                metrics.record_failure(seconds=time.monotonic() - started)
            failures += 1
            log.error("pass failed (%s): %s", type(error).__name__, error)
            if once:
                return 3
        except errors.Refused as error:  # no valid revision was ever seen: nothing to serve yet
            failures += 1
            log.error("%s", error)
            if once:
                return 1
        if once:
            return 0
        delay = config.interval.total_seconds() if failures == 0 else backoff(failures)
        _wait(watched, delay, stop)
    return 0


def _nothing() -> None:
    pass


def _start_metrics(config: ControllerConfig) -> tuple[Metrics | None, Callable[[], None]]:
    """The /metrics endpoint on `metricsPort`, when one is set; and the function that stops it."""
    if config.metrics_port is None:
        return None, _nothing
    from controller.runtime.metrics import Metrics

    metrics = Metrics()
    try:
        _, stop = metrics.serve(config.metrics_port, address=config.metrics_address)
    except OSError as error:
        raise errors.InvalidInput(
            f"metricsPort: cannot listen on port {config.metrics_port}: {error.strerror}"
        ) from None
    log.info("metrics on %s:%d at /metrics", config.metrics_address, config.metrics_port)
    return metrics, stop


def _wait(paths: list[Path], seconds: float, stop: threading.Event) -> None:
    """Sleep until the interval ends, a ref of a local repository changes, or we are asked to stop."""
    if not paths:
        stop.wait(seconds)
        return
    import watchfiles

    for _ in watchfiles.watch(
        *paths,
        stop_event=stop,
        rust_timeout=max(1, int(seconds * 1000)),
        yield_on_timeout=True,
        debounce=200,
        raise_interrupt=False,
        # watchfiles' default filter ignores everything under a `.git` directory, which is all we watch.
        watch_filter=None,
    ):
        return
