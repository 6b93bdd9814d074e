"""A PSRP server over WSMan on 127.0.0.1 serving any CmdletRunner: HTTP(S) server, shells, pipelines."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterable
from types import TracebackType

from controller.exchange.runner import CmdletRunner
from controller.sim.gateway import wsman
from controller.sim.gateway.cmdlets import ReceivedCall
from controller.sim.gateway.faults import GatewayFaults
from controller.sim.gateway.pipelines import Pipelines
from controller.sim.gateway.shells import MAX_RECEIVE_WAIT, ReplyFilter, Shells


class PsrpGateway:
    """Serves `runner` over PSRP/WSMan at https?://127.0.0.1:PORT/wsman with Basic authentication.

    `received` lists every cmdlet call the gateway saw, in order, with Credential passwords redacted.
    For benchmarks: `round_trips` (HTTP requests served), `response_bytes` (response bodies sent) and
    `rows_written` (output objects per cmdlet). `before_reply` is a fault switch for tests (see shells);
    `faults` holds the transport fault switches (faults.py), set while the gateway serves; with `sign_in`
    the gateway answers `Connect-ExchangeOnline` itself and serves no cmdlet to a pool not signed in.
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
        before_reply: ReplyFilter | None = None,
        faults: GatewayFaults | None = None,
        sign_in: bool = False,
    ) -> None:
        self.faults = faults or GatewayFaults()
        self._pipelines = Pipelines(runner, cmdlets=cmdlets, faults=self.faults, sign_in=sign_in)
        self._server = wsman.WSManHTTPServer(
            (host, port), service=self._serve, username=username, password=password, ssl_context=ssl_context
        )
        # The shells answer Create with the server's address, known only once it is bound.
        self._shells = Shells(
            address=self.url,
            owner=username,
            receive_wait=receive_wait,
            on_events=self._pipelines.start,
            before_reply=before_reply,
            faults=self.faults,
        )
        self._thread: threading.Thread | None = None

    @property
    def received(self) -> list[ReceivedCall]:
        return self._pipelines.received

    @property
    def sends(self) -> dict[str, int]:
        """Command id -> Send requests carrying its data (fragmentation checks)."""
        return self._shells.sends

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def round_trips(self) -> int:
        """HTTP requests served so far, authenticated or not."""
        return self._server.request_count

    @property
    def response_bytes(self) -> int:
        """Bytes of HTTP response bodies written so far (SOAP envelopes and faults)."""
        return self._server.response_bytes

    @property
    def rows_written(self) -> dict[str, int]:
        """Cmdlet -> output objects its pipelines wrote so far (a copy)."""
        return dict(self._pipelines.rows_written)

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        assert isinstance(host, str)  # an AF_INET socket's address is text; typeshed allows bytes too
        scheme = "https" if self._server.ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}/wsman"

    def start(self) -> PsrpGateway:
        self._thread = threading.Thread(target=self._server.serve_forever, name="psrp-gateway", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._shells.close_all()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> PsrpGateway:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _serve(self, request: wsman.WSManRequest) -> bytes:
        return self._shells.handle(request)


def server_ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A TLS 1.2+ server context for the gateway's certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context
