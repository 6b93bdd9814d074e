"""The preflight's "in no other batch" before -AddUsers: a pass where a batch may gain members reads the
users of the batches Exchange has that the repository does not name (planner/reads.py)."""

from __future__ import annotations

import json
from pathlib import Path

from controller.desired import loader
from controller.model.snapshot import FinishedBatch, Memory, ObservedBatch
from controller.planner import reads

CASE = Path(__file__).parent / "cases" / "members-added-other-batch-unread-held"
BASE = Path(__file__).parent / "cases" / "_base"


def test_a_batch_that_may_gain_members_reads_the_unnamed_batches_and_a_matched_one_does_not() -> None:
    files = loader.read_directory(BASE / "desired")
    files.update(loader.read_directory(CASE / "desired"))
    desired = loader.load_files(files, revision="rev1")
    overlay = json.loads((CASE / "snapshot.json").read_text())  # its batches, laid over the base's
    batches = [ObservedBatch.model_validate(b) for b in overlay["exchange"]["batches"]]
    read = [b.Identity for b in reads.users_to_read(desired, Memory(), batches)]
    assert read == ["Batch1-IT", "OldPilot"]  # its users never matched the repository: members may come

    [batch] = [b for b in desired.batches if b.name == "Batch1-IT"]
    [found] = [b for b in batches if b.Identity == "Batch1-IT"]
    syncing = ObservedBatch.model_validate({**found.model_dump(), "Status": "Syncing"})
    matched = Memory(
        memberships={batch.key: FinishedBatch(members=batch.members_digest, total=found.TotalCount)}
    )
    others = [b for b in batches if b.Identity != "Batch1-IT"]
    # Quietly syncing with its members matched: nothing may be added, the unnamed batch is not read.
    assert [b.Identity for b in reads.users_to_read(desired, matched, [syncing, *others])] == []
