"""A migration half way, for the migration page's tests: the pilot completed, a wave of twelve syncing one
mailbox an hour with one member failed on a catalogued error, the TTLs lowered, the cutover ahead.

Real passes of the controller over the simulators (tests/support/controller.py), on the simulator's clock.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from tests.support.controller import (
    PILOT,
    PILOT_MEMBERS,
    ZONE_YAML,
    Workspace,
    batch_yaml,
    make_workspace,
    migration_yaml,
)

WAVE = "Wave1-Sales"
WAVE_MEMBERS = tuple(f"sales.user{n:02}@contoso.com" for n in range(1, 13))
FAILED_MEMBER = WAVE_MEMBERS[2]
FAILED_TYPE = "TooManyLargeItemsPermanentException"
FAILED_MESSAGE = "Large items were found in the mailbox and the limit was exceeded (2 items over 150 MB)."


def files(*, pilot: str, wave: str) -> dict[str, str]:
    return {
        "desired/migration.yaml": migration_yaml(),
        "desired/batches/pilot.yaml": batch_yaml(PILOT, PILOT_MEMBERS, state=pilot),
        "desired/batches/wave1.yaml": batch_yaml(WAVE, WAVE_MEMBERS, state=wave),
        "desired/dns/contoso.com.yaml": ZONE_YAML,
    }


def half_way(root: Path, **config: object) -> Workspace:
    """The workspace after the passes described above; `config` adds configuration keys (web: ...)."""
    workspace = make_workspace(root, **config)
    with workspace.tenant() as tenant:
        for number, address in enumerate(WAVE_MEMBERS, start=1):
            tenant.add_recipient(address)
            tenant.set_sync_time(address, timedelta(hours=number))  # one mailbox an hour
        tenant.fail_user(address=FAILED_MEMBER, exception_type=FAILED_TYPE, message=FAILED_MESSAGE)
    workspace.commit(files(pilot="planned", wave="planned"), message="Desired state: pilot and Sales")
    workspace.run_pass()  # the endpoint; the cutover TTLs lowered
    workspace.commit(files(pilot="started", wave="planned"), message="Start the pilot")
    advance_and_pass(workspace, hours=1)
    advance_and_pass(workspace, hours=1)
    workspace.commit(files(pilot="completed", wave="started"), message="Complete the pilot; start Sales")
    for _ in range(6):
        advance_and_pass(workspace, hours=1)
    return workspace


def advance_and_pass(workspace: Workspace, *, hours: float) -> None:
    with workspace.tenant() as tenant:
        tenant.advance(timedelta(hours=hours))
    result = workspace.run_pass()
    assert result.report.failed is None, result.report.failed
