"""An in-memory Exchange Online migration service with a virtual UTC clock, persisted as one JSON file.

`ExchangeSimulator` answers the migration cmdlets (EXCHANGE-FACTS §1–§4, §9) with Exchange's property
names; `SimStore` shares one simulated tenant between processes under a file lock; `SimRunner` is the
`runner.CmdletRunner` over it (one transaction per call) and `LocalRunner` the same over an object in memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.exchange.errors import ExchangeError, PermanentError, ThrottledError
from controller.secrets import Credential
from controller.sim.exchange import batches, engine
from controller.sim.exchange import state as s
from controller.sim.exchange.params import Bound, bind, fail, not_found, result_size

MICRO_DELAY = "Micro delay applied. Actual delayed: 500 msecs, Enforced"


class CmdletOutput(list[dict[str, object]]):
    """A cmdlet's output objects plus the warnings it wrote (e.g. "Micro delay applied")."""

    def __init__(self, objects: list[dict[str, object]] = (), *, warnings: list[str] | None = None) -> None:  # type: ignore[assignment]
        super().__init__(objects)
        self.warnings: list[str] = warnings or []


def _endpoint_output(endpoint: s.Endpoint) -> dict[str, object]:
    return {
        "Identity": endpoint.name,
        "EndpointType": "ExchangeOutlookAnywhere",
        "ExchangeServer": endpoint.exchange_server,
        "RpcProxyServer": endpoint.rpc_proxy_server,
        "UseAutoDiscover": endpoint.autodiscover,
        "Authentication": endpoint.authentication,
        "EmailAddress": endpoint.email_address,
        "MaxConcurrentMigrations": endpoint.max_concurrent,
        "Username": endpoint.username,
    }


def _endpoint_settings(b: Bound, endpoint: s.Endpoint) -> None:
    """Apply and check the settings New- and Set-MigrationEndpoint share (EXCHANGE-FACTS §4)."""
    credentials = b.values.get("Credentials")
    if credentials is not None:
        if not isinstance(credentials, Credential) or not credentials.username:
            raise fail(b.cmdlet, "ParameterBindingException", "Cannot bind parameter 'Credentials'.")
        endpoint.username = credentials.username
    for name, field in (
        ("ExchangeServer", "exchange_server"),
        ("RpcProxyServer", "rpc_proxy_server"),
        ("EmailAddress", "email_address"),
    ):
        if b.has(name):
            setattr(endpoint, field, b.text(name))
    authentication = b.text("Authentication")
    if authentication is not None:
        if authentication.lower() not in ("basic", "ntlm"):
            raise fail(
                b.cmdlet, "ParameterBindingValidationException", "Authentication must be Basic or NTLM."
            )
        endpoint.authentication = "Basic" if authentication.lower() == "basic" else "NTLM"
    limit = b.integer("MaxConcurrentMigrations")
    if limit is not None:
        if not 1 <= limit <= s.MAX_CONCURRENT_LIMIT:
            raise fail(
                b.cmdlet,
                "ParameterBindingValidationException",
                f"MaxConcurrentMigrations must be between 1 and {s.MAX_CONCURRENT_LIMIT}.",
            )
        endpoint.max_concurrent = limit
    # MigrationJobConnectionSettingsIncomplete (EXCHANGE-FACTS §9.2): manual settings need both servers.
    missing = [
        n
        for n, v in (
            ("ExchangeServer", endpoint.exchange_server),
            ("RpcProxyServer", endpoint.rpc_proxy_server),
        )
        if not v
    ]
    if endpoint.autodiscover:
        missing = [] if endpoint.email_address else ["EmailAddress"]
    if missing:
        raise fail(
            b.cmdlet,
            "MigrationPermanentException",
            f'MigrationJobConnectionSettingsIncomplete("{missing[0]}"): the endpoint needs {missing[0]}.',
        )


def new_endpoint(state: s.SimState, b: Bound) -> list[dict[str, object]]:
    if not b.switch("ExchangeOutlookAnywhere"):
        raise fail(
            b.cmdlet, "ParameterBindingException", "The simulator serves ExchangeOutlookAnywhere only."
        )
    name = b.text("Name", required=True) or ""
    if b.values.get("Credentials") is None:
        raise fail(b.cmdlet, "ParameterBindingException", "-Credentials is required.")
    if s.key(name) in state.endpoints:
        raise fail(
            b.cmdlet, "MigrationPermanentException", f'A migration endpoint named "{name}" already exists.'
        )
    endpoint = s.Endpoint(name=name, autodiscover=b.switch("Autodiscover"))
    _endpoint_settings(b, endpoint)
    state.endpoints[s.key(name)] = endpoint
    return [_endpoint_output(endpoint)]


