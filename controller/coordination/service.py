"""`stagectl run` with `coordination:`: this instance stands by for each tenant, leads those it wins (no
more than its share), and steps down the moment it cannot confirm its lease.

One thread per tenant (`TenantWorker`) campaigns and, while leading, runs the ordinary loop of passes
(`runtime.loop.passes`) over a reconciler whose store and audit log are the shared ones. The main thread
supervises: it stops a tenant's passes when the session is lost or a fenced write was refused, and keeps
the tenants spread evenly over the live instances (at most ceil(tenants / instances) each; an instance
over its share hands the surplus over between two passes)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from controller import errors
from controller.coordination.etcd import Etcd, Unavailable
from controller.coordination.leadership import Leadership, LeadershipLost, read_leader, read_leaders
from controller.coordination.session import Session
from controller.coordination.shared_audit import SharedAudit
from controller.coordination.shared_store import SharedStore
from controller.runtime import audit, loop, wiring
from controller.runtime.backends import Rehearsal
from controller.runtime.config import NAME_PATTERN, ControllerConfig, CoordinationConfig
from controller.runtime.lock import StateLock, mark_coordinated
from controller.runtime.reconciler import PassResult, Reconciler

if TYPE_CHECKING:
    from controller.runtime.metrics import Metrics

log = logging.getLogger("stagectl.coordination")

LEADERSHIP_FILE = "leadership.json"  # in each tenant's state directory: what this instance last knew
SUPERVISE = 0.25  # seconds between two looks of the supervisor
SHARE_EVERY = 4  # looks between two counts of the live instances (one etcd read a second)
RETRY_FAILED_START = 30.0  # a tenant whose backends could not be opened is tried again after this


def tenant_name(config: ControllerConfig) -> str:
    name = (config.coordination.tenant if config.coordination else None) or config.name
    if not re.fullmatch(NAME_PATTERN, name):
        raise errors.InvalidInput(
            f"{config.name}: the tenant name {name!r} is not [A-Za-z0-9._-]; set coordination.tenant"
        )
    return name


def instance_name(config: ControllerConfig, given: str | None) -> str:
    if given is not None:
        if not re.fullmatch(NAME_PATTERN, given):
            raise errors.InvalidInput(f"--instance {given!r}: use letters, digits, '.', '_' and '-'")
        return given
    named = config.coordination.instance if config.coordination else None
    return named or f"{socket.gethostname().split('.')[0]}-{os.getpid()}"


class TenantWorker:
    def __init__(
        self,
        config: ControllerConfig,
        session: Session,
        *,
        stop: threading.Event,
        once: bool,
        report: Callable[[str, PassResult], None],
        rehearsal: Rehearsal | None,
        metrics: Metrics | None,
    ) -> None:
        self.config = config
        self.tenant = tenant_name(config)
        self.session = session
        self.leadership = Leadership(session, self.tenant)
        self.stop = stop
        self.once = once
        self.report = report
        self.rehearsal = rehearsal
        self.metrics = metrics  # the leadership gauges
        self.pass_metrics = metrics  # a pass's figures: one tenant's only (see run)
        self.may_campaign = threading.Event()  # the supervisor's leave to campaign (this instance's share)
        self.nudge = threading.Event()  # the supervisor: campaign now (leave given, or the instance stops)
        self.leading = threading.Event()
        self.step_down = threading.Event()  # the supervisor asks: end the passes, then resign or forget
        self.wake = threading.Event()
        self.exit_code = 0
        self.finished = threading.Event()
        self.reconciler: Reconciler | None = None
        self._started: float | None = None  # --once: when this instance began to wait for the tenant
        self._held_off_until = 0.0  # handed over for the share: others take it first
        self.unled_since: float | None = None  # when the supervisor first saw no one lead the tenant
        self.rescued = False  # allowed beyond the share because no one led it for a lease TTL
        self.thread = threading.Thread(target=self._run, name=f"tenant-{self.tenant}", daemon=True)

    @property
    def state_dir(self) -> Path:
        return self.config.path(self.config.state_dir)

    def hold_off(self, seconds: float) -> None:
        self._held_off_until = time.monotonic() + seconds

    def holding_off(self) -> bool:
        return time.monotonic() < self._held_off_until

    def ask_to_step_down(self, why: str) -> None:
        if self.leading.is_set() and not self.step_down.is_set():
            log.warning("instance %s steps down from tenant %s: %s", self.session.instance, self.tenant, why)
            self.step_down.set()  # the relay ends the passes, then wakes them: no pass begins in between

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                if self._campaign():
                    self._lead()
                    if self.once:
                        return
                elif self.once and self._waited_enough():
                    self.exit_code = self._not_led_here()
                    return
                else:
                    self.nudge.wait(self._retry())
                    self.nudge.clear()
        finally:
            self.finished.set()

    def _not_led_here(self) -> int:
        """`--once` without winning the tenant: 0 when another instance leads it, 3 when it is unknown."""
        try:
            current = read_leader(self.session.etcd, self.session.prefix, self.tenant)
        except errors.ExternalFailure as error:
            log.error("tenant %s: nothing done: %s", self.tenant, error)
            return 3
        if current is None or current.instance == self.session.instance:
            log.error(
                "tenant %s: nothing done: this instance could not win it (no lease from etcd)", self.tenant
            )
            return 3
        log.info(
            "tenant %s is led by instance %s since %s: this run does nothing",
            self.tenant,
            current.instance,
            current.since,
        )
        return 0

    def _retry(self) -> float:
        return min(1.0, self.session.ttl / 5)

    def _waited_enough(self) -> bool:
        now = time.monotonic()
        if self._started is None:
            self._started = now
        return now - self._started > 2 * self.session.ttl

    def _campaign(self) -> bool:
        if not self.session.held() or not self.may_campaign.is_set():
            return False
        try:
            return self.leadership.campaign()
        except errors.ExternalFailure as error:
            log.debug("tenant %s: campaign: %s", self.tenant, error)
            return False

    def _lead(self) -> None:
        self.step_down.clear()
        self.wake.clear()
        self.leading.set()
        self._tell(leading=True)
        stopped = threading.Event()  # the passes end: a stop, a step down
        watcher = threading.Thread(target=self._relay, args=(stopped,), daemon=True)
        watcher.start()
        resign, failed = True, False
        try:
            self.reconciler = wiring.build(
                self.config,
                rehearsal=self.rehearsal,
                should_stop=stopped.is_set,
                store=lambda state_dir: SharedStore.open_shared(
                    state_dir, self.leadership, clock=lambda: datetime.now(UTC)
                ),
                audit_log=lambda path: SharedAudit(path, self.leadership),
            )
            self.reconciler.fence = self.leadership.check
            self.exit_code = loop.passes(
                self.reconciler,
                self.config,
                stopped,
                once=self.once,
                report=lambda result: self.report(self.tenant, result),
                metrics=self.pass_metrics,
                wake=self.wake,
            )
        except LeadershipLost as error:
            log.warning("%s", error)
            resign = False
        except errors.StagectlError as error:
            log.error("tenant %s could not be led: %s", self.tenant, error)
            self.exit_code = 3
            failed = True
        finally:
            stopped.set()
            if self.reconciler is not None:
                wiring.close(self.reconciler)
                self.reconciler = None
            if resign and self.leadership.held():
                self.leadership.resign()  # a clean hand-over: a standby need not wait for the TTL
            self.leadership.forget()
            self.leading.clear()
            self._tell(leading=False)
            watcher.join()
        if failed and not self.once:  # handed over: another instance may open what this one could not
            self.stop.wait(RETRY_FAILED_START)

    def _relay(self, stopped: threading.Event) -> None:
        """End the passes when the instance stops, the supervisor asks, or a fenced write was refused."""
        while not stopped.is_set():
            if self.stop.is_set() or self.step_down.is_set() or self.leadership.lost.is_set():
                stopped.set()
                self.wake.set()
                return
            stopped.wait(SUPERVISE)

    def _tell(self, *, leading: bool) -> None:
        """What this instance knows of the tenant's leadership, beside its status (the page, `status`)."""
        won = self.leadership.won
        body = {
            "tenant": self.tenant,
            "instance": self.session.instance,
            "leading": leading,
            "since": won.since if (leading and won) else None,
        }
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            target = self.state_dir / LEADERSHIP_FILE
            temporary = target.with_name(f".{target.name}.tmp")
            temporary.write_text(json.dumps(body) + "\n", encoding="utf-8")
            temporary.replace(target)
        except OSError as error:
            log.warning("tenant %s: %s was not written: %s", self.tenant, LEADERSHIP_FILE, error)
        if self.metrics is not None:
            self.metrics.record_leadership(self.tenant, leading=leading, since=won.since if won else None)


