"""One pass of the controller: source -> desired -> observe -> plan -> drift -> apply -> record."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from controller import errors, fence
from controller.desired.models import DesiredState, DriftAction
from controller.model.actions import Action, Blocked, Drift, Plan
from controller.model.snapshot import Snapshot
from controller.notify.alerts import Alert
from controller.notify.delivery import AlertDispatcher
from controller.planner import coexistence
from controller.planner.plan import plan
from controller.runtime import drift, notes, publish, status
from controller.runtime.applier import ApplyReport, Outcome, apply_plan
from controller.runtime.audit import AuditLog
from controller.runtime.backends import Backends
from controller.runtime.config import ControllerConfig
from controller.runtime.intents import Journal
from controller.runtime.observe import observe
from controller.runtime.serving import Served, mark_good, serve
from controller.runtime.source import GitSource
from controller.runtime.store import Store
from controller.runtime.watch import PassWatcher, Unwatched

log = logging.getLogger("stagectl.reconciler")


@dataclass(frozen=True, slots=True)
class PassResult:
    served: Served
    plan: Plan
    report: ApplyReport
    findings: tuple[str, ...]


@dataclass
class Reconciler:
    config: ControllerConfig
    source: GitSource
    store: Store
    audit: AuditLog
    backends: Backends
    alerts: AlertDispatcher
    should_stop: Callable[[], bool] = lambda: False
    on_outcome: Callable[[Outcome], None] = lambda outcome: None
    watcher: PassWatcher = field(default_factory=Unwatched)  # terminal progress, when a command shows it
    # The last look before each write is sent (controller.fence: the backends call it right before each
    # request): coordination raises here when this instance can no longer confirm that it leads the tenant.
    fence: Callable[[], None] = lambda: None

    def run_pass(self) -> PassResult:
        self.store.refresh()
        self.audit.refresh()
        served = serve(self.source, self.store)
        self.store.record_attempted(served.commit.sha)
        self.watcher.pass_started(served)
        desired = served.desired
        snapshot, findings = observe(
            desired,
            exchange=self.backends.exchange,
            dns=self.backends.dns,
            memory=self.store.load_memory(),
            now=self.backends.clock(),
        )
        self.watcher.observed(snapshot)
        planned = plan(desired, snapshot, snapshot.observedAt)
        planned = self.journal.settle(planned, snapshot, desired)
        planned = self._handle_drift(served, planned, snapshot)
        if planned.actions:  # what this observation taught (a TTL before lowering) survives a crash mid-pass
            self.store.save_memory(planned.memory)
        self.watcher.planned(len(planned.actions))
        report = self._apply(served, planned)
        mark_good(self.store, served)
        if report.failed is None and not report.interrupted:
            self.store.record_applied(served.commit.sha, report.memory)
        else:  # what was learnt still counts; the revision is applied only once a pass completes
            self.store.save_memory(report.memory)
        self._remember_acted(report)
        # What the pass tells people, after what it did is recorded: one of them failing is said and the
        # others still run; it never turns a pass that acted into a failed one.
        self._tell(
            "status",
            lambda: status.write(
                self.state_dir, status.build(served, planned, report, snapshot, findings, self.store)
            ),
        )
        self._tell("published snapshot", lambda: publish.after_pass(self.config, snapshot, served, report))
        self._tell("git notes", lambda: notes.after_pass(self.config, self.source, self.audit.path))
        return PassResult(served, planned, report, findings)

    def _tell(self, what: str, write: Callable[[], object]) -> None:
        try:
            write()
        except errors.StagectlError as error:
            log.error("the %s of this pass was not written: %s", what, error)
        except Exception as error:  # a bug of ours in a report must not undo a pass that acted
            log.error("the %s of this pass was not written: %s: %s", what, type(error).__name__, error)

    @property
    def state_dir(self) -> Path:
        return self.config.path(self.config.state_dir)

    # --- drift -----------------------------------------------------------------------------------

    def _handle_drift(self, served: Served, planned: Plan, snapshot: Snapshot) -> Plan:
        desired = served.desired
        fingerprints = drift.desired_fingerprints(desired)
        observed = drift.observed_facets(desired, snapshot)
        acted = self._acted()
        # A batch left unread (finished or quietly syncing) keeps its baseline, unless its spec changed
        # or we acted on it: then it is re-taken from what was verified, so a later change by hand is
        # still drift against it.
        skipped = drift.unread(desired, snapshot)
        stored = self.store.fingerprints(set(skipped))
        for obj, batch in skipped.items():
            if obj in acted or stored.get(obj) != fingerprints.get(obj):
                observed[obj] = drift.verified_facets(batch)
        # Only the rows compared this pass: an unread batch's baseline is neither loaded nor rewritten.
        before = self._baselines(set(observed) | acted)
        found, baselines = drift.detect(
            desired=fingerprints, observed=observed, baselines=before, acted=acted
        )
        self._save_baselines({obj: base for obj, base in baselines.items() if before.get(obj) != base})
        self._alert(served, found)
        policy = desired.policy.drift
        held = {f.object for f in found if getattr(policy, f.system) is DriftAction.WARN}
        entries = tuple(
            Drift(
                f.object,
                f.expected,
                f.observed,
                (
                    "reported only (policy warn)"
                    if f.object in held
                    else "corrected"
                    if any(a.object == f.object for a in planned.actions)
                    else "reported: this plan has no change for it"
                )
                + ": "
                + _changed(f.expected, f.observed),
            )
            for f in found
        )
        starts_held = _hold_starts_without_spf(desired, planned, held)
        stopped = held | {b.object for b in starts_held}
        return dataclasses.replace(
            planned,
            actions=tuple(a for a in planned.actions if a.object not in stopped),
            blocked=planned.blocked + starts_held,
            drift=planned.drift + entries,
            memory=coexistence.uncounted(
                planned.memory, [a for a in planned.actions if a.object in stopped], snapshot.memory
            ),
        )

    def _alert(self, served: Served, found: list[drift.Finding]) -> None:
        """Once per distinct drift when it opens, once when it clears; the store dedups across restarts."""
        now, revision = self.backends.clock(), served.commit.sha
        current = set()
        for finding in found:
            alert = Alert.drift(
                "opened",
                object=finding.object,
                desired=finding.expected,
                observed=finding.observed,
                revision=revision,
            )
            current.add(alert.fingerprint)
            if self.store.open_alert(
                alert.fingerprint,
                object=finding.object,
                desired=finding.expected,
                observed=finding.observed,
                now=now,
            ):
                self.alerts.submit(alert)
        for opened in self.store.open_alerts():
            if opened.fingerprint not in current and self.store.close_alert(opened.fingerprint) is not None:
                self.alerts.submit(
                    Alert.drift(
                        "cleared",
                        object=opened.object,
                        desired=opened.desired,
                        observed=opened.observed,
                        revision=revision,
                        known_fingerprint=opened.fingerprint,
                    )
                )

    def _baselines(self, objects: set[str]) -> dict[str, drift.Baseline]:
        # A baseline row holds the facets it was saved with (`{}` once acted on): always a mapping.
        return {
            s.object: drift.Baseline(str(s.desired), s.observed)
            for s in self.store.statuses(objects=objects)
            if s.phase in ("baseline", "acted") and isinstance(s.observed, dict)
        }

    def _acted(self) -> set[str]:
        return {s.object for s in self.store.statuses(phase="acted")}

    def _save_baselines(self, baselines: dict[str, drift.Baseline]) -> None:
        rows = [(obj, base.desired, base.facets) for obj, base in baselines.items()]
        self.store.set_statuses(rows, phase="baseline", message="", now=self.backends.clock())

    def _remember_acted(self, report: ApplyReport) -> None:
        now = self.backends.clock()
        for outcome in report.outcomes:
            self.store.set_status(
                outcome.action.object, desired="", observed={}, phase="acted", message=outcome.detail, now=now
            )

    # --- apply: intent before action, result after (runtime.intents) -----------------------------

    @property
    def journal(self) -> Journal:
        return Journal(self.store, self.audit, self.backends.clock, self.state_dir)

    def _apply(self, served: Served, planned: Plan) -> ApplyReport:
        def outcome(done: Outcome) -> None:
            self.on_outcome(done)
            self.watcher.acted(done)

        before, after = self.journal.recorder(
            revision=served.commit.sha, author=served.commit.author, on_outcome=outcome
        )

        def start(action: Action) -> bool:
            sending = before(action)
            if sending:
                self.watcher.acting(action)
            return sending

        with fence.guarded(self.fence):
            return apply_plan(
                planned,
                exchange=self.backends.exchange,
                dns=self.backends.dns,
                on_start=start,
                on_outcome=after,
                should_stop=self.should_stop,
            )


def _changed(expected: dict[str, object], observed: dict[str, object]) -> str:
    keys = sorted(k for k in {*expected, *observed} if expected.get(k) != observed.get(k))
    return ", ".join(f"{k} {expected.get(k)!r} -> {observed.get(k)!r}" for k in keys)[:300]


def _hold_starts_without_spf(desired: DesiredState, planned: Plan, held: set[str]) -> tuple[Blocked, ...]:
    """A held `spf:` change held the coexistence string: the batch starts of the plan wait with it, or
    migrated users would send from Exchange Online unauthorised."""
    spf_held = sorted(
        f"dns/{r.key}"
        for r in desired.records
        if r.spf is not None
        and f"dns/{r.key}" in held
        and any(a.object == f"dns/{r.key}" for a in planned.actions)
    )
    if not spf_held:
        return ()
    return tuple(
        Blocked(
            start.object,
            "spf",
            f"the batch does not start: the SPF change at {', '.join(spf_held)} is held as drift (policy "
            "warn), so the SPF string does not authorise Exchange Online yet; resolve the drift first",
        )
        for start in planned.actions
        if coexistence.is_start(start)
    )
