"""Coordination's parts against a real 3-member etcd cluster (TLS, client certificates): the election, the
fence that refuses every write of an instance that lost its lease, unknown leadership as no leadership, a
new leader adopting the shared state, and one audit chain across leaders. The processes, their kills and
pauses are in tests/ha/."""

from __future__ import annotations

import base64
import json
import shlex
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller import errors
from controller.coordination.etcd import Etcd, Put, Unavailable
from controller.coordination.leadership import Leadership, LeadershipLost, read_leader
from controller.coordination.session import Session
from controller.coordination.shared_audit import SharedAudit, shared_lines, verify_shared
from controller.coordination.shared_store import CLOSED_ELSEWHERE, SharedStore
from controller.model.actions import ExchangeAction
from controller.model.snapshot import Memory
from controller.runtime import audit
from controller.runtime.audit import AuditLog
from controller.runtime.config import EtcdConfig, load_config
from controller.runtime.intents import Journal
from controller.runtime.store import Store
from tests.support.controller import make_workspace
from tests.support.etcd import EtcdCluster, etcd_cluster, etcd_config, etcd_section, free_ports, until

NOW = datetime(2026, 11, 24, 9, tzinfo=UTC)
TTL = 3  # seconds: the shortest lease the configuration allows, so expiry is seen quickly
BOUND = 15.0