@contextmanager
def leading_once(
    config: ControllerConfig, state_dir: Path
) -> Iterator[tuple[SharedStore, SharedAudit, Leadership]]:
    """`stagectl apply` on a coordinated tenant acts as its leader, or not at all: with the tenant led by a
    running controller it is refused (one writer to a tenant), as the state lock refuses it alone."""
    settings = config.coordination
    assert settings is not None
    name = f"{instance_name(config, None)}-apply"
    session = Session(
        Etcd(settings.etcd, base_dir=Path(config.base_dir)),
        instance=name,
        ttl=int(settings.lease_ttl.total_seconds()),
        prefix=settings.prefix,
    ).start()
    try:
        deadline = time.monotonic() + session.ttl
        while not session.held() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not session.held():
            raise Unavailable(f"etcd gave {name} no lease within {session.ttl} s: nothing applied")
        claim = Leadership(session, tenant_name(config))
        if not claim.campaign():
            current = read_leader(session.etcd, settings.prefix, claim.tenant)
            who = f"instance {current.instance} since {current.since}" if current else "another instance"
            raise errors.Refused(
                f"tenant {claim.tenant} is led by {who}: apply acts only on a tenant no controller leads "
                "(let the leader act, or stop the controllers first)"
            )
        mark_coordinated(state_dir, tenant=claim.tenant, prefix=settings.prefix)
        store = SharedStore.open_shared(state_dir, claim, clock=lambda: datetime.now(UTC))
        try:
            yield store, SharedAudit(audit.path_in(state_dir), claim), claim
        finally:
            store.close()
            if claim.held():
                claim.resign()
    finally:
        session.close()


