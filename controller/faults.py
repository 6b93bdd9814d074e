"""Fault points: where the reliability tests kill the controller at an action boundary (issue 14).

Inert unless `STAGECTL_FAULT` is set in the controller's environment. Its value is a comma-separated
list of `SELECTOR@MOMENT`; the process sends itself SIGKILL at the first boundary that matches:

- SELECTOR: `*`, a cmdlet (`New-MigrationBatch`), `dns`, or an object (`batch/Batch0-IT`);
- MOMENT: `*`, or one of `MOMENTS`:
  - `intent`: the intent is in the journal, not yet in the audit chain;
  - `before`: the intent is durable (journal and audit), nothing was sent;
  - `during`: the request reached the server, its answer was not read (the backend calls this point);
  - `after`: the answer was read, the result is not recorded yet (`result`: as it is being written);
  - `recorded`: the result is recorded, the next action not begun.

With `STAGECTL_FAULT_ONCE=FILE`, a boundary is killed once: its name is appended to FILE (fsynced) before
the kill, and a boundary already listed there is passed. One run of restarts then kills the controller
at every boundary of a migration in turn.

Nothing here changes what the controller sends: a point either returns or the process ends.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

ENV = "STAGECTL_FAULT"
ONCE_ENV = "STAGECTL_FAULT_ONCE"
MOMENTS = ("intent", "before", "during", "after", "recorded")


_current: ContextVar[tuple[tuple[str, ...], str] | None] = ContextVar("stagectl_fault_action", default=None)


@contextmanager
def acting(names: tuple[str, ...], key: str) -> Iterator[None]:
    """The action in flight, for the `during` point its backend reaches: the names a selector may use
    (cmdlet or `dns`, object) and its journal key."""
    token = _current.set((names, key))
    try:
        yield
    finally:
        _current.reset(token)


def point(moment: str) -> None:
    """A boundary of the action in flight: returns, or kills this process when a fault is set for it.

    Instead of the kill, a rule ending in `=ENOSPC` (`*@intent=ENOSPC`) raises the write error a full
    disk gives, and `=FILL:PATH` fills the filesystem holding PATH (a file it creates) and goes on, so the
    writes that follow meet a real full disk. The `intent` point is reached while the intent is written."""
    spec = os.environ.get(ENV)
    current = _current.get()
    if not spec or current is None:
        return
    names, key = current
    matched = [rule for rule in spec.split(",") if _matches(rule.split("=")[0], names, moment)]
    if not matched:
        return
    if any(rule.endswith("=ENOSPC") for rule in matched):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    filling = [rule.split("=FILL:", 1)[1] for rule in matched if "=FILL:" in rule]
    if filling:
        _fill(Path(filling[0]))
        return
    once = os.environ.get(ONCE_ENV)
    if once:
        boundary = f"{' '.join(names)} {key[:16]}@{moment}"
        path = Path(once)
        if path.exists() and boundary in path.read_text(encoding="utf-8").splitlines():
            return
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (boundary + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def _matches(rule: str, names: tuple[str, ...], moment: str) -> bool:
    selector, _, wanted = rule.strip().partition("@")
    return (selector == "*" or selector in names) and wanted in ("*", moment)


def _fill(path: Path) -> None:
    """Write zeros to `path` until the filesystem refuses more."""
    chunk = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, chunk)
    except OSError:
        pass
    finally:
        os.close(fd)
