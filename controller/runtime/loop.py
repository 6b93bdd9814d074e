"""`stagectl run`: a pass on every interval and on every new commit; backoff on failures; a clean stop."""

from __future__ import annotations

import functools
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
from controller.runtime.lock import StateLock, refuse_if_coordinated
from controller.runtime.reconciler import PassResult, Reconciler
from controller.runtime.watch import PassWatcher

if TYPE_CHECKING:
    from controller.runtime.metrics import Metrics

log = logging.getLogger("stagectl.run")

MAX_BACKOFF = 600.0
RECHECK = 5.0  # seconds between two looks at the head while the watch waits (see _wait)


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
    page: Callable[[], Callable[[], None]] | None = None,
    watcher: PassWatcher | None = None,
) -> int:
    """`page` starts the migration page once the state directory is ours, and returns what stops it
    (the commands start it: the runtime does not import the web package); `watcher` is told each step
    of each pass (the command's terminal progress)."""
    state_dir = config.path(config.state_dir)
    stop = threading.Event()
    wake = threading.Event()  # set to end a wait early: a stop, or the git host's push webhook

    def stopping(*_: object) -> None:
        stop.set()
        wake.set()

    with StateLock.acquire(state_dir):
        refuse_if_coordinated(state_dir)
        previous = {sig: signal.signal(sig, stopping) for sig in (signal.SIGTERM, signal.SIGINT)}
        reconciler = wiring.build(config, rehearsal=rehearsal, should_stop=stop.is_set)
        if watcher is not None:
            reconciler.watcher = watcher
        stop_metrics = stop_webhook = stop_page = nothing
        try:
            metrics, stop_metrics = start_metrics(config)
            stop_webhook = start_webhook(config, wake) if not once else nothing
            stop_page = page() if page is not None else nothing
            return passes(reconciler, config, stop, once=once, report=report, metrics=metrics, wake=wake)
        finally:
            stop_page()
            stop_webhook()
            stop_metrics()
            wiring.close(reconciler)
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def passes(
    reconciler: Reconciler,
    config: ControllerConfig,
    stop: threading.Event,
    *,
    once: bool,
    report: Callable[[PassResult], None],
    metrics: Metrics | None = None,
    wake: threading.Event | None = None,
) -> int:
    wake = wake or threading.Event()
    failures = 0
    watched = reconciler.source.watch_paths()
    served_head: str | None = None  # the head the last pass served (a local source's new commit is seen)
    while not stop.is_set():
        started = time.monotonic()
        moved = False
        try:
            result = reconciler.run_pass()
            if metrics is not None:
                metrics.record_pass(
                    result, seconds=time.monotonic() - started, status=status.read(reconciler.state_dir)
                )
            report(result)
            failures = 0
            if once and result.served.refused is not None:
                return 1  # the head was refused: the last good revision was served, the head was not
            # A commit that lands during a pass changes the ref before the watch below begins: go again.
            served_head = result.served.head
            moved = not once and reconciler.source.is_local and reconciler.source.head() != served_head
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
        if moved:
            continue
        delay = config.interval.total_seconds() if failures == 0 else backoff(failures)
        _wait(watched, delay, wake, functools.partial(_moved_from, reconciler, served_head))
        if not stop.is_set():
            wake.clear()
    return 0


def nothing() -> None:
    pass


def start_metrics(config: ControllerConfig) -> tuple[Metrics | None, Callable[[], None]]:
    """The /metrics endpoint on `metricsPort`, when one is set; and the function that stops it."""
    if config.metrics_port is None:
        return None, nothing
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


def _moved_from(reconciler: Reconciler, served: str | None) -> bool:
    """Whether a local source's branch moved past the head the last pass served."""
    if served is None or not reconciler.source.is_local:
        return False
    try:
        return reconciler.source.head() != served
    except errors.StagectlError:  # the repository is unreadable now: the next pass says so
        return True


def _wait(
    paths: list[Path], seconds: float, wake: threading.Event, moved: Callable[[], bool] = lambda: False
) -> None:
    """Sleep until the interval ends, a ref of a local repository changes, or `wake` is set (a stop, or
    the push webhook of a remote repository).

    A commit that lands between the end of a pass and the start of the watch makes no event the watch
    sees: every `RECHECK` seconds the head is compared (`moved`), so such a commit waits that long at
    most, not a whole interval."""
    if not paths:
        wake.wait(seconds)
        return
    import watchfiles

    deadline = time.monotonic() + seconds
    while not wake.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0 or moved():
            return
        for changes in watchfiles.watch(
            *paths,
            stop_event=wake,
            rust_timeout=max(1, int(min(remaining, RECHECK) * 1000)),
            yield_on_timeout=True,
            debounce=200,
            raise_interrupt=False,
            # watchfiles' default filter ignores everything under a `.git` directory, which is all we watch.
            watch_filter=None,
        ):
            if changes:
                return
            break


def start_webhook(config: ControllerConfig, wake: threading.Event) -> Callable[[], None]:
    """The push webhook's server, when the source configures one; returns the function that stops it."""
    hook = config.source.webhook if config.source is not None else None
    if hook is None or config.source is None:
        return nothing
    from controller import secrets
    from controller.runtime.webhook import WebhookServer

    address, port = hook.address
    try:
        server = WebhookServer(
            address, port, secret=secrets.resolve(hook.secret_ref), branch=config.source.branch, wake=wake.set
        ).start()
    except OSError as error:
        raise errors.InvalidInput(
            f"source.webhook.listen: cannot listen on {hook.listen}: {error.strerror}"
        ) from None
    log.info("push webhook on http://%s:%d/hooks/git", address, server.port)
    return server.stop