def run(
    configs: list[ControllerConfig],
    *,
    instance: str | None,
    once: bool,
    report: Callable[[str, PassResult], None],
    rehearsal: Rehearsal | None = None,
    metrics_port: int | None = None,
    metrics_address: str = "127.0.0.1",
) -> int:
    """Stand by for and lead the tenants of `configs` (each with `coordination:`) until SIGTERM/SIGINT."""
    first = configs[0]
    settings = _shared_settings(configs)
    name = instance_name(first, instance)
    names = [tenant_name(config) for config in configs]
    if len(set(names)) != len(names):
        raise errors.InvalidInput(f"two configurations name the same tenant: {sorted(names)}")
    etcd = Etcd(settings.etcd, base_dir=Path(first.base_dir))
    stop = threading.Event()

    def stopping(*_: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, stopping) for sig in (signal.SIGTERM, signal.SIGINT)}
    stop_metrics: Callable[[], None] = loop.nothing
    with ExitStack() as held:
        for config in configs:  # one process per state directory, as without coordination
            state_dir = config.path(config.state_dir)
            held.enter_context(StateLock.acquire(state_dir))
            mark_coordinated(state_dir, tenant=tenant_name(config), prefix=settings.prefix)
        try:
            metrics = None
            if metrics_port is not None:
                metrics, stop_metrics = loop.start_metrics(
                    first.model_copy(
                        update={"metrics_port": metrics_port, "metrics_address": metrics_address}
                    )
                )
            _name_free(etcd, settings.prefix, name, ttl=int(settings.lease_ttl.total_seconds()))
            session = Session(
                etcd,
                instance=name,
                ttl=int(settings.lease_ttl.total_seconds()),
                prefix=settings.prefix,
                tenants=names,
            ).start()
            workers = [
                TenantWorker(
                    config, session, stop=stop, once=once, report=report, rehearsal=rehearsal, metrics=metrics
                )
                for config in configs
            ]
            if len(workers) > 1:  # the pass metrics (batches, drift, last success) carry no tenant label:
                for worker in workers:  # with many tenants only the leadership gauges are served
                    worker.pass_metrics = None
            for worker in workers:  # a push wakes the tenant's passes where this instance leads it
                held.callback(loop.start_webhook(worker.config, worker.wake) if not once else loop.nothing)
            log.info("instance %s stands by for %d tenant(s): %s", name, len(workers), ", ".join(names))
            for worker in workers:
                worker.thread.start()
            _supervise(session, workers, stop)
            for worker in workers:
                worker.thread.join()
            session.close()
            return max((worker.exit_code for worker in workers), default=0)
        finally:
            stop.set()
            stop_metrics()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _name_free(etcd: Etcd, prefix: str, name: str, *, ttl: int) -> None:
    """Refuse a name a live instance holds (a configuration copied with its `instance` to every machine):
    the audit records could no longer tell the writers apart. A session this instance left by a crash
    expires within one TTL, so that long is waited for first."""
    key = f"{prefix.rstrip('/')}/instances/{name}"
    deadline = time.monotonic() + ttl + 1
    try:
        held = etcd.get(key)
    except Unavailable as error:  # not checked now: the session keeps trying, and so does the fence
        log.warning("instance name %s not checked (%s)", name, error)
        return
    if held is not None:
        log.info("instance name %s is held by a live session: waiting up to %d s for it to expire", name, ttl)
    while held is not None and time.monotonic() < deadline:
        time.sleep(0.5)
        with contextlib.suppress(Unavailable):
            held = etcd.get(key)
    if held is not None:
        raise errors.Refused(
            f"another live instance is named {name}: give each instance its own name (--instance, "
            "coordination.instance)"
        )


