"""Transport faults the gateway injects for rehearsals and tests: each switch is set while it serves.

- `drop_output(cmdlet, times)`: the gateway closes the TCP connection instead of sending a Receive reply
  that carries a pipeline's output (the output taken is lost; the cmdlet has run).
- `delay(seconds, action, cmdlet, times)`: replies to that WSMan action (Create, Command, Receive, ...;
  None: any), for a Command or Receive of that cmdlet (None: any), are held `seconds` before they go out:
  slower than the client's read timeout, the client gives up (after a Command, the cmdlet runs anyway).
- `expire_sessions(after, before)`: the gateway forgets every shell (runspace pool), as it does at its idle
  timeout or a restart, when a Command arrives after `after` more cmdlet calls, or for cmdlet `before`
  (default: the next Command): that Command is a WSMan fault and runs nothing.
- `fail_sign_in(times)`: the next `Connect-ExchangeOnline` calls fail (with `sign_in` on the gateway).

A switch with `times=None` holds until `clear()`. Every switch is thread-safe: handler threads read it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


class DropConnection(Exception):
    """Raised inside a request's handling: close the connection without a reply."""


@dataclass
class _Switch:
    remaining: int | None  # None: until cleared

    def take(self) -> bool:
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


@dataclass
class GatewayFaults:
    """The switches; `fired` counts, per fault name, how many times each one acted."""

    fired: dict[str, int] = field(default_factory=dict)
    _drops: dict[str | None, _Switch] = field(default_factory=dict)
    _delays: dict[tuple[str | None, str | None], tuple[float, _Switch]] = field(default_factory=dict)
    _expire_after: int | None = None
    _expire_before: str | None = None
    _sign_in_failures: _Switch | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- set by tests ---------------------------------------------------------------------------------------

    def drop_output(self, cmdlet: str | None = None, *, times: int | None = 1) -> None:
        """Drop the connection on the next `times` Receive replies carrying output of `cmdlet` (None: any)."""
        with self._lock:
            self._drops[_key(cmdlet)] = _Switch(times)

    def delay(
        self, seconds: float, *, action: str | None = None, cmdlet: str | None = None, times: int | None = 1
    ) -> None:
        """Hold the next `times` replies to `action` ("Command", "Receive", ...; None: every action) for
        `cmdlet`'s pipeline (None: any)."""
        with self._lock:
            self._delays[(_key(action), _key(cmdlet))] = (seconds, _Switch(times))

    def expire_sessions(self, *, after: int = 0, before: str | None = None) -> None:
        """Forget every shell at the Command that follows `after` more cmdlet calls (0: the next one), or,
        with `before`, at the Command of that cmdlet."""
        with self._lock:
            self._expire_after, self._expire_before = (None, _key(before)) if before else (after, None)

    def fail_sign_in(self, *, times: int | None = 1) -> None:
        with self._lock:
            self._sign_in_failures = _Switch(times)

    def clear(self) -> None:
        with self._lock:
            self._drops.clear()
            self._delays.clear()
            self._expire_after = self._expire_before = None
            self._sign_in_failures = None

    # --- asked by the gateway -------------------------------------------------------------------------------

    def hold(self, action: str, cmdlet: str | None = None) -> None:
        """Sleep before the reply to `action` (its short name, e.g. "Receive") when a delay applies."""
        with self._lock:
            action_key, cmdlet_key = _key(action), _key(cmdlet)
            found = next(
                (
                    self._delays[key]
                    for key in (
                        (action_key, cmdlet_key),
                        (action_key, None),
                        (None, cmdlet_key),
                        (None, None),
                    )
                    if key in self._delays and (key[1] is None or cmdlet_key is not None)
                ),
                None,
            )
            seconds = found[0] if found is not None and found[1].take() else 0.0
            if seconds:
                self.note("delay")
        if seconds:
            time.sleep(seconds)

    def drop(self, cmdlet: str | None) -> None:
        """Raise DropConnection when a Receive reply carrying `cmdlet`'s output must be lost."""
        with self._lock:
            switch = self._drops.get(_key(cmdlet)) or self._drops.get(None)
            if switch is not None and switch.take():
                self.note("drop")
                raise DropConnection()

    def expiring(self, cmdlet: str | None) -> bool:
        """True once when the shells must be forgotten at this Command (of `cmdlet`)."""
        with self._lock:
            due = (self._expire_after is not None and self._expire_after <= 0) or (
                self._expire_before is not None and self._expire_before == _key(cmdlet)
            )
            if due:
                self._expire_after = self._expire_before = None
                self.note("expire")
            return due

    def called(self) -> None:
        """One cmdlet call ran: counts down to a session expiry."""
        with self._lock:
            if self._expire_after is not None:
                self._expire_after -= 1

    def sign_in_fails(self) -> bool:
        with self._lock:
            switch = self._sign_in_failures
            failed = switch is not None and switch.take()
            if failed:
                self.note("sign-in")
            return failed

    def note(self, name: str) -> None:
        """Count one firing (also "unsigned": a cmdlet refused in a pool that had not signed in)."""
        self.fired[name] = self.fired.get(name, 0) + 1


def _key(cmdlet: str | None) -> str | None:
    return cmdlet.lower() if cmdlet else None
