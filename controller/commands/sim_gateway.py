"""`stagectl sim-gateway --state FILE`: serve the Exchange simulator over real PSRP/WSMan on 127.0.0.1."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from controller import errors, secrets


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sim-gateway",
        help="serve the simulator over PSRP (WSMan) until SIGTERM/SIGINT; prints its URL first",
    )
    parser.add_argument(
        "--state", required=True, type=Path, metavar="FILE", help="the simulator's state file"
    )
    parser.add_argument(
        "--port", type=int, default=0, metavar="N", help="TCP port on 127.0.0.1 (0: a free one)"
    )
    parser.add_argument("--tls", action="store_true", help="serve HTTPS (needs --cert and --key)")
    parser.add_argument("--cert", type=Path, metavar="F", help="the server certificate chain (PEM)")
    parser.add_argument("--key", type=Path, metavar="F", help="its private key (PEM)")
    parser.add_argument(
        "--user", default="stagectl", metavar="U", help="the Basic-auth user (default: stagectl)"
    )
    parser.add_argument(
        "--password-ref",
        default="env:STAGECTL_GATEWAY_PASSWORD",
        metavar="REF",
        help="env:NAME or file:PATH holding the Basic-auth password (default: env:STAGECTL_GATEWAY_PASSWORD)",
    )
    parser.add_argument(
        "--sign-in",
        action="store_true",
        help="act as the ExchangeOnlineManagement host: answer Connect-ExchangeOnline and refuse cmdlets "
        "before it (rehearse a configuration with bootstrap: connect-exchangeonline)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from controller.sim.exchange.store import SimRunner
    from controller.sim.gateway.server import PsrpGateway, server_ssl_context

    if not args.state.exists():
        raise errors.InvalidInput(
            f"{args.state}: no simulator state here; create it with `stagectl sim init`"
        )
    if args.tls and not (args.cert and args.key):
        raise errors.InvalidInput("--tls needs --cert FILE and --key FILE")
    if not args.tls and (args.cert or args.key):
        raise errors.InvalidInput("--cert/--key are used only with --tls")
    password = secrets.resolve(args.password_ref)
    context = None
    if args.tls:
        try:
            context = server_ssl_context(str(args.cert), str(args.key))
        except (OSError, ValueError) as error:
            raise errors.InvalidInput(f"--cert/--key: cannot load the certificate: {error}") from None
    try:
        gateway = PsrpGateway(
            SimRunner(args.state),
            username=args.user,
            password=password,
            port=args.port,
            ssl_context=context,
            sign_in=args.sign_in,
        )
    except OSError as error:
        raise errors.InvalidInput(
            f"--port {args.port}: cannot listen on 127.0.0.1: {error.strerror}"
        ) from None

    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    gateway.start()
    print(gateway.url, flush=True)  # first line: scripts read the URL (and the chosen port) from here
    print(f"serving {args.state} as {args.user}; stop with SIGTERM or Ctrl+C", file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        gateway.stop()
    return 0
