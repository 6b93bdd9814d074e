"""The high-availability tests' etcd (tests/support/etcd.py) behaves like a real 3-member cluster: TLS with
client certificates, replication, leases that expire, a lost member that catches up, and no writes without
a quorum."""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import Etcd3Exception

from tests.support.etcd import EtcdCluster, etcd_cluster

WAIT = 10.0  # seconds; bounds every poll below


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    with etcd_cluster(tmp_path / "etcd") as running:
        yield running


def local_value(client: Etcd3Client, key: str) -> bytes | None:
    """The value member `client` has applied itself (a serializable read: no quorum, no read index)."""
    encoded = base64.b64encode(key.encode()).decode()
    result = client.post(client.get_url("/kv/range"), json={"key": encoded, "serializable": True})
    kvs = result.get("kvs") or []
    return base64.b64decode(kvs[0]["value"]) if kvs else None


def poll(condition_name: str, check: Callable[[], object], timeout: float = WAIT) -> float:
    """Call `check()` until it returns something true; the seconds it took. etcd errors count as not yet."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except Etcd3Exception:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{condition_name}: not within {timeout} s")


def put_through(cluster: EtcdCluster, i: int) -> bool:
    return cluster.client(i).put(f"/ha/through/m{i}", "written")


def test_three_members_over_tls_replicate(cluster: EtcdCluster) -> None:
    assert len(cluster.endpoints) == 3
    assert all(url.startswith("https://127.0.0.1:") for url in cluster.endpoints)
    assert len(set(cluster.endpoints)) == 3
    assert not {url.rsplit(":", 1)[1] for url in cluster.endpoints} & {"2379", "2380"}
    assert len(cluster.client().members()) == 3

    assert cluster.client(0).put("/ha/replicated", "from m0")
    for i in (1, 2):
        assert cluster.client(i).get("/ha/replicated") == [b"from m0"]
    assert cluster.client(2).put("/ha/replicated", "from m2")
    assert cluster.client(0).get("/ha/replicated") == [b"from m2"]


def test_a_client_without_a_certificate_is_refused(cluster: EtcdCluster) -> None:
    for i in range(3):
        with pytest.raises(Etcd3Exception) as refused:
            cluster.client(i, with_cert=False).put("/ha/anonymous", "must not land")
        assert "SSL" in (refused.value.detail_text or "")  # the TLS handshake, not a dead member
        assert cluster.client(i).put("/ha/with-cert", str(i))
    assert cluster.client(1).get("/ha/anonymous") == []


def test_a_lease_not_refreshed_expires(cluster: EtcdCluster) -> None:
    client = cluster.client()
    lease = client.lease(ttl=2)
    assert client.put("/ha/leased", "short-lived", lease=lease)
    assert client.get("/ha/leased") == [b"short-lived"]
    took = poll("the leased key is deleted", lambda: client.get("/ha/leased") == [], timeout=8.0)
    assert took >= 1.0  # it lived about its TTL, not vanished at once
    assert lease.ttl() == -1  # the lease itself is gone


def test_one_member_killed_the_rest_write_and_it_catches_up(cluster: EtcdCluster) -> None:
    cluster.kill(1)
    assert not cluster.alive(1)
    with pytest.raises(Etcd3Exception):
        cluster.client(1, timeout=1.0).get("/ha/while-down")
    poll("a write through m0 with m1 down", lambda: cluster.client(0).put("/ha/while-down", "written"))
    assert cluster.client(2).get("/ha/while-down") == [b"written"]

    cluster.start(1)
    assert cluster.alive(1)
    # Its own applied state, not a read forwarded to the leader: it has caught up.
    poll(
        "m1 has the value written while it was down",
        lambda: local_value(cluster.client(1), "/ha/while-down") == b"written",
    )
    assert cluster.client(1).get("/ha/while-down") == [b"written"]


def test_a_paused_member_does_not_stop_the_others(cluster: EtcdCluster) -> None:
    cluster.pause(0)
    assert cluster.alive(0)
    poll("a write through m2 with m0 paused", lambda: cluster.client(2).put("/ha/paused", "yes"))
    cluster.resume(0)
    poll("m0 has the write after resuming", lambda: local_value(cluster.client(0), "/ha/paused") == b"yes")


def test_no_quorum_no_writes_until_members_return(cluster: EtcdCluster) -> None:
    assert cluster.client(2).put("/ha/before", "kept")
    cluster.kill(0)
    cluster.kill(1)
    assert cluster.alive(2)
    with pytest.raises(Etcd3Exception):
        cluster.client(2, timeout=1.0).put("/ha/without-quorum", "outcome unknown")
    with pytest.raises(Etcd3Exception):  # a linearizable read needs the quorum too
        cluster.client(2, timeout=1.0).get("/ha/before")
    assert local_value(cluster.client(2), "/ha/without-quorum") is None  # not committed, not applied
    assert local_value(cluster.client(2), "/ha/before") == b"kept"

    cluster.start(0)
    cluster.start(1)
    cluster.wait_healthy()
    for i in range(3):
        poll(f"a write through m{i} after the quorum is back", functools.partial(put_through, cluster, i))
    assert cluster.client(0).get("/ha/before") == [b"kept"]
    # A write that timed out without a quorum is not a write that failed: the surviving member may have
    # put it in its raft log, and it commits once the quorum is back. Its outcome is unknown, either way.
    assert cluster.client(1).get("/ha/without-quorum") in ([], [b"outcome unknown"])
