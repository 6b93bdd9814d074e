"""Complete-MigrationBatch refusals (exchange-facts §8, §9.4): "not supported" is decided by the resource key
`CompleteMigrationBatchNotSupported`, never by the exception type alone; the other refusals are ordinary
failures. The decision, what the client reads from an ErrorRecord, the simulator's refusals over real PSRP,
and what the applier learns from each."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from pypsrp.complex_objects import GenericComplexObject

from controller.exchange.errors import CmdletError
from controller.exchange.psrp import PsrpRunner
from controller.exchange.psrp_values import record_error
from controller.exchange.refusals import Refusal, completion_refusal
from controller.model.actions import ExchangeAction, Plan
from controller.model.snapshot import Memory
from controller.runtime.applier import apply_plan
from controller.secrets import Credential
from controller.sim.exchange import state as sim_state
from controller.sim.exchange.simulator import ExchangeSimulator
from controller.sim.exchange.store import SimRunner, SimStore
from tests.support.gateway import PASSWORD, running_gateway, settings_for

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
FAMILY = "MigrationBatchCannotBeCompletedException"
COMPLETE = "Complete-MigrationBatch"


def refused(message: str, *, kind: str = FAMILY, **extra: object) -> CmdletError:
    return CmdletError(COMPLETE, kind, message, category=f"Cmdlet-{kind}", **extra)  # type: ignore[arg-type]


# --- the decision ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (refused("CompleteMigrationBatchNotSupported: can't be completed."), Refusal.NOT_SUPPORTED),
        # the decompiled code raises the same key as a MigrationPermanentException too: the key decides
        (
            refused("CompleteMigrationBatchNotSupported", kind="MigrationPermanentException"),
            Refusal.NOT_SUPPORTED,
        ),
        (refused("MigrationJobCannotBeCompleted: it is Syncing."), Refusal.NOT_SYNCED),
        (refused("MigrationJobCannotRetryCompletion: it is Completed."), Refusal.ALREADY_COMPLETED),
        # the real EXO sample (exchange-facts §9.4): no key, a transient FailureCategory
        (
            refused(
                "The migration batch can't be completed due to one or more users having a last sync date "
                "older than 7 days.",
                kind="MigrationBatchCannotBeCompletedTransientException",
            ),
            Refusal.TRANSIENT,
        ),
        # the transient category wins over a key (a passing condition is never remembered)
        (
            CmdletError(
                COMPLETE,
                FAMILY,
                "CompleteMigrationBatchNotSupported",
                category="Cmdlet-MigrationBatchCannotBeCompletedTransientException",
            ),
            Refusal.TRANSIENT,
        ),
        # the exception type alone never decides "not supported"
        (refused('Migration batch "B" can\'t be completed.'), Refusal.OTHER),
        (CmdletError(COMPLETE, FAMILY, "can't be completed"), Refusal.OTHER),
        # a whole word only, and keys that contradict each other decide nothing
        (refused("CompleteMigrationBatchNotSupportedYet: no"), Refusal.OTHER),
        (refused("CompleteMigrationBatchNotSupported / MigrationJobCannotBeCompleted"), Refusal.OTHER),
    ],
)
def test_the_kind_of_refusal(error: CmdletError, expected: Refusal) -> None:
    assert completion_refusal(error) is expected


def test_the_key_counts_in_the_fully_qualified_error_id_or_the_details() -> None:
    in_id = refused(
        "The batch can't be completed.",
        error_id="[Server=X,RequestId=1,TimeStamp=1] "
        "[FailureCategory=Cmdlet-CompleteMigrationBatchNotSupported] 0BADF00D,CompleteMigrationBatch",
    )
    assert completion_refusal(in_id) is Refusal.NOT_SUPPORTED
    inner = refused("The batch can't be completed.", details=("CompleteMigrationBatchNotSupported",))
    assert completion_refusal(inner) is Refusal.NOT_SUPPORTED


# --- what the client reads from an ErrorRecord -----------------------------------------------------


def _exception(types: list[str], **properties: object) -> GenericComplexObject:
    obj = GenericComplexObject()
    obj.types = types
    obj.adapted_properties.update(properties)
    return obj


def test_record_error_keeps_the_id_and_an_inner_exceptions_text_for_the_key() -> None:
    """A record as pypsrp hands it over: the key only in an inner exception's message."""
    inner = _exception(
        ["Deserialized.Microsoft.Exchange.Migration.MigrationPermanentException"],
        Message="CompleteMigrationBatchNotSupported",
    )
    outer = _exception(
        [f"Deserialized.Microsoft.Exchange.Management.Migration.{FAMILY}", "Deserialized.System.Exception"],
        Message="The migration batch can't be completed.",
        InnerException=inner,
    )
    fq_error = (
        "[Server=AM0PR01MB0001,RequestId=abc,TimeStamp=1/1/2026 9:00:00 AM] "
        f"[FailureCategory=Cmdlet-{FAMILY}] "
        "7609A388,Microsoft.Exchange.Management.Migration.CompleteMigrationBatch"
    )
    record = SimpleNamespace(exception=outer, fq_error=fq_error, details_message=None, action=None)
    error = record_error(COMPLETE, record)
    assert isinstance(error, CmdletError)
    assert (error.exception_type, error.category) == (FAMILY, f"Cmdlet-{FAMILY}")
    assert error.error_id == fq_error
    assert "CompleteMigrationBatchNotSupported" in error.details
    assert "CompleteMigrationBatchNotSupported" not in str(error)  # matched, not shown
    assert completion_refusal(error) is Refusal.NOT_SUPPORTED
    outer.adapted_properties.pop("InnerException")
    assert completion_refusal(record_error(COMPLETE, record)) is Refusal.OTHER  # type: ignore[arg-type]


