"""Completion where Exchange refuses it (exchange-facts §8, issue 16 item 5), end to end: the controller's
passes over the real pypsrp client and the PSRP gateway serving the Exchange simulator, a git repository
and the DNS simulator, the clock the simulator's.

- Completion unsupported: the refusal names `CompleteMigrationBatchNotSupported`; it is remembered, each
  batch's Complete-MigrationBatch is sent once, Synced counts as complete for batches-completed and the MX
  swaps.
- A batch no longer Synced when the Complete arrives (`MigrationJobCannotBeCompleted`): an ordinary failure,
  nothing remembered; the next pass sees it syncing, waits, completes it once Synced, and the MX swaps only
  once every batch is Completed.
- A batch someone completed in the meantime (`MigrationJobCannotRetryCompletion`): an ordinary failure,
  nothing remembered; the next pass observes it Completed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from controller.sim.exchange import engine
from controller.sim.exchange import state as sim_state
from controller.sim.exchange.simulator import ExchangeSimulator
from controller.sim.exchange.store import SimRunner, SimStore
from tests.support.controller import PILOT, PILOT_MEMBERS, WAVE, Workspace, make_workspace
from tests.support.gateway import PASSWORD as GATEWAY_PASSWORD
from tests.support.gateway import controller_psrp, running_gateway

EXO_MX = "0 contoso-com.mail.protection.outlook.com."
COMPLETE = "Complete-MigrationBatch"
STEP = timedelta(hours=4)
MAX_PASSES = 30  # ttlLeadTime 48 h after the lowered TTL is first seen: 12 passes of 4 h, plus the syncs


class Interposed:
    """The simulator's runner behind the gateway; `before_complete` runs once, just before the first
    Complete-MigrationBatch of a batch reaches the tenant: a person's hand racing the controller."""

    def __init__(self, path: Path) -> None:
        self.inner = SimRunner(path)
        self.path = path
        self.before_complete: dict[str, Callable[[ExchangeSimulator], None]] = {}

    def run(
        self, cmdlet: str, parameters: Mapping[str, object], select: Sequence[str] = ()
    ) -> list[dict[str, object]]:
        if cmdlet == COMPLETE:
            hand = self.before_complete.pop(str(parameters.get("Identity", "")), None)
            if hand is not None:
                with SimStore(self.path).transaction() as tenant:
                    hand(tenant)
        return self.inner.run(cmdlet, parameters, select)

    def close(self) -> None:
        self.inner.close()


@contextmanager
def over_the_gateway(
    root: Path, *, completion: sim_state.Completion = sim_state.Completion.SUPPORTED
) -> Iterator[tuple[Workspace, Interposed]]:
    """Both batches `completed` in the repository, the tenant's completion set, the controller's Exchange
    the gateway (plain HTTP on loopback, Basic auth) and its clock the simulator's."""
    ws_root = root / "ws"
    runner = Interposed(ws_root / "exchange.sqlite")
    with running_gateway(runner) as gateway:
        workspace = make_workspace(
            ws_root,
            pilot="completed",
            wave="completed",
            exchange={
                "backend": "psrp",
                "psrp": controller_psrp(gateway),
                "state": str(ws_root / "exchange.sqlite"),  # the clock: sim reads the tenant's time
            },
            clock="sim",
        )
        workspace.env["STAGECTL_TEST_GATEWAY_PASSWORD"] = GATEWAY_PASSWORD
        with workspace.tenant() as tenant:
            tenant.state.completion = completion
        yield workspace, runner


def mx(workspace: Workspace) -> list[str]:
    rrsets = workspace.dns().rrsets("contoso.com") or []
    return next((rr.values for rr in rrsets if rr.type == "MX"), [])


def run_until_cutover(workspace: Workspace, *, finished: set[str]) -> list[str]:
    """Pass, advance the clock, until the MX points at Exchange Online; at every pass where it does, each
    batch's status is in `finished` (the gate never let it through early). The results of every
    Complete-MigrationBatch, in order."""
    for _ in range(MAX_PASSES):
        workspace.run_pass()
        if mx(workspace) == [EXO_MX]:
            tenant = workspace.exchange()
            statuses = {tenant.batch_status(PILOT), tenant.batch_status(WAVE)}
            assert statuses <= finished, statuses
            break
        with workspace.tenant() as tenant:
            tenant.advance(STEP)
    else:
        raise AssertionError(f"no cutover in {MAX_PASSES} passes; the MX is {mx(workspace)}")
    records = workspace.audit_records()
    actions = [(r["action"], r["result"]) for r in records]
    return [
        str(result)
        for action, result in actions
        if isinstance(action, dict) and action.get("cmdlet") == COMPLETE
    ]


def memory(workspace: Workspace) -> list[str]:
    with workspace.reconciler() as reconciler:
        return list(reconciler.store.load_memory().completionUnsupported)


def test_completion_unsupported_is_remembered_synced_counts_and_the_mx_swaps(tmp_path: Path) -> None:
    with over_the_gateway(tmp_path, completion=sim_state.Completion.UNSUPPORTED) as (workspace, _):
        results = run_until_cutover(workspace, finished={"Synced"})
        assert memory(workspace) == [PILOT, WAVE]
        assert workspace.writes()[COMPLETE] == 2  # once each, refused, never sent again
        assert (
            results
            == ["ok: Exchange does not support completing this staged batch; Synced counts as complete"] * 2
        )
        assert workspace.status()["revision"] is not None


def test_a_batch_not_synced_when_complete_arrives_is_not_remembered_and_completes_later(
    tmp_path: Path,
) -> None:
    def resync_a_member(tenant: ExchangeSimulator) -> None:
        """Exchange picks a member of the Synced pilot up again: the batch is Syncing."""
        batch = tenant.state.batches[sim_state.key(PILOT)]
        engine.admit(tenant.state, batch, sim_state.key(PILOT_MEMBERS[0]))
        engine.advance_to(tenant.state, tenant.state.now)

    with over_the_gateway(tmp_path) as (workspace, runner):
        runner.before_complete[PILOT] = resync_a_member
        results = run_until_cutover(workspace, finished={"Completed"})
        assert memory(workspace) == []
        refused = [r for r in results if r.startswith("error:")]
        assert len(refused) == 1, results
        assert "MigrationJobCannotBeCompleted" in refused[0] and "not remembered" in refused[0]
        assert results.count("ok") == 2  # each batch completed once; the pilot after its refusal
        assert workspace.writes()[COMPLETE] == 3


def test_a_batch_already_completed_when_complete_arrives_is_not_remembered(tmp_path: Path) -> None:
    def complete_it_by_hand(tenant: ExchangeSimulator) -> None:
        """An administrator completed the pilot in the admin center a moment before."""
        tenant.call(COMPLETE, {"Identity": PILOT})
        tenant.advance(timedelta(minutes=15))

    with over_the_gateway(tmp_path) as (workspace, runner):
        runner.before_complete[PILOT] = complete_it_by_hand
        results = run_until_cutover(workspace, finished={"Completed"})
        assert memory(workspace) == []
        refused = [r for r in results if r.startswith("error:")]
        assert len(refused) == 1, results
        assert "MigrationJobCannotRetryCompletion" in refused[0] and "not remembered" in refused[0]
        assert results.count("ok") == 1  # the wave; the pilot was completed by hand and never again
