"""A PSRP server over WSMan on 127.0.0.1 serving any CmdletRunner: psrpcore runspace pools behind wsman.py."""

from __future__ import annotations

import base64
import binascii
import ssl
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Iterable
from types import TracebackType
from xml.etree import ElementTree as ET

from psrpcore import CreatePipelineEvent, ServerPipeline, ServerRunspacePool
from psrpcore._payload import PSRPPayload, StreamType
from psrpcore.types import ErrorRecord, PipelineState, PSInvocationState, PSRPMessageType

from controller.exchange import errors
from controller.exchange.runner import CmdletRunner
from controller.sim.gateway import cmdlets as gateway_cmdlets
from controller.sim.gateway import wsman
from controller.sim.gateway.cmdlets import Outcome, ReceivedCall

NS = wsman.NS
FRAGMENT_SIZE = 32 * 1024  # outgoing PSRP fragments; several fit in one Receive reply
OUTPUT_SLICE = 200  # output objects serialised per hold of the pool lock
MAX_RECEIVE_WAIT = 30.0  # seconds a Receive may block, whatever OperationTimeout the client asks for


class _Shell:
    """One WSMan shell = one psrpcore runspace pool, with its outgoing data sorted by pipeline."""

    def __init__(self, shell_id: str, resource_uri: str) -> None:
        self.id = shell_id
        self.resource_uri = resource_uri
        self.pool = ServerRunspacePool()
        # psrpcore is not thread-safe: every touch of the pool or its pipelines holds this condition's lock.
        self.cond = threading.Condition()
        self.outbox: dict[uuid.UUID | None, deque[bytes]] = defaultdict(deque)
        self.finished: set[uuid.UUID] = set()
        self.fragments_in: dict[uuid.UUID | None, int] = defaultdict(int)
        # pypsrp re-sends a Receive that timed out on the HTTP side with the same MessageID: answer it
        # with the same reply, else the data popped for the lost reply leaves a hole in the fragments.
        self.last_receive: dict[uuid.UUID | None, tuple[str, bytes]] = {}
        self.closed = False

    def feed(self, data: bytes, pipeline_id: uuid.UUID | None) -> list[object]:
        """Hand incoming PSRP bytes to the pool; return the complete messages (events) they finished."""
        self.fragments_in[pipeline_id] += 1
        self.pool.receive_data(PSRPPayload(data, StreamType.default, pipeline_id))
        events = []
        while (event := self.pool.next_event()) is not None:
            events.append(event)
        self.flush()
        return events

    def flush(self) -> None:
        """Move whatever psrpcore queued into the per-pipeline outboxes and wake a waiting Receive."""
        while (payload := self.pool.data_to_send(FRAGMENT_SIZE)) is not None:
            self.outbox[payload.pipeline_id].append(payload.data)
        self.cond.notify_all()


