"""One controller per state directory: an exclusive `flock` on a lock file held for the process lifetime."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from types import TracebackType

from controller import errors

LOCK_FILE = "stagectl.lock"
COORDINATED_FILE = "coordinated.json"  # this directory serves a tenant coordinated through etcd


class AlreadyRunning(errors.Refused):
    """Another stagectl holds the state directory."""


class StateLock:
    """Held until `release()` or process exit; the kernel drops it if the process dies, so no stale locks."""

    def __init__(self, state_dir: Path, fd: int) -> None:
        self.state_dir = state_dir
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path) -> StateLock:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = state_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            raise AlreadyRunning(f"another stagectl is running on {state_dir}{who}") from None
        except OSError as error:
            os.close(fd)
            raise errors.ExternalFailure(
                f"the state directory {state_dir} cannot be locked: {error.strerror}"
            ) from error
        # The pid is only informative (for the message above); the lock itself is the flock.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(state_dir, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> StateLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()


def mark_coordinated(state_dir: Path, *, tenant: str, prefix: str) -> None:
    """Say in the state directory that it serves a tenant coordinated through etcd (docs/ha.md), so that
    nothing acts on it alone, beside the leader elected there (`refuse_if_coordinated`)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = json.dumps({"tenant": tenant, "prefix": prefix}) + "\n"
    target = state_dir / COORDINATED_FILE
    if not target.exists() or target.read_text(encoding="utf-8") != body:
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_text(body, encoding="utf-8")
        temporary.replace(target)


def refuse_if_coordinated(state_dir: Path) -> None:
    """Refuse to act alone on a state directory that serves a coordinated tenant: its leader is elected in
    etcd, and a process holding only this directory's lock would act beside it, unfenced."""
    marker = state_dir / COORDINATED_FILE
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        data = {}
    tenant = data.get("tenant", "?") if isinstance(data, dict) else "?"
    raise errors.Refused(
        f"{state_dir} serves tenant {tenant}, coordinated through etcd: act on it with the configuration "
        f"that has its coordination section, so that only the leader elected there acts (to serve it alone "
        f"again, stop every instance and remove {marker})"
    )


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
