"""Drift alerts: the values that drifted, the difference in words, and the fingerprint that dedups them."""

from __future__ import annotations

import builtins
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime
from typing import Literal

from deepdiff import DeepDiff

from controller import redact
from controller.model.snapshot import at


def plain(value: object) -> object:
    """Models, dataclasses and datetimes as JSON data, so fingerprints and diffs see values only."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, datetime):
        return at(value)
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def fingerprint(object: str, desired: object, observed: object) -> str:
    """sha256 of the canonical JSON of (object, desired, observed): one per distinct drift."""
    canonical = json.dumps(
        [object, plain(desired), plain(observed)], sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def describe_drift(desired: object, observed: object) -> str:
    """What differs, one line per difference, in words: "Status: expected 'Syncing', found 'Stopped'"."""
    if observed is None:
        return "the object is missing"
    diff = DeepDiff(plain(desired), plain(observed), ignore_order=True, view="tree", verbose_level=2)
    lines: list[str] = []
    for kind in sorted(diff):
        for level in diff[kind]:
            where = _path(level.path(output_format="list")) or "the value"
            if kind in ("values_changed", "type_changes"):
                lines.append(f"{where}: expected {level.t1!r}, found {level.t2!r}")
            elif kind in ("dictionary_item_added", "attribute_added"):
                lines.append(f"{where}: not expected, found {level.t2!r}")
            elif kind in ("dictionary_item_removed", "attribute_removed"):
                lines.append(f"{where}: expected {level.t1!r}, missing")
            elif kind == "iterable_item_added":
                lines.append(
                    f"{_path(level.path(output_format='list')[:-1]) or 'the list'}: unexpected {level.t2!r}"
                )
            elif kind == "iterable_item_removed":
                lines.append(
                    f"{_path(level.path(output_format='list')[:-1]) or 'the list'}: missing {level.t1!r}"
                )
            else:
                lines.append(f"{where}: differs ({kind.replace('_', ' ')})")
    return "\n".join(lines) if lines else "no difference"


def _path(parts: Sequence[object]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts).lstrip(".")


@dataclass(frozen=True, slots=True)
class Alert:
    # `object` is the field the payload and the store name; inside the class it hides the builtin type.
    kind: Literal["opened", "cleared"]
    object: str
    desired: builtins.object
    observed: builtins.object
    description: str
    revision: str
    fingerprint: str

    @classmethod
    def drift(
        cls,
        kind: Literal["opened", "cleared"],
        *,
        object: str,
        desired: builtins.object,
        observed: builtins.object,
        revision: str,
        known_fingerprint: str | None = None,
    ) -> Alert:
        """A drift alert, shown redacted; a "cleared" one passes the fingerprint its "opened" one had."""
        shown_desired, shown_observed = (
            redact.redact_data(plain(desired)),
            redact.redact_data(plain(observed)),
        )
        return cls(
            kind=kind,
            object=object,
            desired=shown_desired,
            observed=shown_observed,
            description=describe_drift(shown_desired, shown_observed),
            revision=revision,
            fingerprint=known_fingerprint or fingerprint(object, desired, observed),
        )

    @property
    def title(self) -> str:
        return f"Drift {'detected' if self.kind == 'opened' else 'cleared'} on {self.object}"

    def as_payload(self) -> dict[str, builtins.object]:
        """The generic webhook body; redacted, since observed data may carry what it should not."""
        return redact.redact_mapping(asdict(self))
