"""One leader per tenant: a key created only if absent, on the instance's session lease.

Everything the leader writes to etcd is a transaction conditioned on that key still being its own: the same
lease and the same revision as when it won (`fence()`). An instance that lost its lease (it was paused, or
cut off from etcd past its TTL) finds every such write refused, so it records no intent and sends no action;
it steps down when it sees that (`lost`)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from controller import errors, fence
from controller.coordination.etcd import MAX_TXN_OPS, Compare, Delete, Etcd, Get, KeyValue, Put
from controller.coordination.session import Session

log = logging.getLogger("stagectl.coordination")


class LeadershipLost(fence.Refused):
    """This instance no longer leads the tenant (or cannot confirm it does): nothing more is sent."""


@dataclass(frozen=True, slots=True)
class Leader:
    """Who leads a tenant, as its leadership key says."""

    instance: str
    since: str  # ISO 8601 UTC, when it won
    lease: int
    revision: int


def tenant_prefix(prefix: str, tenant: str) -> str:
    return f"{prefix.rstrip('/')}/tenants/{tenant}/"


def read_leader(etcd: Etcd, prefix: str, tenant: str) -> Leader | None:
    """The tenant's leader, None when no instance leads it; `Unavailable` when etcd cannot say."""
    kv = etcd.get(tenant_prefix(prefix, tenant) + "leader")
    return None if kv is None else _leader(kv)


def read_leaders(etcd: Etcd, prefix: str, tenants: list[str]) -> dict[str, Leader]:
    """The leaders of these tenants (a tenant no one leads is absent), read at one revision a request."""
    leaders: dict[str, Leader] = {}
    for start in range(0, len(tenants), MAX_TXN_OPS):
        chunk = tenants[start : start + MAX_TXN_OPS]
        reads = [Get(tenant_prefix(prefix, tenant) + "leader") for tenant in chunk]
        found = etcd.txn([], reads, reads_only=True).found
        for kv in found:
            leaders[kv.key.removeprefix(prefix.rstrip("/") + "/tenants/").removesuffix("/leader")] = _leader(
                kv
            )
    return leaders


def _leader(kv: KeyValue) -> Leader:
    try:
        data = json.loads(kv.value)
        return Leader(str(data["instance"]), str(data["since"]), kv.lease, kv.mod_revision)
    except (ValueError, KeyError, TypeError):
        return Leader("(unreadable)", "", kv.lease, kv.mod_revision)


class Leadership:
    """This instance's claim on one tenant."""

    def __init__(self, session: Session, tenant: str) -> None:
        self.session = session
        self.etcd = session.etcd
        self.tenant = tenant
        self.prefix = tenant_prefix(session.prefix, tenant)
        self.key = self.prefix + "leader"
        self._lock = threading.Lock()
        self._won: Leader | None = None
        self.lost = threading.Event()  # set when a fenced write was refused: step down
        self.before_resign: list[Callable[[], None]] = []  # what must reach etcd before a hand-over

    @property
    def won(self) -> Leader | None:
        with self._lock:
            return self._won

    def campaign(self) -> bool:
        """Try once to lead the tenant; True when this instance leads it (it may already have)."""
        lease = self.session.lease
        if not lease:
            return False
        since = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        body = json.dumps({"instance": self.session.instance, "since": since}).encode()
        result = self.etcd.txn(
            [Compare(self.key, "CREATE", 0)], [Put(self.key, body, lease=lease)], failure=[Get(self.key)]
        )
        if result.succeeded:
            won = Leader(self.session.instance, since, lease, result.revision)
        else:  # one request a try: the key as it stands comes back with the refusal
            current = _leader(result.found[0]) if result.found else None
            if current is None or current.instance != self.session.instance or current.lease != lease:
                return False
            won = current  # ours already: an earlier attempt whose answer was lost, or a session regained
        with self._lock:
            self._won = won
        self.lost.clear()
        log.info("instance %s leads tenant %s since %s", self.session.instance, self.tenant, won.since)
        return True

    def fence(self) -> list[Compare]:
        """The conditions of every write while leading: the key is this instance's, on this lease, at the
        revision it won. Raises LeadershipLost when this instance does not lead (or cannot tell)."""
        won = self.won
        if won is None or self.lost.is_set():
            raise LeadershipLost(f"instance {self.session.instance} does not lead tenant {self.tenant}")
        if self.session.lease != won.lease:
            self.lost.set()
            raise LeadershipLost(
                f"instance {self.session.instance} cannot confirm its lease on tenant {self.tenant}: "
                "unknown leadership is no leadership, so nothing more is sent"
            )
        return [Compare(self.key, "MOD", won.revision), Compare(self.key, "LEASE", won.lease)]

    def check(self) -> None:
        """The last look before an action is sent: the session is still confirmed (`fence` raises if not)."""
        self.fence()

    def refused(self) -> LeadershipLost:
        """A fenced write was refused: another instance leads now, or the lease expired."""
        self.lost.set()
        return LeadershipLost(
            f"instance {self.session.instance} no longer leads tenant {self.tenant} (its leadership key "
            "changed or expired): nothing more is sent"
        )

    def held(self) -> bool:
        try:
            self.fence()
        except LeadershipLost:
            return False
        return True

    def resign(self) -> None:
        """Give the tenant up at once (a clean stop, or more tenants than this instance's share)."""
        for flush in self.before_resign:
            try:
                flush()
            except errors.ExternalFailure as error:
                log.warning("tenant %s: before handing over: %s", self.tenant, error)
        won = self.won
        with self._lock:
            self._won = None
        if won is None or not self.session.lease:
            return
        try:
            self.etcd.txn(
                [Compare(self.key, "MOD", won.revision), Compare(self.key, "LEASE", won.lease)],
                [Delete(self.key)],
            )
            log.info("instance %s resigned tenant %s", self.session.instance, self.tenant)
        except errors.ExternalFailure as error:
            log.warning(
                "instance %s could not resign tenant %s (%s)", self.session.instance, self.tenant, error
            )

    def forget(self) -> None:
        with self._lock:
            self._won = None
