"""The plan's checksum: what `apply --checksum` compares, so that only the reviewed plan is applied. Pure.

What was reviewed is the list of actions at a desired revision, so that is what the checksum covers:
each action in order with every parameter it sends (a batch CSV by its addresses, a credential by its
reference) and, for DNS, what it replaces. The snapshot is left out: batch counts, sync times and the
waiting and blocked reasons move on their own, and an identical action list on a moved world is the
same plan; a move that changes what would be done changes an action, and with it the checksum.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from controller.desired.models import DesiredState
from controller.model.actions import (
    Action,
    CredentialRef,
    CsvRows,
    ExchangeAction,
    JsonObject,
    ParameterValue,
)
from controller.model.snapshot import at


def of(desired: DesiredState, actions: Sequence[Action]) -> str:
    """sha256 over (revision, desired digest, each action's effect); no reason, no time of observation."""
    body = {
        "revision": desired.revision,
        "desired": desired.digest,
        "actions": [effect(action) for action in actions],
    }
    return "sha256:" + _digest(body)


def effect(action: Action) -> JsonObject:
    """What the action does, in full: its rendering without the reason, with every CSV row kept."""
    if isinstance(action, ExchangeAction):
        return {
            "system": action.system,
            "cmdlet": action.cmdlet,
            "object": action.object,
            "parameters": [[name, _value(value)] for name, value in action.parameters],
        }
    return {key: value for key, value in action.as_data().items() if key != "reason"} | {"kind": action.kind}


def digest(action: Action) -> str:
    """One action's fingerprint: the record of a reviewed plan keeps this, not the CSV rows."""
    return _digest(effect(action))


def _value(value: ParameterValue) -> object:
    if isinstance(value, CsvRows):
        return {"csv": list(value.addresses)}
    if isinstance(value, CredentialRef):
        return {"credentialsRef": value.ref}
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, bool | int | str):
        return value
    return at(value)


def _digest(body: object) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
