"""The simulated tenant in one JSON file, shared by processes under a file lock, and the runner over it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from controller.exchange.errors import ExchangeError, PermanentError
from controller.exchange.runner import CmdletOutput, project
from controller.sim.exchange.simulator import ExchangeSimulator


class SimStore:
    """The simulator's JSON file, shared by processes: each transaction holds an exclusive fcntl lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def create(self, simulator: ExchangeSimulator) -> None:
        """Write a new tenant, replacing any state at the path."""
        with self._locked():
            self._save(simulator)

    def load(self) -> ExchangeSimulator:
        """The tenant as it is now, read under the lock; changes to it are not saved."""
        with self._locked():
            return ExchangeSimulator.from_json(self._read())

    def now(self) -> datetime:
        """The tenant's virtual time."""
        return self.load().now

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            raise PermanentError(
                f"simulator state {self.path} does not exist; create it with `stagectl sim init`"
            ) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[ExchangeSimulator]:
        """Load, yield, save atomically; an unexpected exception discards the changes."""
        with self._locked():
            simulator = ExchangeSimulator.from_json(self._read())
            yield simulator
            self._save(simulator)

    def _save(self, simulator: ExchangeSimulator) -> None:
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(simulator.to_json())
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


class SimRunner:
    """`CmdletRunner` over a `SimStore`: each call is one transaction, so processes never lose updates."""

    def __init__(self, path: str | os.PathLike[str], *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = SimStore(path)
        self._sleep = sleep

    def run(
        self, cmdlet: str, parameters: Mapping[str, object], select: Sequence[str] = ()
    ) -> list[dict[str, object]]:
        error: ExchangeError | None = None
        output = CmdletOutput()
        with self.store.transaction() as simulator:
            latency = simulator.state.latency_seconds
            try:
                output = simulator.call(cmdlet, parameters)
            except ExchangeError as refused:  # the call is still counted: keep the transaction
                error = refused
        if latency > 0:
            self._sleep(latency)  # outside the lock: a slow call must not stall other processes
        if error is not None:
            raise error
        return project(output, select)

    def close(self) -> None:
        pass
