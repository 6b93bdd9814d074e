"""The last look before a write leaves the process.

A coordinated leader (controller.coordination) may lose its lease while an action waits: between its
intent's fenced transaction and the request, or while a throttled cmdlet backs off before its next attempt.
The backends call `check()` right before each write they send (every attempt of a cmdlet, the DNS UPDATE);
whoever acts sets the check for the time it acts (`guarded`). Without one, `check()` does nothing: the
single-machine controller holds its file lock for life."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from controller import errors


class Refused(errors.ExternalFailure):
    """This process may no longer send writes: nothing was sent (the check raises it before the request)."""


_CHECK: ContextVar[Callable[[], None] | None] = ContextVar("stagectl_fence", default=None)


@contextmanager
def guarded(check: Callable[[], None]) -> Iterator[None]:
    """Writes sent inside the block are sent only if `check()` returns (it raises `Refused` otherwise)."""
    token = _CHECK.set(check)
    try:
        yield
    finally:
        _CHECK.reset(token)


def check() -> None:
    """Raise if this process may no longer send a write (see `guarded`); called by the backends."""
    current = _CHECK.get()
    if current is not None:
        current()
