"""One pass of the controller: source -> desired -> observe -> plan -> drift -> apply -> record."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from controller import errors, faults
from controller.desired.models import DesiredState, DriftAction
from controller.model.actions import Action, Blocked, Drift, Note, Plan
from controller.model.snapshot import Snapshot
from controller.notify.alerts import Alert
from controller.notify.delivery import AlertDispatcher
from controller.planner import coexistence, render
from controller.planner.plan import plan
from controller.planner.settle import Verdict, settle
from controller.runtime import audit, drift, status
from controller.runtime.applier import ApplyReport, Outcome, apply_plan
from controller.runtime.audit import AuditLog
from controller.runtime.backends import Backends
from controller.runtime.config import ControllerConfig
from controller.runtime.observe import observe
from controller.runtime.serving import Served, mark_good, serve
from controller.runtime.source import GitSource
from controller.runtime.store import Store, action_key

log = logging.getLogger("stagectl.reconciler")

UNKNOWN_RESULT = "unknown"  # an action sent whose answer was lost: its intent stays open until settled


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

    def run_pass(self) -> PassResult:
        served = serve(self.source, self.store)
        self.store.record_attempted(served.commit.sha)
        desired = served.desired
        snapshot, findings = observe(
            desired,
            exchange=self.backends.exchange,
            dns=self.backends.dns,
            memory=self.store.load_memory(),
            now=self.backends.clock(),
        )
        planned = plan(desired, snapshot, snapshot.observedAt)
        planned = self._settle_interrupted(planned, snapshot)
        planned = self._handle_drift(served, planned, snapshot)
        report = self._apply(served, planned)
        mark_good(self.store, served)
        if report.failed is None and not report.interrupted:
            self.store.record_applied(served.commit.sha, report.memory)
        else:  # what was learnt still counts; the revision is applied only once a pass completes
            self.store.save_memory(report.memory)
        self._remember_acted(report)
        status.write(self.state_dir, status.build(served, planned, report, snapshot, findings, self.store))
        return PassResult(served, planned, report, findings)

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

    # --- apply: intent before action, result after ----------------------------------------------

    def _apply(self, served: Served, planned: Plan) -> ApplyReport:
        revision, author = served.commit.sha, served.commit.author
        pass_id = self.store.next_pass()

        def before(action: Action) -> bool:
            """The intent, durable before anything is sent: the journal row (SQLite, synchronous=FULL),
            then the audit record (fsynced). Either write failing stops the pass with the action unsent."""
            key = action_key(action)
            try:
                if not self.store.record_action_started(
                    revision=revision, pass_id=pass_id, key=key, action=action, now=self.backends.clock()
                ):
                    return False  # this pass sent it already
                faults.point("intent")
                self.audit.append(
                    revision=revision,
                    author=author,
                    action=action,
                    result="sending",
                    duration_ms=0,
                    time=self.backends.clock(),
                    phase="intent",
                    pass_id=pass_id,
                    key=key,
                )
            except OSError as error:
                raise errors.ExternalFailure(
                    f"the intent of {render.describe(action)[:120]} could not be recorded in "
                    f"{self.state_dir}: {error.strerror or error}; it was not sent"
                ) from None
            return True

        def after(outcome: Outcome) -> None:
            """The result: in the audit chain first, then the journal row closed. A crash between the two
            leaves the intent open and the next pass settles it by observation (both are recorded)."""
            key = action_key(outcome.action)
            result = "ok" if outcome.ok else f"error: {outcome.detail}"
            if outcome.ok and outcome.detail != "ok":
                result = f"ok: {outcome.detail}"
            if outcome.indeterminate:
                result = f"{UNKNOWN_RESULT}: {outcome.detail}"
            self.audit.append(
                revision=revision,
                author=author,
                action=outcome.action,
                result=result,
                duration_ms=int(outcome.duration * 1000),
                time=self.backends.clock(),
                phase="result",
                pass_id=pass_id,
                key=key,
            )
            if not outcome.indeterminate:  # else the intent stays open: the next pass settles it
                self.store.record_action_finished(
                    revision=revision, pass_id=pass_id, key=key, result=result, now=self.backends.clock()
                )
            self.on_outcome(outcome)

        return apply_plan(
            planned,
            exchange=self.backends.exchange,
            dns=self.backends.dns,
            on_start=before,
            on_outcome=after,
            should_stop=self.should_stop,
        )

    def _settle_interrupted(self, planned: Plan, snapshot: Snapshot) -> Plan:
        """An intent with no result: the process died with its action in flight. Whether its effect is
        observed decides (planner.settle), never sending it again blindly: the settlement is recorded and
        the plan, made from the same observation, sends the action again only if its effect is absent.
        Where the observation cannot tell, the intent stays open and nothing acts on its object."""
        open_intents = self.store.unfinished_actions()
        if not open_intents:
            return planned
        undecided: dict[str, str] = {}
        notes: list[Note] = []
        for record in open_intents:
            recorded = self.audit.recorded_result(record.pass_id, record.action_key)
            if recorded is not None:  # its result reached the audit log: only the journal row was left open
                self.store.record_action_finished(
                    revision=record.revision,
                    pass_id=record.pass_id,
                    key=record.action_key,
                    result=recorded,
                    now=self.backends.clock(),
                )
                continue
            settlement = settle(record.action, snapshot, planned.actions)
            what = audit.summary(record.action)
            obj = str(record.action.get("object", ""))
            if settlement.verdict is Verdict.UNKNOWN:
                undecided[obj] = (
                    f"{what} of pass {record.pass_id} was interrupted and its effect cannot be observed "
                    f"yet ({settlement.reason}); nothing acts on {obj} until it can"
                )
                continue
            self.audit.append(
                revision=record.revision,
                author="stagectl",
                action=record.action,
                result=settlement.result(),
                duration_ms=0,
                time=self.backends.clock(),
                phase="settled",
                pass_id=record.pass_id,
                key=record.action_key,
            )
            self.store.record_action_finished(
                revision=record.revision,
                pass_id=record.pass_id,
                key=record.action_key,
                result=settlement.result(),
                now=self.backends.clock(),
            )
            notes.append(Note(obj, f"{what} was interrupted; {settlement.result()}"))
        held = [a for a in planned.actions if a.object in undecided]
        return dataclasses.replace(
            planned,
            actions=tuple(a for a in planned.actions if a.object not in undecided),
            blocked=planned.blocked + tuple(Blocked(o, "unknown", why) for o, why in undecided.items()),
            notes=planned.notes + tuple(notes),
            memory=coexistence.uncounted(planned.memory, held, snapshot.memory),
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