class PsrpGateway:
    """Serves `runner` over PSRP/WSMan at https?://127.0.0.1:PORT/wsman with Basic authentication.

    `received` lists every cmdlet call the gateway saw, in order, with Credential passwords redacted.
    """

    def __init__(
        self,
        runner: CmdletRunner,
        *,
        username: str,
        password: str,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        cmdlets: Iterable[str] | None = None,
        receive_wait: float = MAX_RECEIVE_WAIT,
    ) -> None:
        self.runner = runner
        self.cmdlets = frozenset(cmdlets) if cmdlets is not None else gateway_cmdlets.DEFAULT_CMDLETS
        self.receive_wait = receive_wait
        self.received: list[ReceivedCall] = []
        self.sends: dict[
            str, int
        ] = {}  # command id -> Send requests carrying its data (fragmentation checks)
        self._shells: dict[str, _Shell] = {}
        self._lock = threading.Lock()  # guards _shells, received and sends
        self._runner_lock = threading.Lock()  # one cmdlet at a time: a runner need not be thread-safe
        self._server = wsman.WSManHTTPServer(
            (host, port), service=self._handle, username=username, password=password, ssl_context=ssl_context
        )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def round_trips(self) -> int:
        """HTTP requests served so far, authenticated or not."""
        return self._server.request_count

    @property
    def url(self) -> str:
        scheme = "https" if self._server.ssl_context is not None else "http"
        return f"{scheme}://{self._server.server_address[0]}:{self.port}/wsman"

    def start(self) -> PsrpGateway:
        self._thread = threading.Thread(target=self._server.serve_forever, name="psrp-gateway", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        with self._lock:
            shells = list(self._shells.values())
            self._shells.clear()
        for shell in shells:
            with shell.cond:
                shell.closed = True
                shell.cond.notify_all()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> PsrpGateway:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- WSMan actions -------------------------------------------------------------------------------------

    def _handle(self, request: wsman.WSManRequest) -> bytes:
        action = request.action
        if action == wsman.ACTION_CREATE:
            return self._create(request)
        shell = self._shell(request)
        if action == wsman.ACTION_RECEIVE:
            return self._receive(request, shell)
        if action == wsman.ACTION_SEND:
            return self._send(request, shell)
        if action == wsman.ACTION_COMMAND:
            return self._command(request, shell)
        if action == wsman.ACTION_SIGNAL:
            return self._signal(request, shell)
        if action == wsman.ACTION_DELETE:
            return self._delete(request, shell)
        raise wsman.WSManFault(wsman.ERROR_ACTION_NOT_SUPPORTED, f"action not supported: {action}")

    def _shell(self, request: wsman.WSManRequest) -> _Shell:
        shell_id = request.selectors.get("ShellId", "").upper()
        with self._lock:
            shell = self._shells.get(shell_id)
        if shell is None:
            raise wsman.WSManFault(
                wsman.ERROR_INVALID_SELECTORS,
                "The request for the Windows Remote Shell with ShellId was not found.",
            )
        return shell

    def _create(self, request: wsman.WSManRequest) -> bytes:
        body = request.body
        creation = body.find("pwsh:creationXml", NS) if body is not None else None
        if body is None or creation is None or not request.resource_uri.startswith(NS["pwsh"]):
            raise wsman.WSManFault(wsman.ERROR_INTERNAL, "only PowerShell shells (creationXml) are served")
        shell_id = (body.get("ShellId") or str(uuid.uuid4())).upper()
        shell = _Shell(shell_id, request.resource_uri)
        with shell.cond:
            shell.feed(_b64(creation.text), None)
        with self._lock:
            self._shells[shell_id] = shell

        rsp, wsa, wsm = NS["rsp"], NS["wsa"], NS["wsman"]
        created = ET.Element(f"{{{NS['wst']}}}ResourceCreated")
        ET.SubElement(created, f"{{{wsa}}}Address").text = self.url
        params = ET.SubElement(created, f"{{{wsa}}}ReferenceParameters")
        ET.SubElement(params, f"{{{wsm}}}ResourceURI").text = request.resource_uri
        selectors = ET.SubElement(params, f"{{{wsm}}}SelectorSet")
        # The client addresses every later request with the selectors of this reply: ShellId must be there.
        ET.SubElement(selectors, f"{{{wsm}}}Selector", {"Name": "ShellId"}).text = shell_id
        info = ET.Element(f"{{{rsp}}}Shell")
        for name, value in (
            ("ShellId", shell_id),
            ("ResourceUri", request.resource_uri),
            ("Owner", self._server.username),
            ("ClientIP", "127.0.0.1"),
            ("IdleTimeOut", "PT7200.000S"),
            ("InputStreams", "stdin pr"),
            ("OutputStreams", "stdout"),
        ):
            ET.SubElement(info, f"{{{rsp}}}{name}").text = value
        return wsman.reply(request, created, info)

    def _command(self, request: wsman.WSManRequest, shell: _Shell) -> bytes:
        body = request.body
        if body is None:
            raise wsman.WSManFault(wsman.ERROR_INTERNAL, "Command without CommandLine")
        command_id = (body.get("CommandId") or str(uuid.uuid4())).upper()
        argument = body.find("rsp:Arguments", NS)
        pipeline_id = uuid.UUID(command_id)
        with shell.cond:
            ServerPipeline(
                shell.pool, pipeline_id
            )  # must exist before its CreatePipeline message is processed
            events = shell.feed(_b64(argument.text if argument is not None else ""), pipeline_id)
        self._dispatch(shell, events)
        response = ET.Element(f"{{{NS['rsp']}}}CommandResponse")
        ET.SubElement(response, f"{{{NS['rsp']}}}CommandId").text = command_id
        return wsman.reply(request, response)

    def _send(self, request: wsman.WSManRequest, shell: _Shell) -> bytes:
        stream = request.body.find("rsp:Stream", NS) if request.body is not None else None
        if stream is None:
            raise wsman.WSManFault(wsman.ERROR_INTERNAL, "Send without Stream")
        command_id = stream.get("CommandId")
        pipeline_id = uuid.UUID(command_id) if command_id else None
        if command_id:
            with self._lock:
                self.sends[command_id.upper()] = self.sends.get(command_id.upper(), 0) + 1
        with shell.cond:
            events = shell.feed(_b64(stream.text), pipeline_id)
        self._dispatch(shell, events)
        return wsman.reply(request, ET.Element(f"{{{NS['rsp']}}}SendResponse"))

    def _receive(self, request: wsman.WSManRequest, shell: _Shell) -> bytes:
        desired = request.body.find("rsp:DesiredStream", NS) if request.body is not None else None
        command_id = desired.get("CommandId") if desired is not None else None
        target = uuid.UUID(command_id) if command_id else None
        # Block until data arrives (an immediate empty reply makes pypsrp spin), else the timeout fault.
        deadline = time.monotonic() + min(request.operation_timeout, self.receive_wait)
        budget = max(request.max_envelope_size * 3 // 4 - 4096, FRAGMENT_SIZE)
        chunks: list[bytes] = []
        with shell.cond:
            replay = shell.last_receive.get(target)
            if replay is not None and replay[0] == request.message_id:
                return replay[1]
            while not shell.outbox[target] and target not in shell.finished:
                remaining = deadline - time.monotonic()
                if shell.closed or remaining <= 0:
                    raise wsman.WSManFault(
                        wsman.ERROR_OPERATION_TIMEOUT,
                        "The WS-Management service cannot complete the operation within the time "
                        "specified in OperationTimeout.",
                        subcode="w:TimedOut",
                    )
                shell.cond.wait(remaining)
            queue, size = shell.outbox[target], 0
            while queue and (not chunks or size + len(queue[0]) <= budget):
                size += len(queue[0])
                chunks.append(queue.popleft())
            done = target is not None and target in shell.finished and not queue
            if done:
                shell.finished.discard(target)
                shell.outbox.pop(target, None)
                shell.pool.pipeline_table.pop(target, None)

        rsp = NS["rsp"]
        response = ET.Element(f"{{{rsp}}}ReceiveResponse")
        for chunk in chunks:
            attrs = {"Name": "stdout"} | ({"CommandId": command_id.upper()} if command_id else {})
            ET.SubElement(response, f"{{{rsp}}}Stream", attrs).text = base64.b64encode(chunk).decode()
        if command_id:
            state = wsman.COMMAND_STATE_DONE if done else wsman.COMMAND_STATE_RUNNING
            ET.SubElement(
                response, f"{{{rsp}}}CommandState", {"CommandId": command_id.upper(), "State": state}
            )
        payload = wsman.reply(request, response)
        with shell.cond:
            shell.last_receive[target] = (request.message_id, payload)
        return payload

    def _signal(self, request: wsman.WSManRequest, shell: _Shell) -> bytes:
        command_id = request.body.get("CommandId") if request.body is not None else None
        if command_id:
            # A terminate or Ctrl+C: the cmdlet already ran to completion; forget the pipeline.
            target = uuid.UUID(command_id)
            with shell.cond:
                shell.pool.pipeline_table.pop(target, None)
                shell.outbox.pop(target, None)
                shell.finished.discard(target)
        return wsman.reply(request, ET.Element(f"{{{NS['rsp']}}}SignalResponse"))

    def _delete(self, request: wsman.WSManRequest, shell: _Shell) -> bytes:
        with self._lock:
            self._shells.pop(shell.id, None)
        with shell.cond:
            shell.closed = True
            shell.cond.notify_all()
        return wsman.reply(request)

    # --- pipelines -----------------------------------------------------------------------------------------

    def _dispatch(self, shell: _Shell, events: list[object]) -> None:
        for event in events:
            if isinstance(event, CreatePipelineEvent):
                with shell.cond:
                    pipeline = shell.pool.pipeline_table[event.pipeline_id]
                threading.Thread(
                    target=self._run_pipeline, args=(shell, pipeline), name="psrp-pipeline", daemon=True
                ).start()

    def _run_pipeline(self, shell: _Shell, pipeline: ServerPipeline) -> None:
        with shell.cond:
            metadata = pipeline.metadata
            pipeline.start()
            shell.flush()
        outcome = self._execute(metadata)
        with shell.cond:
            if shell.closed:
                return
            for message in outcome.warnings:
                pipeline.write_warning(message)
        # Serialise large outputs in slices, releasing the lock between them, so that a waiting Receive
        # ships the first objects while the rest are still being serialised.
        for start in range(0, len(outcome.output), OUTPUT_SLICE):
            with shell.cond:
                if shell.closed:
                    return
                for obj in outcome.output[start : start + OUTPUT_SLICE]:
                    pipeline.write_output(obj)
                shell.flush()
        with shell.cond:
            if shell.closed:
                return
            for record in outcome.errors:
                pipeline.prepare_message(record, message_type=PSRPMessageType.ErrorRecord)
            if outcome.terminating is None:
                pipeline.complete()
            else:
                _fail(pipeline, outcome.terminating)
            shell.finished.add(pipeline.pipeline_id)
            shell.flush()

    def _execute(self, metadata: object) -> Outcome:
        outcome = Outcome()
        cmdlet, raw_parameters, refusal = gateway_cmdlets.describe(metadata)  # type: ignore[arg-type]
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
        if cmdlet not in self.cmdlets:
            outcome.terminating = gateway_cmdlets.command_not_found(cmdlet)
            return outcome
        with self._runner_lock:
            try:
                rows = self.runner.run(cmdlet, parameters)
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


def _b64(text: str | None) -> bytes:
    try:
        return base64.b64decode((text or "").strip(), validate=True)
    except binascii.Error:
        raise wsman.WSManFault(wsman.ERROR_INTERNAL, "stream data is not base64") from None


def server_ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A TLS 1.2+ server context for the gateway's certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context
