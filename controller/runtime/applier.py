"""Apply a plan action by action through the backends; stop at the first failure and say what was done."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from controller import errors, faults, fence
from controller.dns.base import DnsBackend, DnsError, DnsIndeterminateError
from controller.exchange.errors import CmdletError, ExchangeError, IndeterminateError
from controller.exchange.refusals import Refusal, completion_refusal, explain
from controller.model.actions import Action, DnsAction, ExchangeAction, Plan
from controller.model.snapshot import Memory
from controller.runtime.store import action_key


class ExchangeWriter(Protocol):
    def apply(self, action: ExchangeAction) -> object: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    ok: bool
    detail: str
    duration: float
    external: bool = True  # False: our own input failed (an unresolvable secret reference), exit 1 not 3
    indeterminate: bool = False  # sent, its answer lost: whether it took effect is for observation to say
    learned: Memory | None = (
        None  # the memory this outcome taught (completion refused), saved with its result
    )


@dataclass(slots=True)
class ApplyReport:
    outcomes: list[Outcome] = field(default_factory=list)
    not_done: list[Action] = field(default_factory=list)
    memory: Memory = field(default_factory=Memory)
    interrupted: bool = False

    @property
    def failed(self) -> Outcome | None:
        return next((o for o in self.outcomes if not o.ok), None)


def apply_plan(
    plan: Plan,
    *,
    exchange: ExchangeWriter,
    dns: DnsBackend,
    on_start: Callable[[Action], bool] = lambda action: True,
    on_outcome: Callable[[Outcome], None] = lambda outcome: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> ApplyReport:
    """Run each action in order. `should_stop` is asked between actions (SIGTERM lets one finish);
    `on_start` records the action's intent durably before it is sent and may veto it (already sent by
    this pass); `on_outcome` records its result."""
    report = ApplyReport(memory=plan.memory)
    for index, action in enumerate(plan.actions):
        if should_stop():
            report.interrupted = True
            report.not_done = list(plan.actions[index:])
            break
        # The fault points (inert unless a reliability test sets them): `intent` while the intent is
        # written; it is durable before `before`; the backend reaches `during` once its request is out;
        # `after` precedes the result.
        with faults.acting(_names(action), action_key(action)):
            if not on_start(action):
                continue
            faults.point("before")
            outcome = _apply_one(action, exchange=exchange, dns=dns, report=report)
            faults.point("after")
            report.outcomes.append(outcome)
            on_outcome(outcome)
            faults.point("recorded")
        if not outcome.ok:
            report.not_done = list(plan.actions[index + 1 :])
            break
    return report


def _names(action: Action) -> tuple[str, ...]:
    """What a fault selector may name: the cmdlet (or `dns`) and the object."""
    return (action.cmdlet if isinstance(action, ExchangeAction) else "dns", action.object)


def _apply_one(action: Action, *, exchange: ExchangeWriter, dns: DnsBackend, report: ApplyReport) -> Outcome:
    started = time.monotonic()
    try:
        if isinstance(action, DnsAction):
            dns.apply(action)
        else:
            exchange.apply(action)
    except CmdletError as error:  # raised by Exchange only; `isinstance` tells the type checker
        if isinstance(action, ExchangeAction) and action.cmdlet == "Complete-MigrationBatch":
            return _completion_refused(action, error, report, started)
        return Outcome(action, False, str(error), time.monotonic() - started)
    except (IndeterminateError, DnsIndeterminateError) as error:
        return Outcome(action, False, str(error), time.monotonic() - started, indeterminate=True)
    except (ExchangeError, DnsError) as error:
        return Outcome(action, False, f"{type(error).__name__}: {error}", time.monotonic() - started)
    except fence.Refused:
        raise  # nothing was sent: the pass stops here, the intent stays open and is settled by observation
    except errors.StagectlError as error:
        return Outcome(action, False, str(error), time.monotonic() - started, external=False)
    return Outcome(action, True, "ok", time.monotonic() - started)


def _completion_refused(
    action: ExchangeAction, error: CmdletError, report: ApplyReport, started: float
) -> Outcome:
    """exchange-facts §8: a refusal naming `CompleteMigrationBatchNotSupported` is final, not a failure: the
    batch is remembered and Synced counts as complete. Any other refusal (not Synced yet, already
    completed, transient, or no key at all) is an ordinary failure: nothing learned, so a stale or racing
    observation can never make a batch count as complete for the cutover (exchange.refusals)."""
    refusal = completion_refusal(error)
    if refusal is not Refusal.NOT_SUPPORTED:
        return Outcome(action, False, f"{error} ({explain(refusal)})", time.monotonic() - started)
    name = str(action.params["Identity"])
    report.memory = report.memory.model_copy(
        update={"completionUnsupported": sorted({*report.memory.completionUnsupported, name})}
    )
    return Outcome(
        action,
        True,
        "Exchange does not support completing this staged batch; Synced counts as complete",
        time.monotonic() - started,
        learned=report.memory,
    )
