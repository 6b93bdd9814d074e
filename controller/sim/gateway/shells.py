"""The gateway's WSMan shells, one runspace pool each: Create, Command, Send, Receive, Signal, Delete."""

from __future__ import annotations

import base64
import binascii
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree as ET

from psrpcore import CreatePipelineEvent, PSRPEvent, ServerPipeline, ServerRunspacePool
from psrpcore._payload import PSRPPayload, StreamType

from controller.sim.gateway import wsman
from controller.sim.gateway.faults import GatewayFaults

NS = wsman.NS
FRAGMENT_SIZE = 32 * 1024  # outgoing PSRP fragments; several fit in one Receive reply
MAX_RECEIVE_WAIT = 30.0  # seconds a Receive may block, whatever OperationTimeout the client asks for

ROOM_POLL = 1.0  # seconds between checks that a pipeline waiting for room in its outbox is still wanted

Events = list[PSRPEvent[Any, Any]]


@dataclass(frozen=True, slots=True)
class Taken:
    """The fragments one Receive took from an outbox, and whether they end the pipeline's output."""

    message_id: str
    chunks: tuple[bytes, ...]
    done: bool


class Shell:
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
        # pypsrp re-sends a Receive whose HTTP read timed out, with the same MessageID: it gets the fragments
        # the first one took, else they are lost (see take()).
        self.last_receive: dict[uuid.UUID | None, Taken] = {}
        self.cmdlets: dict[uuid.UUID, str] = {}  # pipeline -> its cmdlet, once known (fault switches)
        self.signed_in = False  # Connect-ExchangeOnline succeeded in this runspace pool
        self._closed = False

    def feed(self, data: bytes, pipeline_id: uuid.UUID | None) -> Events:
        """Hand incoming PSRP bytes to the pool; return the complete messages (events) they finished."""
        self.fragments_in[pipeline_id] += 1
        self.pool.receive_data(PSRPPayload(data, StreamType.default, pipeline_id))
        events: Events = []
        while (event := self.pool.next_event()) is not None:
            events.append(event)
        self.flush()
        return events

    def flush(self) -> None:
        """Move whatever psrpcore queued into the per-pipeline outboxes and wake a waiting Receive."""
        while (payload := self.pool.data_to_send(FRAGMENT_SIZE)) is not None:
            self.outbox[payload.pipeline_id].append(payload.data)
        self.cond.notify_all()

    def take(self, target: uuid.UUID | None, message_id: str, budget: int) -> Taken:
        """Take up to `budget` bytes of `target`'s outgoing fragments for the Receive `message_id`.

        What is taken is recorded in the same hold of the lock: a re-sent Receive (same MessageID) that
        arrives while the first one's reply is still being built or written gets these fragments again
        instead of the next ones. The record is replaced only by the next Receive, which the client sends
        only after it has read this reply.
        """
        queue, size, chunks = self.outbox[target], 0, list[bytes]()
        while queue and (not chunks or size + len(queue[0]) <= budget):
            size += len(queue[0])
            chunks.append(queue.popleft())
        done = target is not None and target in self.finished and not queue
        if done:
            assert target is not None
            self.forget(target)
        taken = Taken(message_id, tuple(chunks), done)
        self.last_receive[target] = taken
        self.cond.notify_all()  # a pipeline waiting for room in its outbox
        return taken

    def replay(self, target: uuid.UUID | None, message_id: str) -> Taken | None:
        """What an earlier Receive with this MessageID took, if this one is the client's resend of it."""
        taken = self.last_receive.get(target)
        return taken if taken is not None and taken.message_id == message_id else None

    def is_live(self, pipeline_id: uuid.UUID) -> bool:
        """The pipeline is still served: not finished and taken, not signalled, the shell not closed."""
        return not self._closed and pipeline_id in self.pool.pipeline_table

    def pending(self, target: uuid.UUID | None) -> int:
        """Bytes queued for `target` that no Receive has taken yet."""
        return sum(len(chunk) for chunk in self.outbox.get(target, ()))

    def wait_for_room(self, pipeline_id: uuid.UUID, limit: int) -> bool:
        """Block (lock released) while the pipeline has more than `limit` bytes unsent; False if it is gone.

        This is what lets a Receive in: a thread that releases the lock and re-takes it at once (as the
        serialising pipeline does between slices) starves the handler threads waiting for it.
        """
        while self.pending(pipeline_id) > limit:
            if not self.is_live(pipeline_id):
                return False
            self.cond.wait(ROOM_POLL)
        return self.is_live(pipeline_id)

    def forget(self, pipeline_id: uuid.UUID) -> None:
        """Drop a pipeline that is done with: its psrpcore state, what it left unsent, its finished mark."""
        self.pool.pipeline_table.pop(pipeline_id, None)
        self.outbox.pop(pipeline_id, None)
        self.finished.discard(pipeline_id)
        self.cmdlets.pop(pipeline_id, None)
        self.cond.notify_all()

    def forget_replays(self) -> None:
        """Drop the last replies of pipelines gone: a new Command means the client read them."""
        for target in [t for t in self.last_receive if t is not None and t not in self.pool.pipeline_table]:
            del self.last_receive[target]

    def close(self) -> None:
        """Wake every waiting Receive (it faults) and stop the running pipelines from writing more."""
        with self.cond:
            self._closed = True
            self.cond.notify_all()

    def is_closed(self) -> bool:
        """Asked again at each step (a method, not a flag to narrow): another thread may close the shell."""
        return self._closed


