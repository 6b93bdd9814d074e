"""-Confirm:$false on every write: a Remove-* cmdlet pauses for a confirmation no one answers through
remoting (the Exchange cmdlet reference, -Confirm), so without it the batch is never removed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.exchange.client import ExchangeClient
from controller.exchange.errors import CmdletError
from controller.model.actions import ExchangeAction
from controller.sim.exchange.simulator import ExchangeSimulator
from controller.sim.exchange.store import SimRunner, SimStore
from tests.support.gateway import FakeRunner

REMOVE = ExchangeAction("Remove-MigrationBatch", (("Identity", "Pilot"),), "batch/Pilot", "removed")


def test_every_write_is_sent_with_confirm_false_and_no_read_is() -> None:
    runner = FakeRunner()
    client = ExchangeClient(runner, sleep=lambda seconds: None)
    client.apply(REMOVE)
    client.read_batches()
    (write, parameters), (read, read_parameters) = runner.calls
    assert (write, parameters["Confirm"]) == ("Remove-MigrationBatch", False)
    assert read == "Get-MigrationBatch" and "Confirm" not in read_parameters


def test_a_remote_remove_without_confirm_false_fails_as_powershell_fails_it(tmp_path: Path) -> None:
    SimStore(tmp_path / "exo.sqlite").create(ExchangeSimulator(now=datetime(2026, 11, 24, tzinfo=UTC)))
    runner = SimRunner(tmp_path / "exo.sqlite")
    with pytest.raises(CmdletError) as refused:
        runner.run("Remove-MigrationBatch", {"Identity": "Pilot"})
    assert refused.value.exception_type == "HostException"
    assert "does not support user interaction" in str(refused.value)
    # With -Confirm:$false the cmdlet runs (and says the batch does not exist: the prompt was the only stop).
    with pytest.raises(CmdletError) as ran:
        runner.run("Remove-MigrationBatch", {"Identity": "Pilot", "Confirm": False})
    assert ran.value.exception_type != "HostException"