START = ExchangeAction(
    cmdlet="Start-MigrationBatch",
    parameters=(("Identity", "Batch0-IT"),),
    object="batch/Batch0-IT",
    reason="the repository asks for it started",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with etcd_cluster(tmp_path_factory.mktemp("etcd")) as running:
        yield running


@pytest.fixture
def prefix() -> str:
    """Each test its own key space in the shared cluster."""
    return f"/t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def sessions(cluster: EtcdCluster, prefix: str) -> Iterator[Callable[[str], Session]]:
    opened: list[Session] = []

    def open_session(name: str) -> Session:
        session = Session(
            Etcd(etcd_config(cluster)), instance=name, ttl=TTL, prefix=prefix, tenants=["contoso"]
        ).start()
        until(f"the session of {name}", session.held)
        opened.append(session)
        return session

    yield open_session
    for session in opened:
        session.close()


def die(session: Session) -> None:
    """The process dies: its keep-alives stop and nothing revokes its lease (a SIGKILL, as etcd sees it)."""
    session._stop.set()
    if session._thread is not None:
        session._thread.join()


def leader(cluster: EtcdCluster, sessions: Callable[[str], Session], name: str) -> Leadership:
    claim = Leadership(sessions(name), "contoso")
    assert claim.campaign()
    return claim


# --- the election ------------------------------------------------------------------------------------


def test_one_instance_wins_and_a_standby_takes_over_once_the_lease_of_a_dead_leader_expires(
    cluster: EtcdCluster, prefix: str, sessions: Callable[[str], Session]
) -> None:
    a, b = Leadership(sessions("a"), "contoso"), Leadership(sessions("b"), "contoso")
    assert a.campaign()
    assert not b.campaign()
    assert b.campaign() is False  # still a's: a standby campaigns again and again
    etcd = Etcd(etcd_config(cluster))
    current = read_leader(etcd, prefix, "contoso")
    assert current is not None and current.instance == "a"

    die(a.session)
    waited = until("b leads", b.campaign, timeout=TTL + 5)
    current = read_leader(etcd, prefix, "contoso")
    assert current is not None and current.instance == "b"
    assert waited <= TTL + 1.5, f"the standby took {waited:.1f} s after a lease of {TTL} s"


def test_a_clean_resignation_frees_the_tenant_at_once(
    cluster: EtcdCluster, prefix: str, sessions: Callable[[str], Session]
) -> None:
    a = leader(cluster, sessions, "a")
    b = Leadership(sessions("b"), "contoso")
    a.resign()
    assert b.campaign()
    assert not a.held()


# --- the fence ------------------------------------------------------------------------------------


def test_a_leader_whose_lease_expired_in_etcd_writes_nothing_and_sends_nothing(
    cluster: EtcdCluster, prefix: str, sessions: Callable[[str], Session], tmp_path: Path
) -> None:
    a = leader(cluster, sessions, "a")
    store = SharedStore.open_shared(tmp_path / "a", a, clock=lambda: NOW)
    log = SharedAudit(audit.path_in(tmp_path / "a"), a)
    store.save_memory(Memory(cutoverAt=NOW))
    before, _ = Journal(store, log, lambda: NOW, tmp_path / "a").recorder(revision="c0ffee", author="ada")
    etcd = Etcd(etcd_config(cluster))
    memory_key = f"{a.prefix}state/settings/memory"
    written = etcd.get(memory_key)
    assert written is not None and json.loads(written.value)["cutoverAt"] == "2026-11-24T09:00:00Z"

    # The lease expires behind the leader's back (a pause or a partition, as etcd sees it); before its own
    # keep-alive has noticed, the leader still believes it leads. The transactions are the fence.
    etcd.revoke(a.won.lease if a.won else 0)
    b = Leadership(sessions("b"), "contoso")
    assert b.campaign()
    with pytest.raises(LeadershipLost, match="no longer leads tenant contoso"):
        store.save_memory(Memory())
    after = etcd.get(memory_key)
    assert after is not None and after.mod_revision == written.mod_revision

    sent: list[str] = []
    with pytest.raises(errors.ExternalFailure, match="was not sent"):
        if before(START):
            sent.append("Start-MigrationBatch")
    assert sent == []
    assert not [kv for kv in etcd.prefix(f"{a.prefix}state/intents/")]
    assert list(shared_lines(etcd, a.prefix)) == []
    assert a.lost.is_set()


def test_a_leader_that_cannot_confirm_its_lease_stops_sending_and_resumes_when_etcd_answers(
    cluster: EtcdCluster, sessions: Callable[[str], Session]
) -> None:
    """Unknown leadership is no leadership: every member paused, so no keep-alive is confirmed; past the
    lease the leader's last check before sending refuses, and once etcd answers again it leads again."""
    a = leader(cluster, sessions, "a")
    for member in range(3):
        cluster.pause(member)
    try:
        lost_after = until("the session is unconfirmed", lambda: not a.session.held(), timeout=TTL + 3)
        with pytest.raises(LeadershipLost, match="cannot confirm its lease"):
            a.check()
    finally:
        for member in range(3):
            cluster.resume(member)
    assert lost_after <= TTL, f"held {lost_after:.1f} s past the last confirmed keep-alive"
    cluster.wait_healthy()
    until("the session is confirmed again", a.session.held, timeout=TTL + 10)
    fresh = Leadership(a.session, "contoso")
    until("a leads again", fresh.campaign, timeout=TTL + 10)
    fresh.check()


# --- a new leader resumes where the one before stopped ----------------------------------------------


def test_a_new_leader_adopts_memory_revisions_baselines_alerts_and_open_intents(
    cluster: EtcdCluster, sessions: Callable[[str], Session], tmp_path: Path
) -> None:
    a = leader(cluster, sessions, "a")
    mine = SharedStore.open_shared(tmp_path / "a", a, clock=lambda: NOW)
    memory = Memory(cutoverAt=NOW, ttlBeforeLowering={"contoso.com/@/MX": 3600})
    mine.save_memory(memory)
    mine.record_good("c0ffee")
    mine.record_attempted("c0ffee")
    passes = mine.next_pass()
    mine.set_statuses(
        [("batch/Batch0-IT", "f1", {"status": "Syncing"})], phase="baseline", message="", now=NOW
    )
    assert mine.open_alert("drift-1", object="dns/contoso.com/@/MX", desired={"ttl": 300}, now=NOW)
    assert mine.record_action_started(revision="c0ffee", pass_id=passes, key="k1", action=START, now=NOW)
    a.resign()

    b = Leadership(sessions("b"), "contoso")
    assert b.campaign()
    stale = Store.open(tmp_path / "b")  # what b's own database held from an earlier term
    assert stale.record_action_started(revision="0ld", pass_id=1, key="k0", action=START, now=NOW)
    stale.close()
    theirs = SharedStore.open_shared(tmp_path / "b", b, clock=lambda: NOW)

    assert theirs.load_memory() == memory
    assert theirs.revisions().good == "c0ffee"
    assert theirs.next_pass() == passes + 1
    assert [(s.object, s.phase) for s in theirs.statuses()] == [("batch/Batch0-IT", "acted")]
    assert [alert.fingerprint for alert in theirs.open_alerts()] == ["drift-1"]
    assert not theirs.open_alert("drift-1", object="dns/contoso.com/@/MX", now=NOW)  # sent once, not again
    assert [(r.revision, r.pass_id, r.action_key) for r in theirs.unfinished_actions()] == [
        ("c0ffee", passes, "k1")
    ]
    closed = {r.action_key: r.result for r in theirs.actions() if r.finished}
    assert closed == {"k0": CLOSED_ELSEWHERE}

    theirs.record_action_finished(
        revision="c0ffee", pass_id=passes, key="k1", result="settled: applied", now=NOW
    )
    assert not list(
        Etcd(etcd_config(cluster)).prefix(f"{b.prefix}state/intents/")
    )  # etcd keeps open ones only


# --- one audit chain across leaders -------------------------------------------------------------------


def _append(log: AuditLog, result: str) -> None:
    log.append(revision="c0ffee", author="ada", action=START, result=result, duration_ms=1, time=NOW)


def test_the_audit_chain_is_one_across_leaders_each_record_naming_its_instance(
    cluster: EtcdCluster, sessions: Callable[[str], Session], tmp_path: Path
) -> None:
    a = leader(cluster, sessions, "a")
    first = SharedAudit(audit.path_in(tmp_path / "a"), a)
    for n in range(3):
        _append(first, f"ok {n}")
    a.resign()

    b = Leadership(sessions("b"), "contoso")
    assert b.campaign()
    second = SharedAudit(audit.path_in(tmp_path / "b"), b)
    assert audit.count(second.path) == 3 and audit.find_break(second.path) is None  # caught up
    _append(second, "ok 3")
    _append(second, "ok 4")

    etcd = Etcd(etcd_config(cluster))
    assert verify_shared(etcd, b.prefix) is None
    records = [json.loads(line) for line in shared_lines(etcd, b.prefix)]
    assert [(r["seq"], r["instance"]) for r in records] == [(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "b")]
    assert audit.find_break(second.path) is None and audit.count(second.path) == 5
    b.resign()

    again = leader(cluster, sessions, "a")
    caught_up = SharedAudit(audit.path_in(tmp_path / "a"), again)
    assert audit.count(caught_up.path) == 5 and audit.find_break(caught_up.path) is None


def test_an_edited_record_in_etcd_is_found_by_verify(
    cluster: EtcdCluster, sessions: Callable[[str], Session], tmp_path: Path
) -> None:
    a = leader(cluster, sessions, "a")
    log = SharedAudit(audit.path_in(tmp_path / "a"), a)
    for n in range(3):
        _append(log, f"ok {n}")
    etcd = Etcd(etcd_config(cluster))
    key = f"{a.prefix}audit/records/{2:012d}"
    record = etcd.get(key)
    assert record is not None
    etcd.txn([], [Put(key, record.value.replace(b'"ok 1"', b'"ok, honest"'))])
    found = verify_shared(etcd, a.prefix)
    assert found is not None and found.seq == 2 and "changed" in found.reason


def test_a_single_machine_audit_log_goes_on_in_etcd_when_coordination_is_switched_on(
    cluster: EtcdCluster, sessions: Callable[[str], Session], tmp_path: Path
) -> None:
    path = audit.path_in(tmp_path / "state")
    alone = AuditLog(path)
    _append(alone, "ok before coordination")
    _append(alone, "ok still alone")
    a = leader(cluster, sessions, "a")
    shared = SharedAudit(path, a)
    _append(shared, "ok coordinated")
    etcd = Etcd(etcd_config(cluster))
    assert verify_shared(etcd, a.prefix) is None
    records = [json.loads(line) for line in shared_lines(etcd, a.prefix)]
    assert [r["result"] for r in records] == ["ok before coordination", "ok still alone", "ok coordinated"]
    assert "instance" not in records[0] and records[2]["instance"] == "a"
    assert audit.find_break(path) is None


# --- the client across members -------------------------------------------------------------------------


def test_the_client_passes_over_a_member_that_refuses_and_says_so_when_none_answers(
    cluster: EtcdCluster, prefix: str
) -> None:
    dead = [f"https://127.0.0.1:{port}" for port in free_ports(2)]
    etcd = Etcd(etcd_config(cluster, [dead[0], *cluster.endpoints]))
    assert etcd.txn([], [Put(f"{prefix}/k", b"v")]).succeeded
    value = etcd.get(f"{prefix}/k")
    assert value is not None and value.value == b"v"

    nowhere = Etcd(etcd_config(cluster, dead))
    with pytest.raises(
        Unavailable, match=r"etcd did not answer .*leadership and the shared state are unknown"
    ):
        nowhere.get(f"{prefix}/k")


# --- the configuration ---------------------------------------------------------------------------------


def _config_with(tmp_path: Path, coordination: str) -> Path:
    """A controller configuration whose `coordination:` section (from line 6) is the text given."""
    path = tmp_path / "stagectl.yaml"
    path.write_text(
        "apiVersion: stagectl/v1\nkind: ControllerConfig\nstateDir: state\n"
        "exchange: {backend: sim, state: x}\ndns: {backend: sim, state: y}\n"
        f"coordination:\n{coordination}",
        encoding="utf-8",
    )
    return path


def test_a_bad_coordination_section_is_one_sentence_per_problem_naming_its_line(tmp_path: Path) -> None:
    path = _config_with(tmp_path, "  etcd:\n    endpoints: [etcd-1:2379]\n  leaseTtl: 1s\n")
    with pytest.raises(errors.InvalidInput) as raised:
        load_config(path)
    problems = raised.value.problems
    assert any(f"{path}:8:" in p and "https://host:port" in p for p in problems), problems
    assert any(f"{path}:9:" in p and "leaseTtl is whole seconds from 3s" in p for p in problems), problems


@pytest.mark.parametrize(
    ("etcd", "says"),
    [
        ("certificatePem: c.pem", "certificatePem and certificateKeyPem go together"),
        ("username: stagectl", "username and passwordRef go together"),
        (
            "certificatePem: c.pem, certificateKeyPem: c.key, username: s, passwordRef: 'env:P'",
            "a client certificate or an etcd user, not both",
        ),
    ],
)
def test_an_etcd_sign_in_that_cannot_work_is_refused_naming_its_line(
    tmp_path: Path, etcd: str, says: str
) -> None:
    # A certificate without its key would go unsent, a user without a password would sign in with an empty
    # one, and etcd's gateway refuses a request with both: each is refused before anything reaches etcd.
    path = _config_with(tmp_path, "  etcd: {endpoints: ['https://etcd-1:2379'], " + etcd + "}\n")
    with pytest.raises(errors.InvalidInput) as raised:
        load_config(path)
    problems = raised.value.problems
    assert any(f"{path}:7:" in p and says in p for p in problems), problems


# --- `stagectl apply` on a coordinated tenant ------------------------------------------------------------


def test_apply_on_a_coordinated_tenant_is_refused_while_a_controller_leads_and_otherwise_acts_as_its_leader(
    cluster: EtcdCluster, prefix: str, sessions: Callable[[str], Session], tmp_path: Path
) -> None:
    workspace = make_workspace(tmp_path / "ws", pilot="started")
    coordination = {
        "etcd": etcd_section(cluster, timeout="1s"),
        "tenant": "contoso",
        "prefix": prefix,
        "leaseTtl": "3s",
    }
    workspace.write_config(coordination=coordination)
    desired = str(workspace.repo.path / "desired")
    running = leader(cluster, sessions, "controller-1")

    shown = workspace.stagectl("status", "--config", str(workspace.config_path))
    assert shown.returncode == 0, shown.stderr
    assert "leader      controller-1 since 20" in shown.stdout
    assert "instances   controller-1" in shown.stdout
    as_json = json.loads(
        workspace.stagectl("status", "--config", str(workspace.config_path), "--format", "json").stdout
    )
    assert (
        as_json["leadership"]["leader"] == "controller-1"
        and as_json["leadership"]["since"] == running.won.since
    )

    refused = workspace.stagectl("apply", desired, "--config", str(workspace.config_path), "--yes")
    assert refused.returncode != 0
    assert "tenant contoso is led by instance controller-1 since" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert sum(workspace.writes().values()) == 0

    running.resign()
    applied = workspace.stagectl("apply", desired, "--config", str(workspace.config_path), "--yes")
    assert applied.returncode == 0, applied.stderr
    assert workspace.writes()["New-MigrationBatch"] == 1
    etcd = Etcd(etcd_config(cluster))
    records = [json.loads(line) for line in shared_lines(etcd, f"{prefix}/tenants/contoso/")]
    assert {r["phase"] for r in records} == {"intent", "result"}
    assert all(str(r["instance"]).endswith("-apply") for r in records)
    assert verify_shared(etcd, f"{prefix}/tenants/contoso/") is None
    assert read_leader(etcd, prefix, "contoso") is None  # apply resigned when it finished


# --- etcd's own users: a password by reference -------------------------------------------------------


def test_etcd_users_and_passwords_by_reference_confine_the_controller_to_its_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLS without client certificates, and etcd's authentication: a user whose role reaches `/stagectl/`
    only. etcd 3.4's JSON gateway refuses requests carrying both a client certificate and a user, so a
    deployment chooses one (docs/ha.md)."""
    with etcd_cluster(tmp_path / "etcd", members=1, client_cert_auth=False) as single:
        admin = single.client(0)

        def grant(path: str, body: dict[str, object]) -> None:
            admin.post(admin.get_url(path), json=body)

        def b64(text: str) -> str:
            return base64.b64encode(text.encode()).decode()

        grant("/auth/user/add", {"name": "root", "password": "root-secret"})
        grant("/auth/user/grant", {"user": "root", "role": "root"})
        grant("/auth/role/add", {"name": "stagectl"})
        perm = {"permType": "READWRITE", "key": b64("/stagectl/"), "range_end": b64("/stagectl0")}
        grant("/auth/role/grant", {"name": "stagectl", "perm": perm})
        grant("/auth/user/add", {"name": "controller", "password": "etcd-password-123"})
        grant("/auth/user/grant", {"user": "controller", "role": "stagectl"})
        grant("/auth/enable", {})

        monkeypatch.setenv("STAGECTL_ETCD_PASSWORD", "etcd-password-123")
        config = EtcdConfig(
            endpoints=single.endpoints,
            ca_bundle=str(single.ca),
            username="controller",
            password_ref="env:STAGECTL_ETCD_PASSWORD",
        )
        session = Session(Etcd(config), instance="a", ttl=TTL, prefix="/stagectl").start()
        try:
            until("the session", session.held)
            assert Leadership(session, "contoso").campaign()
        finally:
            session.close()
        with pytest.raises(errors.ExternalFailure, match="permission denied"):
            Etcd(config).txn([], [Put("/elsewhere/key", b"v")])

        monkeypatch.setenv("STAGECTL_ETCD_PASSWORD", "not-the-password")
        with pytest.raises(errors.ExternalFailure, match="authentication failed") as refused:
            Etcd(config).get("/stagectl/tenants/contoso/leader")
        assert "not-the-password" not in str(refused.value)


def test_status_says_leadership_is_unknown_when_etcd_does_not_answer_never_that_nobody_leads(
    tmp_path: Path,
) -> None:
    workspace = make_workspace(tmp_path / "ws")
    nowhere = [f"https://127.0.0.1:{port}" for port in free_ports(3)]
    workspace.write_config(
        coordination={"etcd": {"endpoints": nowhere, "timeout": "1s"}, "tenant": "contoso"}
    )
    shown = workspace.stagectl("status", "--config", str(workspace.config_path))
    assert shown.returncode == 0, shown.stderr
    assert "leader      unknown: etcd did not answer" in shown.stdout
    assert "none" not in shown.stdout.split("leader", 1)[1].splitlines()[0]


def test_every_command_line_in_the_ha_guide_is_one_stagectl_accepts() -> None:
    from controller.commands import cli

    guide = (Path(__file__).resolve().parents[1] / "docs" / "ha.md").read_text(encoding="utf-8")
    commands = [line for line in guide.splitlines() if line.startswith("stagectl ")]
    assert len(commands) >= 4
    for command in commands:
        cli.build_parser().parse_args(shlex.split(command)[1:])