# --- the simulator's refusals over real PSRP --------------------------------------------------------


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGECTL_TEST_GATEWAY_PASSWORD", PASSWORD)


@pytest.fixture
def tenant(tmp_path: Path) -> Path:
    simulator = ExchangeSimulator(now=T0)
    for i in range(2):
        simulator.add_recipient(f"user{i}@contoso.com")
    path = tmp_path / "exchange.sqlite"
    SimStore(path).create(simulator)
    with SimStore(path).transaction() as sim:
        sim.call(
            "New-MigrationEndpoint",
            {"ExchangeOutlookAnywhere": True, "Name": "E", "ExchangeServer": "mail.contoso.com",
             "RpcProxyServer": "mail.contoso.com", "EmailAddress": "admin@contoso.com",
             "Credentials": Credential("CONTOSO\\migrator", "pw")},
        )  # fmt: skip
        sim.call(
            "New-MigrationBatch",
            {"Name": "B1", "SourceEndpoint": "E", "AutoStart": True,
             "CSVData": b"EmailAddress\r\nuser0@contoso.com\r\nuser1@contoso.com\r\n"},
        )  # fmt: skip
    return path


@pytest.fixture
def client(tenant: Path) -> Iterator[PsrpRunner]:
    with running_gateway(SimRunner(tenant)) as gateway:
        runner = PsrpRunner(settings_for(gateway))
        try:
            yield runner
        finally:
            runner.close()


def _complete(client: PsrpRunner) -> CmdletError:
    with pytest.raises(CmdletError) as caught:
        client.run(COMPLETE, {"Identity": "B1", "Confirm": False})
    return caught.value


def _advance(tenant: Path, delta: timedelta) -> None:
    with SimStore(tenant).transaction() as sim:
        sim.advance(delta)


def test_over_the_gateway_each_refusal_carries_its_key_and_failure_category(
    tenant: Path, client: PsrpRunner
) -> None:
    syncing = _complete(client)  # AutoStart: the batch is Syncing
    assert (syncing.exception_type, syncing.category) == (FAMILY, f"Cmdlet-{FAMILY}")
    assert f"[FailureCategory=Cmdlet-{FAMILY}]" in syncing.error_id
    assert completion_refusal(syncing) is Refusal.NOT_SYNCED
    _advance(tenant, timedelta(hours=2))
    assert client.run(COMPLETE, {"Identity": "B1", "Confirm": False}) == []
    assert completion_refusal(_complete(client)) is Refusal.NOT_SYNCED  # Completing
    _advance(tenant, timedelta(hours=1))
    done = _complete(client)
    assert f"[FailureCategory=Cmdlet-{FAMILY}]" in done.error_id
    assert completion_refusal(done) is Refusal.ALREADY_COMPLETED


def test_over_the_gateway_the_unsupported_refusal_names_its_key(tenant: Path, client: PsrpRunner) -> None:
    with SimStore(tenant).transaction() as sim:
        sim.state.completion = sim_state.Completion.UNSUPPORTED
    _advance(tenant, timedelta(hours=2))
    error = _complete(client)
    assert (error.exception_type, error.category) == (FAMILY, f"Cmdlet-{FAMILY}")
    assert f"[FailureCategory=Cmdlet-{FAMILY}]" in error.error_id
    assert completion_refusal(error) is Refusal.NOT_SUPPORTED


# --- what the applier learns ------------------------------------------------------------------------


class Refusing:
    def __init__(self, error: CmdletError) -> None:
        self.error = error

    def apply(self, action: ExchangeAction) -> object:
        raise self.error


@pytest.mark.parametrize(
    ("message", "learned"),
    [
        ("CompleteMigrationBatchNotSupported: finalization isn't supported.", True),
        ("MigrationJobCannotBeCompleted: it is Syncing.", False),
        ("MigrationJobCannotRetryCompletion: it is Completed.", False),
        ("The migration batch can't be completed.", False),
    ],
)
def test_only_the_not_supported_refusal_is_learned(message: str, learned: bool) -> None:
    action = ExchangeAction(COMPLETE, (("Identity", "B1"),), "batch/B1", "Synced -> completed")
    plan = Plan(revision="r1", checksum="c", actions=(action,), memory=Memory())
    report = apply_plan(plan, exchange=Refusing(refused(message)), dns=_NoDns())  # type: ignore[arg-type]
    [outcome] = report.outcomes
    assert outcome.ok is learned
    assert (outcome.learned is not None) is learned
    assert report.memory.completionUnsupported == (["B1"] if learned else [])
    if not learned:
        assert "not remembered" in outcome.detail and message in outcome.detail


class _NoDns:
    def apply(self, action: object) -> None:  # pragma: no cover - no DNS action here
        raise AssertionError("no DNS action")
