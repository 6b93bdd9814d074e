"""An instance's session: one etcd lease, kept alive, that its leadership keys and its membership key hang
on. The instance dies, is paused or is cut off from the quorum: the lease expires in etcd and every tenant
it led is free for a standby.

The instance's own view is deliberately the pessimistic one: it holds the session only until the moment
its last confirmed keep-alive would run out (measured from when that keep-alive was sent, on the monotonic
clock, which also runs while the process is stopped). Past that moment leadership is unknown, and unknown
leadership is no leadership: nothing is sent until a keep-alive is confirmed again."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from controller import errors
from controller.coordination.etcd import Etcd, Put, Unavailable

log = logging.getLogger("stagectl.coordination")

SAFETY = 0.9  # of each confirmed TTL, what this instance counts on (clock rates differ a little)


class Session:
    """`start()` grants the lease and registers the instance; a thread keeps the lease alive every third of
    its TTL and retries faster when etcd does not answer; `close()` revokes it (a clean stop hands every
    tenant over at once, not after a TTL)."""

    def __init__(
        self,
        etcd: Etcd,
        *,
        instance: str,
        ttl: int,
        prefix: str,
        tenants: list[str] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.etcd = etcd
        self.instance = instance
        self.tenants = sorted(tenants or [])  # what it stands by for; none: `stagectl apply`, unlisted
        self.ttl = ttl
        self.prefix = prefix.rstrip("/")
        self._clock = clock or elapsed
        self._lock = threading.Lock()
        self._lease = 0
        self._deadline = 0.0
        self._wall_deadline = 0.0  # the same moment on the wall clock: whichever says "past" first wins
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.changed = threading.Event()  # set whenever the session is lost or (re)made
        self._refusal = ""  # the last refusal said, so a wrong password is logged once, not every try

    @property
    def member_key(self) -> str:
        return f"{self.prefix}/instances/{self.instance}"

    @property
    def lease(self) -> int:
        """The lease while the session is held, else 0."""
        with self._lock:
            return self._lease if self._clock() < self._deadline and time.time() < self._wall_deadline else 0

    def held(self) -> bool:
        return self.lease != 0

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._deadline - self._clock()) if self._lease else 0.0

    def start(self) -> Session:
        self._thread = threading.Thread(target=self._run, name=f"session-{self.instance}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl)
        lease = self._take()
        if lease:
            try:
                self.etcd.revoke(lease)
            except Unavailable as error:
                log.warning(
                    "the lease of %s was not revoked (%s); it expires by itself", self.instance, error
                )

    def _take(self) -> int:
        with self._lock:
            lease, self._lease, self._deadline = self._lease, 0, 0.0
        return lease

    def _run(self) -> None:
        while not self._stop.is_set():
            pause = self._beat()
            self._stop.wait(pause)

    def _beat(self) -> float:
        """One keep-alive (or a new lease); returns how long to wait before the next."""
        with self._lock:
            lease, expired = self._lease, self._lease and self._clock() >= self._deadline
        if expired:
            log.warning(
                "instance %s: its lease was not confirmed in time: it leads nothing until it is",
                self.instance,
            )
            self.changed.set()
        sent, wall = self._clock(), time.time()
        try:
            if lease:
                ttl = self.etcd.keepalive(lease)
                if ttl <= 0:
                    log.warning(
                        "instance %s: its lease expired in etcd: its tenants are another's", self.instance
                    )
                    self._take()
                    self.changed.set()
                    return 0.0
            else:
                lease, ttl = self._grant()
        except Unavailable as error:
            log.debug("keep-alive of %s: %s", self.instance, error)
            return min(1.0, self.ttl / 10)
        except errors.ExternalFailure as error:  # refused (a wrong or rotated password, no permission):
            if str(error) != self._refusal:  # said once, and tried again until the secret is right
                log.error("instance %s holds no lease: %s", self.instance, error)
                self._refusal = str(error)
            return min(5.0, self.ttl / 3)
        self._refusal = ""
        with self._lock:
            self._lease = lease
            self._deadline = sent + ttl * SAFETY
            self._wall_deadline = wall + ttl * SAFETY
        if expired or not lease:
            self.changed.set()
        return self.ttl / 3

    def _grant(self) -> tuple[int, int]:
        """A new lease, and the instance registered under it (other instances count the live ones)."""
        old = self._take()
        if old:
            with contextlib.suppress(Unavailable):
                self.etcd.revoke(old)  # what hung on the old lease is freed now, not a TTL later
        lease = self.etcd.grant(self.ttl)
        if self.tenants:  # `stagectl apply` leads one tenant for a moment and shares in no one's count
            body = json.dumps({"instance": self.instance, "since": _now(), "tenants": self.tenants}).encode()
            self.etcd.txn([], [Put(self.member_key, body, lease=lease)])
        log.info("instance %s: session lease %x, ttl %d s", self.instance, lease, self.ttl)
        return lease, self.ttl

    def live_instances(self) -> dict[str, list[str]]:
        """The instances whose sessions are alive and the tenants each stands by for (this one included
        when held)."""
        return live_instances(self.etcd, self.prefix)


def live_instances(etcd: Etcd, prefix: str) -> dict[str, list[str]]:
    """The live instances under `prefix` (their membership keys, on their leases) and their tenants."""
    live: dict[str, list[str]] = {}
    for kv in etcd.prefix(f"{prefix.rstrip('/')}/instances/"):
        try:
            tenants = json.loads(kv.value).get("tenants", [])
        except (ValueError, AttributeError):
            tenants = []
        live[kv.key.rsplit("/", 1)[-1]] = [str(t) for t in tenants] if isinstance(tenants, list) else []
    return live


def elapsed() -> float:
    """Seconds on a clock that runs while the process is stopped and while the machine is suspended
    (CLOCK_BOOTTIME on Linux; the monotonic clock elsewhere). A VM paused by its host may stop both; the
    wall clock, checked too, catches up once the guest's time is synchronised."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
