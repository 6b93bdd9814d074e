"""The WSMan (SOAP over HTTP) half of the PSRP gateway: parse requests, build replies and faults, serve."""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import socket
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.etree import ElementTree as ET

from controller.sim.gateway.faults import DropConnection

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "wsmanfault": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "wst": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "pwsh": "http://schemas.microsoft.com/powershell",
}
for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)

ACTION_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
ACTION_DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
ACTION_GET = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get"
_SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
ACTION_COMMAND = f"{_SHELL}/Command"
ACTION_SEND = f"{_SHELL}/Send"
ACTION_RECEIVE = f"{_SHELL}/Receive"
ACTION_SIGNAL = f"{_SHELL}/Signal"
COMMAND_STATE_DONE = f"{_SHELL}/CommandState/Done"
COMMAND_STATE_RUNNING = f"{_SHELL}/CommandState/Running"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"

# WSMan fault codes as Windows sends them (pypsrp compares the numbers).
ERROR_OPERATION_TIMEOUT = 2150858793
ERROR_INVALID_SELECTORS = 2150858843
ERROR_ACTION_NOT_SUPPORTED = 2150858754
ERROR_INTERNAL = 2150858752

MAX_REQUEST_BYTES = 4 * 1024 * 1024  # a client may raise MaxEnvelopeSize to 500 KiB; leave headroom
_DURATION = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$")


class WSManFault(Exception):
    """A SOAP fault to send back instead of a reply."""

    def __init__(self, code: int, reason: str, *, subcode: str = "w:InternalError") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.subcode = subcode


@dataclass(slots=True)
class WSManRequest:
    """One parsed WSMan request: the headers that matter and the first element of the body."""

    action: str
    message_id: str
    resource_uri: str
    operation_timeout: float
    max_envelope_size: int
    selectors: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    body: ET.Element | None = None


def _duration_seconds(text: str | None, default: float) -> float:
    match = _DURATION.match((text or "").strip())
    if not match:
        return default
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


def parse_request(data: bytes) -> WSManRequest:
    """Parse a SOAP envelope; a malformed one is a fault, never a crash of the handler."""
    try:
        envelope = ET.fromstring(data)
    except ET.ParseError as error:
        raise WSManFault(ERROR_INTERNAL, f"malformed SOAP envelope: {error}") from None
    header = envelope.find("s:Header", NS)
    body = envelope.find("s:Body", NS)
    if header is None or body is None:
        raise WSManFault(ERROR_INTERNAL, "SOAP envelope without Header or Body")

    def text(path: str) -> str:
        element = header.find(path, NS)
        return (element.text or "").strip() if element is not None else ""

    max_envelope = text("wsman:MaxEnvelopeSize")
    return WSManRequest(
        action=text("wsa:Action"),
        message_id=text("wsa:MessageID"),
        resource_uri=text("wsman:ResourceURI"),
        operation_timeout=_duration_seconds(text("wsman:OperationTimeout"), 20.0),
        max_envelope_size=int(max_envelope) if max_envelope.isdigit() else 153600,
        selectors={
            e.get("Name", ""): (e.text or "") for e in header.findall("wsman:SelectorSet/wsman:Selector", NS)
        },
        options={
            e.get("Name", ""): (e.text or "") for e in header.findall("wsman:OptionSet/wsman:Option", NS)
        },
        body=next(iter(body), None),
    )


def _envelope(action: str, relates_to: str, children: tuple[ET.Element, ...]) -> bytes:
    envelope = ET.Element(f"{{{NS['s']}}}Envelope")
    header = ET.SubElement(envelope, f"{{{NS['s']}}}Header")
    ET.SubElement(header, f"{{{NS['wsa']}}}Action").text = action
    ET.SubElement(header, f"{{{NS['wsa']}}}MessageID").text = f"uuid:{str(uuid.uuid4()).upper()}"
    # pypsrp rejects a reply whose RelatesTo is not the MessageID it sent.
    ET.SubElement(header, f"{{{NS['wsa']}}}RelatesTo").text = relates_to
    ET.SubElement(header, f"{{{NS['wsa']}}}To").text = ANONYMOUS
    body = ET.SubElement(envelope, f"{{{NS['s']}}}Body")
    body.extend(children)
    data: bytes = ET.tostring(envelope, encoding="utf-8", xml_declaration=False)
    return data


