"""The plan's checksum: what `apply --checksum` compares, so that only the reviewed plan is applied. Pure."""

from __future__ import annotations

import hashlib
import json

from controller.desired.models import DesiredState
from controller.model.snapshot import Snapshot


def of(desired: DesiredState, snapshot: Snapshot) -> str:
    """sha256 over (revision, desired digest, snapshot); the observation time is left out so that
    observing an unchanged world again gives the same checksum and `apply --checksum` accepts it."""
    observed = snapshot.model_dump(mode="json", exclude={"observedAt"})
    body = json.dumps(
        {"revision": desired.revision, "desired": desired.digest, "snapshot": observed},
        sort_keys=True,
        separators=(",", ":"),
    )
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()