def _supervise(session: Session, workers: list[TenantWorker], stop: threading.Event) -> None:
    """Until every worker has finished (a stop, or `--once`): step down when the lease is not confirmed,
    and keep to this instance's share of the tenants."""
    # The share reads etcd, which may take a whole timeout when it does not answer: on a thread of its own,
    # so that the lease check below is never late.
    sharing = threading.Thread(target=_sharing, args=(session, workers, stop), name="share", daemon=True)
    sharing.start()
    while not stop.is_set() and not all(w.finished.is_set() for w in workers):
        if not session.held():
            for worker in workers:
                worker.ask_to_step_down("its lease is not confirmed (etcd unreachable or the quorum lost)")
        stop.wait(SUPERVISE)
    stop.set()  # each worker's relay ends its passes, then wakes them
    for worker in workers:
        worker.nudge.set()  # a standing-by worker returns from its wait
    sharing.join(timeout=SUPERVISE * SHARE_EVERY)  # a read of etcd in flight is not waited for


def _sharing(session: Session, workers: list[TenantWorker], stop: threading.Event) -> None:
    serving: set[str] | None = None
    while not stop.is_set():
        if session.held():
            serving = _share(session, workers, serving)
        stop.wait(SUPERVISE * SHARE_EVERY)


def _share(
    session: Session, workers: list[TenantWorker], serving_before: set[str] | None = None
) -> set[str] | None:
    """At most ceil(tenants / live instances) tenants each. Below the share, only as many workers as there
    are free places campaign, each for a tenant no one leads (or one this instance held before its lease
    was confirmed again); above it (another instance joined), the surplus is handed over, and this instance
    leaves those tenants alone for a lease TTL so that an instance below its share takes them (or until one
    has: a tenant that instance gives up again, say on a clean stop, is anyone's at once).

    Returns the instances that serve these tenants, for the next look (`serving_before`): when one of
    them has left since, every hold-off ends. A tenant handed over to it and given up again before this
    instance saw it led there (a rolling restart stops an instance soon after it took its share) is free,
    and the share has grown."""
    mine = {w.tenant for w in workers}
    try:  # the instances that stand by for any of these tenants (not those serving other tenants only)
        serving = {name for name, tenants in session.live_instances().items() if mine & set(tenants)}
        leaders = read_leaders(session.etcd, session.prefix, [w.tenant for w in workers])
    except errors.ExternalFailure:
        for worker in workers:
            worker.may_campaign.clear()
        return serving_before
    share = math.ceil(len(workers) / max(1, len(serving)))
    now = time.monotonic()
    someone_left = serving_before is not None and bool(serving_before - serving)
    for worker in workers:
        if someone_left or (worker.tenant in leaders and leaders[worker.tenant].instance != session.instance):
            worker.hold_off(0)  # another instance took it, or left: the hold-off has done its work
        worker.unled_since = None if worker.tenant in leaders else (worker.unled_since or now)
        if not worker.leading.is_set():
            worker.rescued = False
    # A rescued tenant (taken beyond the share, see below) does not count against it: handing it over
    # would leave it unled again.
    leading = [w for w in workers if w.leading.is_set() and not w.step_down.is_set() and not w.rescued]
    free = [
        w
        for w in workers
        if not w.leading.is_set()
        and not w.holding_off()
        and (w.tenant not in leaders or leaders[w.tenant].instance == session.instance)
    ]
    allowed = {w.tenant for w in free[: max(0, share - len(leading))]}
    # Instances that serve overlapping sets of tenants can each be at their share with a tenant no one
    # leads: a tenant unled for a whole lease TTL is taken by whoever serves it, whatever the share.
    for worker in free:
        if (
            worker.tenant not in allowed
            and worker.unled_since is not None
            and now - worker.unled_since > session.ttl
        ):
            allowed.add(worker.tenant)
            worker.rescued = True
    for worker in workers:
        if worker.tenant in allowed:
            if not worker.may_campaign.is_set():
                worker.nudge.set()  # a takeover waits for no retry
            worker.may_campaign.set()
        else:
            worker.may_campaign.clear()
    for worker in leading[share:]:
        worker.hold_off(session.ttl)
        worker.ask_to_step_down(f"{len(leading)} tenants led, more than its share of {share}")
    return serving


def _shared_settings(configs: list[ControllerConfig]) -> CoordinationConfig:
    first = configs[0].coordination
    if first is None:
        raise errors.InvalidInput(f"{configs[0].name}: no coordination section")
    for config in configs[1:]:
        theirs = config.coordination
        if theirs is None:
            raise errors.InvalidInput(f"{config.name}: every tenant needs the coordination section")
        if (theirs.etcd, theirs.prefix, theirs.lease_ttl) != (first.etcd, first.prefix, first.lease_ttl):
            raise errors.InvalidInput(
                f"{config.name}: coordination.etcd, prefix and leaseTtl must be the same for every tenant "
                f"of one instance ({configs[0].name} differs)"
            )
    return first
