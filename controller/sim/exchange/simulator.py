"""The simulated Exchange Online tenant: its cmdlet table, virtual UTC clock and injected faults.

`ExchangeSimulator` answers the migration cmdlets (exchange-facts §1–§4, §9) with Exchange's property
names: the directory's Get-Recipient here, the endpoint and batch cmdlets in endpoints.py and batches.py.
`LocalRunner` is the `runner.CmdletRunner` over a simulator in memory; store.py keeps one in a shared file.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from controller.exchange.errors import ThrottledError
from controller.exchange.runner import CmdletOutput, project
from controller.sim.exchange import batches, endpoints, engine, opath
from controller.sim.exchange import state as s
from controller.sim.exchange.params import Bound, bind, fail, not_found, result_size

MICRO_DELAY = "Micro delay applied. Actual delayed: 500 msecs, Enforced"
BUSY_RETRY_AFTER = 0.5  # seconds: the "Retry after" a throttled call carries (`busy` sets its own)


def get_recipient(state: s.SimState, b: Bound) -> list[dict[str, object]]:
    wanted = {t.lower() for t in b.strings("RecipientTypeDetails") or []}
    identity = b.text("Identity")
    pool: Mapping[str, s.Recipient] = state.recipients
    if identity is not None:  # one lookup, then the filters over what it found
        one = state.recipients.get(s.key(identity))
        pool = {s.key(identity): one} if one is not None else {}
    found: Iterable[s.Recipient] = (
        r for r in _filtered(pool, b) if not wanted or r.type.value.lower() in wanted
    )
    if identity is not None:
        found = list(found)
        if not found:
            raise not_found(b.cmdlet, identity)
    size = result_size(b)
    return [_recipient_output(r) for r in itertools.islice(found, size)]


def _recipient_output(r: s.Recipient) -> dict[str, object]:
    """A recipient as Get-Recipient shows it: IsDirSynced and SKUAssigned are Get-Recipient properties (the
    filter-properties reference; exchange-facts §6), MailUser before the migration, UserMailbox after."""
    return {
        "Identity": r.address.split("@")[0],
        "PrimarySmtpAddress": r.address,
        "RecipientTypeDetails": r.type.value,
        "IsDirSynced": r.dir_synced,
        "SKUAssigned": r.licensed,
    }


def _filtered(pool: Mapping[str, s.Recipient], b: Bound) -> Iterable[s.Recipient]:
    """The recipients an OPATH -Filter keeps (exchange-facts §10); the controller's filter of addresses
    is answered by lookup, any other by a scan."""
    text = b.text("Filter")
    if text is None:
        return pool.values()
    addresses = opath.equal_values(text, "PrimarySmtpAddress")
    if addresses is not None:
        return [r for a in sorted(addresses) if (r := pool.get(a)) is not None]
    try:
        predicate = opath.compile_filter(text)
    except opath.FilterError as error:
        raise fail(b.cmdlet, "ParserException", f"Invalid filter syntax: {error}") from None
    return (r for r in pool.values() if predicate(_recipient_output(r)))


Handler = Callable[[s.SimState, Bound], list[dict[str, object]]]
CMDLETS: dict[str, tuple[tuple[str, ...], Handler]] = {
    "New-MigrationEndpoint": (
        ("ExchangeOutlookAnywhere", "Name", "Autodiscover", *endpoints.SETTINGS),
        endpoints.new_endpoint,
    ),
    "Set-MigrationEndpoint": (("Identity", *endpoints.SETTINGS), endpoints.set_endpoint),
    "Get-MigrationEndpoint": (("Identity",), endpoints.get_endpoint),
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
    "Get-Recipient": (("Identity", "RecipientTypeDetails", "Filter", "ResultSize"), get_recipient),
    "Test-MigrationServerAvailability": (endpoints.TEST_PARAMETERS, endpoints.test_availability),
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
        mode: s.ThrottleMode | None = None
        retry_after = BUSY_RETRY_AFTER
        if throttle is not None:
            throttle.count -= 1
            if throttle.count <= 0:
                del self.state.throttles[name.lower()]
            mode = throttle.mode
        elif self.state.busy is not None:
            mode, retry_after = self.state.busy.draw(), self.state.busy.retry_after
        if mode == s.ThrottleMode.ERROR:
            raise ThrottledError(f"{name}: the server is busy; {MICRO_DELAY}.", delay=retry_after)
        if mode == s.ThrottleMode.WARNING:
            warnings.append(MICRO_DELAY)
        return CmdletOutput(handler(self.state, bind(name, parameters, allowed)), warnings=warnings)

    # Fixtures: the directory and the faults a test or `stagectl sim` sets up.

    def add_recipient(
        self,
        address: str,
        kind: s.RecipientType = s.RecipientType.MAIL_USER,
        *,
        dir_synced: bool = True,
        licensed: bool = True,
    ) -> None:
        """A directory entry: a mail user directory sync made (exchange-facts §6) unless said otherwise —
        `dir_synced=False` is a cloud-only one; `kind` UserMailbox a mailbox already."""
        self.state.recipients[s.key(address)] = s.Recipient(
            address=address.strip(), type=kind, dir_synced=dir_synced, licensed=licensed
        )

    def remove_recipient(self, address: str) -> None:
        """The member is missing in Exchange Online (directory sync has not made him, or he was deleted)."""
        self.state.recipients.pop(s.key(address), None)

    def fail_endpoint_check(self, detail: str | None) -> None:
        """Test-MigrationServerAvailability answers Result Failed with this ErrorDetail (exchange-facts
        §9.2) until called with None."""
        self.state.endpoint_check_failure = detail

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

    def fail_documented(self, address: str, row: str, *, times: int | None = None) -> str:
        """Make the user's next syncs fail with the text of an error catalogue row (exchange-facts §9.1);
        returns the ErrorSummary. Until `clear_failure` (the cause fixed) unless `times` says otherwise."""
        kind, message, summary = engine.documented_failure(row, address.strip())
        self.state.failures[s.key(address)] = s.InjectedFailure(
            type=kind, message=message, remaining=times, summary=summary
        )
        return summary

    def clear_failure(self, address: str) -> None:
        """The cause is fixed: the user's next sync (after Start-MigrationBatch retries it) succeeds."""
        self.state.failures.pop(s.key(address), None)

    def throttle(self, cmdlet: str, count: int, *, mode: s.ThrottleMode = s.ThrottleMode.ERROR) -> None:
        self.state.throttles[cmdlet.lower()] = s.Throttle(count=count, mode=mode)

    def busy(
        self, rate: float, *, seed: int = 0, mode: s.ThrottleMode | None = None, retry_after: float = 0.1
    ) -> None:
        """Busy `rate` of every later call (0.3: 30%), drawn from `seed`; see `state.Busy`. 0 stops it."""
        self.state.busy = (
            s.Busy(rate=rate, seed=seed, mode=mode, retry_after=retry_after) if rate > 0 else None
        )

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

    def run(
        self, cmdlet: str, parameters: Mapping[str, object], select: Sequence[str] = ()
    ) -> list[dict[str, object]]:
        return project(self.simulator.call(cmdlet, parameters), select)

    def close(self) -> None:
        pass
