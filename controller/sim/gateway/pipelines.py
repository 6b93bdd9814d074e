"""The gateway's pipelines: each created pipeline runs its one cmdlet on the runner in a thread of its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from psrpcore import CreatePipelineEvent, PowerShell, ServerPipeline
from psrpcore.types import ErrorRecord, PipelineState, PSInvocationState, PSRPMessageType

from controller.exchange import errors
from controller.exchange.runner import CmdletRunner
from controller.sim.gateway import cmdlets as gateway_cmdlets
from controller.sim.gateway.cmdlets import Outcome, ReceivedCall
from controller.sim.gateway.faults import GatewayFaults
from controller.sim.gateway.shells import Events, Shell

OUTPUT_SLICE = 200  # output objects serialised per hold of the pool lock
OUTBOX_LIMIT = 1024 * 1024  # bytes serialised ahead of the client: about three Receive replies of 500 KiB
SIGN_IN = "Connect-ExchangeOnline"
SIGN_IN_FAILURE = "Microsoft.Identity.Client.MsalServiceException"


class Pipelines:
    """Runs the pipelines the shells create against `runner`, allowing only the `cmdlets` named.

    `received` lists every cmdlet call seen, in order, with Credential passwords redacted; `rows_written`
    counts, per cmdlet, the output objects written to pipelines (benchmarks).

    With `sign_in` the gateway is the ExchangeOnlineManagement host itself: it answers
    `Connect-ExchangeOnline` (failing when `faults` say so) and, as EXO does, knows no Exchange cmdlet in a
    runspace pool that has not signed in (CommandNotFoundException).
    """

    def __init__(
        self,
        runner: CmdletRunner,
        *,
        cmdlets: Iterable[str] | None = None,
        faults: GatewayFaults | None = None,
        sign_in: bool = False,
    ) -> None:
        self.runner = runner
        self.cmdlets = frozenset(cmdlets) if cmdlets is not None else gateway_cmdlets.DEFAULT_CMDLETS
        self.faults = faults or GatewayFaults()
        self.sign_in = sign_in
        self.received: list[ReceivedCall] = []
        self.rows_written: dict[str, int] = {}
        self._lock = threading.Lock()  # guards received and rows_written
        self._runner_lock = threading.Lock()  # one cmdlet at a time: a runner need not be thread-safe

    def start(self, shell: Shell, events: Events) -> None:
        """Start a thread for each pipeline the events created; the WSMan request need not wait for it."""
        for event in events:
            if isinstance(event, CreatePipelineEvent):
                with shell.cond:
                    pipeline = shell.pool.pipeline_table[event.pipeline_id]
                threading.Thread(
                    target=self._run, args=(shell, pipeline), name="psrp-pipeline", daemon=True
                ).start()

    def _run(self, shell: Shell, pipeline: ServerPipeline) -> None:
        with shell.cond:
            metadata = pipeline.metadata
            pipeline.start()
            shell.flush()
        # psrpcore keeps the CreatePipeline message's PowerShell here, though it annotates a PSObject.
        assert isinstance(metadata, PowerShell)
        outcome = self._execute(shell, metadata)
        self.faults.called()
        pipeline_id = pipeline.pipeline_id
        if outcome.cmdlet:
            with self._lock:
                self.rows_written.setdefault(outcome.cmdlet, 0)
        with shell.cond:
            if not shell.is_live(pipeline_id):
                return
            for message in outcome.warnings:
                pipeline.write_warning(message)
        # Serialise large outputs in slices, so that a Receive ships the first objects while the rest are
        # still being serialised, and no further ahead of the client than OUTBOX_LIMIT: waiting for room
        # releases the lock, which the Receive handlers otherwise seldom win between two slices.
        for start in range(0, len(outcome.output), OUTPUT_SLICE):
            with shell.cond:
                if not shell.wait_for_room(pipeline_id, OUTBOX_LIMIT):
                    return  # stopped, or the shell closed: nobody reads the rest
                written = outcome.output[start : start + OUTPUT_SLICE]
                for obj in written:
                    pipeline.write_output(obj)
                shell.flush()
            with self._lock:
                self.rows_written[outcome.cmdlet] = self.rows_written.get(outcome.cmdlet, 0) + len(written)
            time.sleep(0)  # let a thread woken by the flush take the lock before the next slice does
        with shell.cond:
            if not shell.is_live(pipeline_id):
                return
            for record in outcome.errors:
                pipeline.prepare_message(record, message_type=PSRPMessageType.ErrorRecord)
            if outcome.terminating is None:
                pipeline.complete()
            else:
                _fail(pipeline, outcome.terminating)
            shell.finished.add(pipeline_id)
            shell.flush()

    def _execute(self, shell: Shell, metadata: PowerShell) -> Outcome:
        cmdlet, raw_parameters, refusal = gateway_cmdlets.describe(metadata)
        outcome = Outcome(cmdlet=cmdlet or "")
        if refusal is not None or cmdlet is None:
            outcome.terminating = refusal
            return outcome
        try:
            parameters = gateway_cmdlets.bind(raw_parameters, cmdlet)
        except gateway_cmdlets.BindingError as error:
            outcome.terminating = gateway_cmdlets.binding_failed(cmdlet, str(error))
            return outcome
        with self._lock:
            self.received.append(ReceivedCall(cmdlet, gateway_cmdlets.redact(parameters)))
        if self.sign_in and cmdlet.lower() == SIGN_IN.lower():
            outcome.terminating = self._sign_in(shell, cmdlet)
            return outcome
        if self.sign_in and not shell.signed_in:
            self.faults.note("unsigned")
        if cmdlet not in self.cmdlets or (self.sign_in and not shell.signed_in):
            outcome.terminating = gateway_cmdlets.command_not_found(cmdlet)
            return outcome
        with self._runner_lock:
            try:
                rows = self.runner.run(cmdlet, parameters, gateway_cmdlets.selected(metadata) or ())
            except errors.ExchangeError as error:
                rows = []
                record, terminating = gateway_cmdlets.from_exchange_error(cmdlet, error)
                if terminating:
                    outcome.terminating = record
                else:
                    outcome.errors.append(record)
            except Exception as error:  # a runner bug must fail this pipeline, not the gateway
                rows = []
                outcome.terminating = gateway_cmdlets.error_record(
                    cmdlet=cmdlet, exception_type="InternalGatewayException", message=type(error).__name__
                )
            outcome.warnings = [str(w) for w in getattr(rows, "warnings", None) or []]
            outcome.warnings += _drain_warnings(self.runner)
        outcome.output = [gateway_cmdlets.output_object(cmdlet, row) for row in rows]
        return outcome

    def _sign_in(self, shell: Shell, cmdlet: str) -> ErrorRecord | None:
        """Connect-ExchangeOnline in this runspace pool: None when signed in, else the error it writes."""
        if self.faults.sign_in_fails():
            return gateway_cmdlets.error_record(
                cmdlet=cmdlet,
                exception_type=SIGN_IN_FAILURE,
                message="AADSTS700027: Client assertion failed signature validation (injected fault).",
            )
        with shell.cond:
            shell.signed_in = True
        return None


def _fail(pipeline: ServerPipeline, record: ErrorRecord) -> None:
    """Mark a pipeline Failed with its terminating error; psrpcore has no public call for this."""
    pipeline.prepare_message(
        PipelineState(PipelineState=int(PSInvocationState.Failed), ExceptionAsErrorRecord=record)
    )
    pipeline.state = PSInvocationState.Failed


def _drain_warnings(runner: CmdletRunner) -> list[str]:
    """Warnings a runner keeps in a `warnings` list (besides its output's `.warnings`), taken once."""
    pending = getattr(runner, "warnings", None)
    if not isinstance(pending, list):
        return []
    taken = [str(w) for w in pending]
    pending.clear()
    return taken
