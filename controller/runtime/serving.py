"""Which revision the controller serves: the branch head when it is signed (if required) and valid,
else the last good revision, with the refusal reported and remembered."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from controller import errors
from controller.desired import loader
from controller.desired.models import DesiredState
from controller.runtime.source import CommitInfo, GitSource
from controller.runtime.store import Store

log = logging.getLogger("stagectl.source")


@dataclass(frozen=True, slots=True)
class Served:
    desired: DesiredState
    commit: CommitInfo
    refused: str | None = None  # why the head was not served, when it was not
    head: str = ""  # the branch head this pass looked at (the commit served unless it was refused)


def serve(source: GitSource, store: Store) -> Served:
    """Fetch, take the head, verify and validate it; fall back to the last good revision if it fails.

    Raises errors.Refused when no revision was ever good: nothing may be applied then.
    """
    head = source.refresh()
    try:
        return Served(_load(source, head), source.commit(head), head=head)
    except errors.InvalidInput as error:
        reason = f"revision {head[:12]} is invalid: " + _listed(error.problems)
    except errors.Refused as error:  # an unsigned or badly signed commit
        reason = f"revision {head[:12]} refused: {error}"
    if store.revisions().refused != head:
        log.error("%s", reason)
    store.record_refused(head, reason)
    good = store.revisions().good
    if good is None:
        raise errors.Refused(f"{reason}; no earlier revision was ever valid, so nothing is applied")
    return Served(_load(source, good, check=False), source.commit(good), refused=reason, head=head)


# What a refusal lists of the problems: it is logged each time, kept in the store and shown by `status`;
# `stagectl validate` lists every one.
LISTED_PROBLEMS = 10
MAX_REASON = 4000


def _listed(problems: list[str]) -> str:
    text = "; ".join(problems[:LISTED_PROBLEMS])
    more = len(problems) - LISTED_PROBLEMS
    if more > 0:
        text += f"; and {more} more (stagectl validate lists them all)"
    return text if len(text) <= MAX_REASON else f"{text[: MAX_REASON - 1]}…"


# The desired state of the revisions served last, by (repository, directory, commit): a commit's tree
# never changes, so a pass on an unchanged head neither reads the tree nor parses it again. Two revisions of
# each repository are kept (the head and the last good one), and `run --tenants` serves many repositories
# from one process, each tenant on its own thread: the cache is shared under a lock.
_LOADED: dict[tuple[str, str, str], DesiredState] = {}
_LOADED_PER_SOURCE = 2
_LOADED_MAX = 64
_LOADED_LOCK = threading.Lock()


def _load(source: GitSource, revision: str, *, check: bool = True) -> DesiredState:
    if check and source.policy is not None:
        source.verify(revision)
    key = (source.name, str(source.desired_dir), revision)
    with _LOADED_LOCK:
        desired = _LOADED.get(key)
    if desired is None:
        files = source.read_tree(revision)
        desired = loader.load_files(
            files, root=f"{source.name}@{revision[:12]}/{source.desired_dir}", revision=revision
        )
        with _LOADED_LOCK:
            same = [k for k in _LOADED if k[:2] == key[:2]]
            for old in same[: max(0, len(same) - _LOADED_PER_SOURCE + 1)]:
                _LOADED.pop(old, None)
            while len(_LOADED) >= _LOADED_MAX:
                _LOADED.pop(next(iter(_LOADED)), None)
            _LOADED[key] = desired
    return desired


def mark_good(store: Store, served: Served) -> None:
    if served.refused is None:
        store.record_good(served.commit.sha)