EventSink = Callable[[Shell, Events], None]
# Fault injection for tests: sees a Receive reply's fragment payloads (and its command id) just before the
# reply goes out, and returns the payloads to send instead.
ReplyFilter = Callable[[str | None, list[bytes]], list[bytes]]


class Shells:
    """The gateway's open shells and the WSMan actions on them; finished PSRP messages go to `on_events`.

    `sends` counts, per command id, the Send requests that carried its data (fragmentation checks).
    """

    def __init__(
        self,
        *,
        address: str,
        owner: str,
        receive_wait: float,
        on_events: EventSink,
        before_reply: ReplyFilter | None = None,
        faults: GatewayFaults | None = None,
    ) -> None:
        self.address = address
        self.before_reply = before_reply
        self.faults = faults or GatewayFaults()
        self.owner = owner
        self.receive_wait = receive_wait
        self.on_events = on_events
        self.sends: dict[str, int] = {}
        self._open: dict[str, Shell] = {}
        self._lock = threading.Lock()  # guards _open and sends

    def handle(self, request: wsman.WSManRequest) -> bytes:
        payload = self._dispatch(request)
        if request.action not in (wsman.ACTION_COMMAND, wsman.ACTION_RECEIVE):  # those hold per cmdlet
            self.faults.hold(request.action.rpartition("/")[2])
        return payload

    def _dispatch(self, request: wsman.WSManRequest) -> bytes:
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

    def close_all(self) -> None:
        with self._lock:
            shells = list(self._open.values())
            self._open.clear()
        for shell in shells:
            shell.close()

    def _shell(self, request: wsman.WSManRequest) -> Shell:
        shell_id = request.selectors.get("ShellId", "").upper()
        with self._lock:
            shell = self._open.get(shell_id)
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
        shell = Shell(shell_id, request.resource_uri)
        with shell.cond:
            shell.feed(_b64(creation.text), None)
        with self._lock:
            self._open[shell_id] = shell

        rsp, wsa, wsm = NS["rsp"], NS["wsa"], NS["wsman"]
        created = ET.Element(f"{{{NS['wst']}}}ResourceCreated")
        ET.SubElement(created, f"{{{wsa}}}Address").text = self.address
        params = ET.SubElement(created, f"{{{wsa}}}ReferenceParameters")
        ET.SubElement(params, f"{{{wsm}}}ResourceURI").text = request.resource_uri
        selectors = ET.SubElement(params, f"{{{wsm}}}SelectorSet")
        # The client addresses every later request with the selectors of this reply: ShellId must be there.
        ET.SubElement(selectors, f"{{{wsm}}}Selector", {"Name": "ShellId"}).text = shell_id
        info = ET.Element(f"{{{rsp}}}Shell")
        for name, value in (
            ("ShellId", shell_id),
            ("ResourceUri", request.resource_uri),
            ("Owner", self.owner),
            ("ClientIP", "127.0.0.1"),
            ("IdleTimeOut", "PT7200.000S"),
            ("InputStreams", "stdin pr"),
            ("OutputStreams", "stdout"),
        ):
            ET.SubElement(info, f"{{{rsp}}}{name}").text = value
        return wsman.reply(request, created, info)

    def _command(self, request: wsman.WSManRequest, shell: Shell) -> bytes:
        body = request.body
        if body is None:
            raise wsman.WSManFault(wsman.ERROR_INTERNAL, "Command without CommandLine")
        command_id = (body.get("CommandId") or str(uuid.uuid4())).upper()
        argument = body.find("rsp:Arguments", NS)
        pipeline_id = uuid.UUID(command_id)
        with shell.cond:
            shell.forget_replays()
            ServerPipeline(
                shell.pool, pipeline_id
            )  # must exist before its CreatePipeline message is processed
            events = shell.feed(_b64(argument.text if argument is not None else ""), pipeline_id)
            cmdlet = _cmdlet_of(shell, pipeline_id, events)
        if self.faults.expiring(cmdlet):
            # The gateway forgot its sessions before this Command came: it faults and runs nothing.
            self.close_all()
            raise wsman.WSManFault(
                wsman.ERROR_INVALID_SELECTORS,
                "The request for the Windows Remote Shell with ShellId was not found.",
            )
        self.on_events(shell, events)
        response = ET.Element(f"{{{NS['rsp']}}}CommandResponse")
        ET.SubElement(response, f"{{{NS['rsp']}}}CommandId").text = command_id
        payload = wsman.reply(request, response)
        self.faults.hold("Command", cmdlet)  # the pipeline runs meanwhile
        return payload

    def _send(self, request: wsman.WSManRequest, shell: Shell) -> bytes:
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
            if pipeline_id is not None:  # a large CreatePipeline ends in a Send
                _cmdlet_of(shell, pipeline_id, events)
        self.on_events(shell, events)
        return wsman.reply(request, ET.Element(f"{{{NS['rsp']}}}SendResponse"))

    def _receive(self, request: wsman.WSManRequest, shell: Shell) -> bytes:
        desired = request.body.find("rsp:DesiredStream", NS) if request.body is not None else None
        command_id = desired.get("CommandId") if desired is not None else None
        target = uuid.UUID(command_id) if command_id else None
        # Block until data arrives (an immediate empty reply makes pypsrp spin), else the timeout fault.
        deadline = time.monotonic() + min(request.operation_timeout, self.receive_wait)
        budget = max(request.max_envelope_size * 3 // 4 - 4096, FRAGMENT_SIZE)
        with shell.cond:
            cmdlet = shell.cmdlets.get(target) if target is not None else None  # before take() forgets it
            while (taken := shell.replay(target, request.message_id)) is None:
                if shell.outbox.get(target) or (target is not None and target in shell.finished):
                    taken = shell.take(target, request.message_id, budget)
                    break
                if target is not None and target not in shell.pool.pipeline_table:
                    # Finished and read to the end, stopped, or never created: waiting would only make the
                    # client poll for ever (it ignores the timeout fault), so say the command is gone.
                    raise wsman.WSManFault(
                        wsman.ERROR_INVALID_SELECTORS,
                        f"The command {command_id} is not running in this shell.",
                    )
                remaining = deadline - time.monotonic()
                if shell.is_closed() or remaining <= 0:
                    raise wsman.WSManFault(
                        wsman.ERROR_OPERATION_TIMEOUT,
                        "The WS-Management service cannot complete the operation within the time "
                        "specified in OperationTimeout.",
                        subcode="w:TimedOut",
                    )
                shell.cond.wait(remaining)
        chunks = list(taken.chunks)
        if chunks and target is not None:
            self.faults.drop(cmdlet)  # may close the connection: the output taken is lost
        self.faults.hold("Receive", cmdlet)
        if self.before_reply is not None:
            chunks = self.before_reply(command_id, chunks)
        rsp = NS["rsp"]
        response = ET.Element(f"{{{rsp}}}ReceiveResponse")
        for chunk in chunks:
            attrs = {"Name": "stdout"} | ({"CommandId": command_id.upper()} if command_id else {})
            ET.SubElement(response, f"{{{rsp}}}Stream", attrs).text = base64.b64encode(chunk).decode()
        if command_id:
            state = wsman.COMMAND_STATE_DONE if taken.done else wsman.COMMAND_STATE_RUNNING
            ET.SubElement(
                response, f"{{{rsp}}}CommandState", {"CommandId": command_id.upper(), "State": state}
            )
        return wsman.reply(request, response)

    def _signal(self, request: wsman.WSManRequest, shell: Shell) -> bytes:
        command_id = request.body.get("CommandId") if request.body is not None else None
        if command_id:
            # A terminate or Ctrl+C: the cmdlet already ran to completion; forget the pipeline.
            with shell.cond:
                shell.forget(uuid.UUID(command_id))
        return wsman.reply(request, ET.Element(f"{{{NS['rsp']}}}SignalResponse"))

    def _delete(self, request: wsman.WSManRequest, shell: Shell) -> bytes:
        with self._lock:
            self._open.pop(shell.id, None)
        shell.close()
        return wsman.reply(request)


def _cmdlet_of(shell: Shell, pipeline_id: uuid.UUID, events: Events) -> str | None:
    """The first command of the pipeline these events created, noted on the shell (fault switches)."""
    if not any(isinstance(event, CreatePipelineEvent) for event in events):
        return None
    pipeline = shell.pool.pipeline_table.get(pipeline_id)
    metadata = pipeline.metadata if pipeline is not None else None
    commands = getattr(metadata, "commands", None) or []
    name = str(commands[0].command_text) if commands else None
    if name is not None:
        shell.cmdlets[pipeline_id] = name
    return name


def _b64(text: str | None) -> bytes:
    try:
        return base64.b64decode((text or "").strip(), validate=True)
    except binascii.Error:
        raise wsman.WSManFault(wsman.ERROR_INTERNAL, "stream data is not base64") from None
