"""A real BIND 9 `named` on loopback serving contoso.com (or another zone) with TSIG keys: for `make demo`
and the DNS tests."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

ZONE = "contoso.com"
KEY_NAME = "stagectl-key"
READONLY_KEY_NAME = "readonly-key"  # a key the server knows but never lets update: REFUSED
START_DEADLINE = 15.0  # seconds; BIND answers ~0.2 s after start, this only bounds a broken start

# The zone every test starts from (contract §2 example, before the cutover). SOA refresh is long so a
# secondary without NOTIFY stays behind for the whole test.
ZONE_TEXT = """\
$ORIGIN contoso.com.
$TTL 3600
@            3600 IN SOA ns1.contoso.com. hostmaster.contoso.com. 1 86400 3600 604800 300
@            3600 IN NS  ns1.contoso.com.
ns1          3600 IN A   127.0.0.1
@            3600 IN MX  10 mail.contoso.com.
@            3600 IN TXT "v=spf1 mx -all"
@            3600 IN TXT "MS=ms12345678"
mail         3600 IN A   192.0.2.25
"""


def named_binary() -> str:
    """The `named` executable (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("named") or ("/usr/sbin/named" if os.access("/usr/sbin/named", os.X_OK) else None)
    if found is None:
        raise RuntimeError(
            "BIND's named is not installed: run `make bind` (apt-get install bind9 bind9-utils)"
        )
    return found


def free_port() -> int:
    """A loopback port free for both UDP and TCP at the time of asking."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def new_secret() -> str:
    return base64.b64encode(os.urandom(32)).decode("ascii")


@dataclass
class Named:
    """One running `named`: its port, directory and process; `stop()` ends it by PID."""

    role: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    zone: str = ZONE

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.directory / "named.log").open("ab")
        # -g: foreground, log to stderr; no -u: the temporary directory belongs to the current user.
        self.process = subprocess.Popen(
            [named_binary(), "-g", "-4", "-n", "1", "-c", str(self.directory / "named.conf")],
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until_serving(self)

    def stop(self) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def log(self) -> str:
        return (self.directory / "named.log").read_text(errors="replace")

    def query(self, name: str, rdtype: str) -> dns.message.Message:
        """A non-recursive query over TCP, for tests that check what the server serves."""
        request = dns.message.make_query(name, rdtype)
        request.flags &= ~dns.flags.RD
        return dns.query.tcp(request, "127.0.0.1", port=self.port, timeout=3)

    def serial(self) -> int | None:
        try:
            answer = self.query(self.zone, "SOA")
        except (OSError, dns.exception.DNSException):
            return None
        if answer.rcode() != dns.rcode.NOERROR or not answer.answer:
            return None
        return int(answer.answer[0][0].serial)


def wait_until_serving(server: Named, *, serial: int | None = None) -> None:
    """Poll the zone's SOA until the server answers it authoritatively (at `serial` if given)."""
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise RuntimeError(f"named ({server.role}) exited at start:\n{server.log()[-3000:]}")
        current = server.serial()
        if current is not None and (serial is None or current >= serial):
            return
        time.sleep(0.05)
    raise RuntimeError(f"named ({server.role}) did not serve {server.zone} in time:\n{server.log()[-3000:]}")


@dataclass
class BindZone:
    """A primary (and optional secondary) serving contoso.com, with the keys the tests use."""

    primary: Named
    secondary: Named | None
    key_name: str = KEY_NAME
    secret: str = field(default_factory=new_secret)
    readonly_secret: str = field(default_factory=new_secret)

    def key_file(self, path: Path, *, name: str | None = None, secret: str | None = None) -> Path:
        """Write a BIND key file, as `tsig-keygen` does, for `keyRef: file:`."""
        path.write_text(
            f'key "{name or self.key_name}" {{\n\talgorithm hmac-sha256;\n'
            f'\tsecret "{secret or self.secret}";\n}};\n'
        )
        return path

    def stop(self) -> None:
        # The secondary first, so the primary never waits on a NOTIFY target that went away.
        if self.secondary is not None:
            self.secondary.stop()
        self.primary.stop()


def _options(directory: Path, port: int, extra: str) -> str:
    return f"""\
options {{
    directory "{directory}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    pid-file none;
    session-keyfile none;
    recursion no;
    dnssec-validation no;
    {extra}
}};
controls {{ }};
"""


def _keys(zone: BindZone) -> str:
    return (
        f'key "{zone.key_name}" {{ algorithm hmac-sha256; secret "{zone.secret}"; }};\n'
        f'key "{READONLY_KEY_NAME}" {{ algorithm hmac-sha256; secret "{zone.readonly_secret}"; }};\n'
    )


@contextmanager
def bind_zone(
    *, secondary: bool = False, notify: bool = True, extra_records: str = "", zone_name: str = ZONE
) -> Iterator[BindZone]:
    """Start a primary for contoso.com (and a secondary fed by zone transfer); stop both on exit.

    With `notify=False` the primary never tells the secondary about changes, and the long SOA
    refresh keeps the secondary behind: the lagging server of the disagreement test.
    `extra_records` (zone file lines, relative to the zone) are appended to ZONE_TEXT. `zone_name`
    serves ZONE_TEXT under another name (an A-label zone for the IDN test), contoso.com replaced by it.
    """
    root = Path(tempfile.mkdtemp(prefix="stagectl-bind-"))
    primary = Named("primary", free_port(), root / "primary", zone=zone_name)
    second = Named("secondary", free_port(), root / "secondary", zone=zone_name) if secondary else None
    zone = BindZone(primary, second)
    try:
        primary.directory.mkdir()
        (primary.directory / f"{zone_name}.db").write_text(ZONE_TEXT.replace(ZONE, zone_name) + extra_records)
        if second is not None and notify:
            notify_conf = f"notify explicit; notify-delay 0; also-notify {{ 127.0.0.1 port {second.port}; }};"
        else:
            notify_conf = "notify no;"
        (primary.directory / "named.conf").write_text(
            _options(primary.directory, primary.port, notify_conf)
            + _keys(zone)
            + f'zone "{zone_name}" {{ type primary; file "{zone_name}.db";'
            f" allow-update {{ key {zone.key_name}; }}; allow-transfer {{ 127.0.0.1; }}; }};\n"
        )
        primary.start()
        if second is not None:
            second.directory.mkdir()
            (second.directory / "named.conf").write_text(
                _options(second.directory, second.port, "notify no;")
                + _keys(zone)
                + f'zone "{zone_name}" {{ type secondary; file "{zone_name}.bak";'
                f" primaries {{ 127.0.0.1 port {primary.port}; }};"
                f" allow-notify {{ 127.0.0.1; }}; }};\n"
            )
            second.start()
        yield zone
    finally:
        zone.stop()
        shutil.rmtree(root, ignore_errors=True)