def set_endpoint(state: s.SimState, b: Bound) -> list[dict[str, object]]:
    identity = b.text("Identity", required=True) or ""
    current = state.endpoints.get(s.key(identity))
    if current is None:
        raise not_found(b.cmdlet, identity)
    endpoint = current.model_copy(deep=True)
    _endpoint_settings(b, endpoint)  # on a copy: a refused change leaves the endpoint as it was
    state.endpoints[s.key(identity)] = endpoint
    engine.advance_to(state, state.now)  # a larger MaxConcurrentMigrations frees slots at once
    return []


def get_endpoint(state: s.SimState, b: Bound) -> list[dict[str, object]]:
    identity = b.text("Identity")
    if identity is None:
        return [_endpoint_output(endpoint) for endpoint in state.endpoints.values()]
    endpoint = state.endpoints.get(s.key(identity))
    if endpoint is None:
        raise not_found(b.cmdlet, identity)
    return [_endpoint_output(endpoint)]


def get_recipient(state: s.SimState, b: Bound) -> list[dict[str, object]]:
    wanted = {t.lower() for t in b.strings("RecipientTypeDetails") or []}
    found = [r for r in state.recipients.values() if not wanted or r.type.value.lower() in wanted]
    identity = b.text("Identity")
    if identity is not None:
        found = [r for r in found if s.key(r.address) == s.key(identity)]
        if not found:
            raise not_found(b.cmdlet, identity)
    size = result_size(b)
    return [
        {
            "Identity": r.address.split("@")[0],
            "PrimarySmtpAddress": r.address,
            "RecipientTypeDetails": r.type.value,
        }
        for r in found[:size]
    ]


Handler = Callable[[s.SimState, Bound], list[dict[str, object]]]
ENDPOINT_SETTINGS = (
    "Credentials",
    "EmailAddress",
    "ExchangeServer",
    "RpcProxyServer",
    "Authentication",
    "MaxConcurrentMigrations",
)
CMDLETS: dict[str, tuple[tuple[str, ...], Handler]] = {
    "New-MigrationEndpoint": (
        ("ExchangeOutlookAnywhere", "Name", "Autodiscover", *ENDPOINT_SETTINGS),
        new_endpoint,
    ),
    "Set-MigrationEndpoint": (("Identity", *ENDPOINT_SETTINGS), set_endpoint),
    "Get-MigrationEndpoint": (("Identity",), get_endpoint),
    "New-MigrationBatch": (
        (
            "Name",
            "SourceEndpoint",
            "CSVData",
            "AutoStart",
            "NotificationEmails",
            "StartAfter",
            "CompleteAfter",
            "TimeZone",
            "AllowUnknownColumnsInCsv",
        ),
        batches.new_batch,
    ),
    "Set-MigrationBatch": (
        (
            "Identity",
            "AddUsers",
            "CSVData",
            "NotificationEmails",
            "StartAfter",
            "CompleteAfter",
            "AllowUnknownColumnsInCsv",
        ),
        batches.set_batch,
    ),
    "Start-MigrationBatch": (("Identity",), batches.start_batch),
    "Stop-MigrationBatch": (("Identity",), batches.stop_batch),
    "Complete-MigrationBatch": (("Identity",), batches.complete_batch),
    "Remove-MigrationBatch": (("Identity",), batches.remove_batch),
    "Get-MigrationBatch": (("Identity", "ResultSize"), batches.get_batch),
    "Get-MigrationUser": (("Identity", "BatchId", "ResultSize"), batches.get_user),
    "Remove-MigrationUser": (("Identity",), batches.remove_user),
    "Get-MigrationUserStatistics": (("Identity",), batches.get_user_statistics),
    "Get-Recipient": (("Identity", "RecipientTypeDetails", "ResultSize"), get_recipient),
}
_BY_NAME = {name.lower(): name for name in CMDLETS}