def reply(request: WSManRequest, *children: ET.Element) -> bytes:
    """The response envelope for `request`, its Action being the request's plus "Response"."""
    return _envelope(f"{request.action}Response", request.message_id, children)


def fault(request: WSManRequest | None, error: WSManFault) -> bytes:
    """A SOAP 1.2 fault carrying a WSManFault detail with the numeric code clients match on."""
    s = NS["s"]
    element = ET.Element(f"{{{s}}}Fault")
    code = ET.SubElement(element, f"{{{s}}}Code")
    ET.SubElement(code, f"{{{s}}}Value").text = "s:Receiver"
    subcode = ET.SubElement(code, f"{{{s}}}Subcode")
    ET.SubElement(subcode, f"{{{s}}}Value").text = error.subcode
    reason = ET.SubElement(element, f"{{{s}}}Reason")
    ET.SubElement(reason, f"{{{s}}}Text", {f"{{{NS['s']}}}lang": "en-US"}).text = error.reason
    detail = ET.SubElement(element, f"{{{s}}}Detail")
    wsman_fault = ET.SubElement(
        detail, f"{{{NS['wsmanfault']}}}WSManFault", {"Code": str(error.code), "Machine": "localhost"}
    )
    ET.SubElement(wsman_fault, f"{{{NS['wsmanfault']}}}Message").text = error.reason
    relates_to = request.message_id if request is not None else ""
    return _envelope("http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", relates_to, (element,))


Service = Callable[[WSManRequest], bytes]


class _Handler(BaseHTTPRequestHandler):
    server: WSManHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: pypsrp reuses one connection for every request

    def log_message(self, format: str, *args: object) -> None:
        pass  # requests carry CLIXML with parameters; do not print them anywhere

    def _send(self, status: int, payload: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/soap+xml;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        with self.server.count_lock:
            self.server.response_bytes += len(payload)

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # compare both in constant time so that timing tells nothing about which one was wrong
        user_ok = hmac.compare_digest(user.encode(), self.server.username.encode())
        password_ok = hmac.compare_digest(password.encode(), self.server.password.encode())
        return user_ok and password_ok

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            self.close_connection = True
            self._send(413, b"")
            return
        data = self.rfile.read(length) if length else b""
        with self.server.count_lock:
            self.server.request_count += 1
        if not self._authorised():
            self._send(401, b"", {"WWW-Authenticate": 'Basic realm="WSMAN"'})
            return
        request: WSManRequest | None = None
        try:
            request = parse_request(data)
            payload = self.server.service(request)
        except DropConnection:  # an injected fault: the connection goes away without a reply
            self.close_connection = True
            return
        except WSManFault as error:
            self._send(500, fault(request, error))
            return
        except Exception as error:  # a bug in the gateway: a fault for the client, the server keeps serving
            self._send(
                500, fault(request, WSManFault(ERROR_INTERNAL, f"gateway error: {type(error).__name__}"))
            )
            return
        self._send(200, payload)


class WSManHTTPServer(ThreadingHTTPServer):
    """A threading HTTP(S) server that answers WSMan POSTs with `service` behind Basic authentication."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        *,
        service: Service,
        username: str,
        password: str,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.service = service
        self.username = username
        self.password = password
        self.ssl_context = ssl_context
        self.request_count = 0  # HTTP round trips served (benchmarks)
        self.response_bytes = 0  # response bodies written to the sockets (benchmarks)
        self.count_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, object]:
        sock, address = super().get_request()
        # Without TCP_NODELAY small SOAP replies wait on delayed ACKs: ~130 ms per call instead of ~9 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            # The handshake runs on first read, in the handler thread, so a slow client cannot stall accept().
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up mid-request (or fails the TLS handshake) is not worth a traceback