class ExchangeSimulator:
    """The simulated tenant: cmdlets, the virtual clock and fault injection over one `SimState`."""

    def __init__(
        self,
        state: s.SimState | None = None,
        *,
        now: datetime | None = None,
        completion: s.Completion = s.Completion.SUPPORTED,
    ) -> None:
        self.state = state or s.SimState(
            now=(now or datetime.now(UTC)).astimezone(UTC), completion=completion
        )

    @property
    def now(self) -> datetime:
        return self.state.now

    def advance(self, delta: timedelta) -> None:
        """Move the virtual clock forward and the migration with it."""
        if delta < timedelta(0):
            raise ValueError("the simulator's clock only moves forward")
        engine.advance_to(self.state, self.state.now + delta)

    def call(self, cmdlet: str, parameters: Mapping[str, object], *, by_hand: bool = False) -> CmdletOutput:
        """Run one cmdlet; count it; apply injected throttling. Raises an ExchangeError as Exchange would.

        `by_hand` is an administrator's own change (drift): neither counted nor throttled.
        """
        name = _BY_NAME.get(cmdlet.lower())
        if name is None:
            raise fail(
                cmdlet[:80],
                "CommandNotFoundException",
                f"The term '{cmdlet[:80]}' is not recognized as the name of a cmdlet, function, script "
                "file, or operable program.",
            )
        allowed, handler = CMDLETS[name]
        if by_hand:
            return CmdletOutput(handler(self.state, bind(name, parameters, allowed)))
        self.state.calls[name] = self.state.calls.get(name, 0) + 1
        warnings: list[str] = []
        throttle = self.state.throttles.get(name.lower())
        if throttle is not None:
            throttle.count -= 1
            if throttle.count <= 0:
                del self.state.throttles[name.lower()]
            if throttle.mode == s.ThrottleMode.ERROR:
                raise ThrottledError(f"{name}: the server is busy; {MICRO_DELAY}.", delay=0.5)
            warnings.append(MICRO_DELAY)
        return CmdletOutput(handler(self.state, bind(name, parameters, allowed)), warnings=warnings)

    # Fixtures: the directory and the faults a test or `stagectl sim` sets up.

    def add_recipient(self, address: str, kind: s.RecipientType = s.RecipientType.MAIL_USER) -> None:
        self.state.recipients[s.key(address)] = s.Recipient(address=address.strip(), type=kind)

    def recipient_type(self, address: str) -> s.RecipientType | None:
        recipient = self.state.recipients.get(s.key(address))
        return recipient.type if recipient else None

    def set_sync_time(self, address: str, delta: timedelta) -> None:
        self.state.sync_seconds[s.key(address)] = delta.total_seconds()

    def fail_user(self, address: str, *, exception_type: str, message: str, times: int | None = None) -> None:
        """Make the user's next syncs fail; after `times` failures it syncs (None: it keeps failing)."""
        self.state.failures[s.key(address)] = s.InjectedFailure(
            type=exception_type, message=message, remaining=times
        )

    def clear_failure(self, address: str) -> None:
        self.state.failures.pop(s.key(address), None)

    def throttle(self, cmdlet: str, count: int, *, mode: s.ThrottleMode = s.ThrottleMode.ERROR) -> None:
        self.state.throttles[cmdlet.lower()] = s.Throttle(count=count, mode=mode)

    def set_latency(self, seconds: float) -> None:
        self.state.latency_seconds = seconds

    def calls(self, cmdlet: str | None = None) -> int:
        if cmdlet is None:
            return sum(self.state.calls.values())
        return self.state.calls.get(_BY_NAME.get(cmdlet.lower(), cmdlet), 0)

    def batch_status(self, name: str) -> str | None:
        batch = self.state.batches.get(s.key(name))
        return engine.batch_status(batch).value if batch else None

    def to_json(self) -> str:
        return self.state.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> ExchangeSimulator:
        return cls(s.SimState.model_validate_json(text))


class LocalRunner:
    """`CmdletRunner` over a simulator held in memory (tests; one process)."""

    def __init__(self, simulator: ExchangeSimulator) -> None:
        self.simulator = simulator

    def run(self, cmdlet: str, parameters: Mapping[str, object]) -> list[dict[str, object]]:
        return self.simulator.call(cmdlet, parameters)

    def close(self) -> None:
        pass


class SimStore:
    """The simulator's JSON file, shared by processes: each transaction holds an exclusive fcntl lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def create(self, simulator: ExchangeSimulator) -> None:
        """Write a new tenant, replacing any state at the path."""
        with self._locked():
            self._save(simulator)

    def load(self) -> ExchangeSimulator:
        """The tenant as it is now, read under the lock; changes to it are not saved."""
        with self._locked():
            return ExchangeSimulator.from_json(self._read())

    def now(self) -> datetime:
        """The tenant's virtual time."""
        return self.load().now

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            raise PermanentError(
                f"simulator state {self.path} does not exist; create it with `stagectl sim init`"
            ) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[ExchangeSimulator]:
        """Load, yield, save atomically; an unexpected exception discards the changes."""
        with self._locked():
            simulator = ExchangeSimulator.from_json(self._read())
            yield simulator
            self._save(simulator)

    def _save(self, simulator: ExchangeSimulator) -> None:
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(simulator.to_json())
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


class SimRunner:
    """`CmdletRunner` over a `SimStore`: each call is one transaction, so processes never lose updates."""

    def __init__(self, path: str | os.PathLike[str], *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = SimStore(path)
        self._sleep = sleep

    def run(self, cmdlet: str, parameters: Mapping[str, object]) -> list[dict[str, object]]:
        error: ExchangeError | None = None
        output = CmdletOutput()
        with self.store.transaction() as simulator:
            latency = simulator.state.latency_seconds
            try:
                output = simulator.call(cmdlet, parameters)
            except ExchangeError as refused:  # the call is still counted: keep the transaction
                error = refused
        if latency > 0:
            self._sleep(latency)  # outside the lock: a slow call must not stall other processes
        if error is not None:
            raise error
        return output

    def close(self) -> None:
        pass
