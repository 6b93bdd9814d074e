"""The live migration page and its JSON (controller/web), and the counts under it: fast, in-process, with
Starlette's TestClient on a state directory written by real passes over the simulators."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import time
import urllib.error
import urllib.request
import warnings
from datetime import timedelta
from pathlib import Path
from typing import IO

import pytest

from controller import errors
from controller.runtime import forecast, status, store
from controller.runtime.store import ProgressSample
from controller.web import app, page, server
from tests.support import webdemo
from tests.support.controller import CREDENTIALS, PILOT, START, Workspace, desired_files, make_workspace

with warnings.catch_warnings():  # Starlette's TestClient asks for httpx2; httpx is what the project installs
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path / "ws")


def _pass_after(workspace: Workspace, hours: float) -> None:
    with workspace.tenant() as tenant:
        tenant.advance(timedelta(hours=hours))
    workspace.run_pass()


def _batch(workspace: Workspace, name: str) -> dict[str, object]:
    rows = workspace.status()["batches"]
    assert isinstance(rows, list)
    return next(row for row in rows if row["name"] == name)


def test_a_completed_batch_counts_its_finalized_users_as_synced(workspace: Workspace) -> None:
    """Exchange counts completed (finalized) users apart from synced ones: a Completed batch reads
    SyncedCount 0, FinalizedCount 2; status shows 2/2, not 0/2."""
    workspace.run_pass()
    workspace.commit(desired_files(pilot="started"), message="Start the pilot")
    workspace.run_pass()
    _pass_after(workspace, 6)
    assert _batch(workspace, PILOT)["status"] == "Synced"
    workspace.commit(desired_files(pilot="completed"), message="Complete the pilot")
    workspace.run_pass()
    for _ in range(4):
        _pass_after(workspace, 6)
    [observed] = workspace.exchange().call("Get-MigrationBatch", {"Identity": PILOT})
    assert (observed["Status"], observed["SyncedCount"], observed["FinalizedCount"]) == ("Completed", 0, 2)
    pilot = _batch(workspace, PILOT)
    assert (pilot["status"], pilot["synced"], pilot["finalized"], pilot["total"]) == ("Completed", 2, 2, 2)
    text = workspace.stagectl("status", "--config", str(workspace.config_path)).stdout
    assert f"{PILOT:<24}completed  Completed" in text and "2/2" in text


# --- the progress samples and the forecast -------------------------------------------------------------


def _sample(hour: int, synced: int, *, total: int = 10, status: str = "Syncing") -> ProgressSample:
    return ProgressSample("wave", START + timedelta(hours=hour), status, synced, 0, total)


def test_the_eta_follows_the_throughput_of_the_last_day() -> None:
    """Hours 0 and 10 fall out of the 24 h window: 4 users in the 10 h from hour 30 to 40."""
    samples = [_sample(0, 0), _sample(10, 1), _sample(30, 2), _sample(40, 6)]
    found = forecast.batch("Wave", status="Syncing", synced=6, failed=1, total=10, samples=samples)
    assert (found.state, found.remaining, found.failed) == ("syncing", 3, 1)
    assert found.per_hour == pytest.approx(0.4)
    assert found.eta == START + timedelta(hours=47.5)


def test_no_eta_from_one_sample_a_stall_or_a_changed_member_count() -> None:
    one = forecast.batch("W", status="Syncing", synced=1, failed=0, total=10, samples=[_sample(0, 1)])
    assert (one.state, one.eta) == ("syncing", None) and "one pass" in one.basis
    stalled = forecast.batch(
        "W",
        status="Syncing",
        synced=4,
        failed=0,
        total=10,
        samples=[_sample(0, 2), _sample(30, 4), _sample(40, 4), _sample(56, 4)],
    )
    assert (stalled.state, stalled.eta) == ("stalled", None)
    assert "no user synced since 2026-11-25T16:00:00Z" in stalled.basis  # nothing in 26 h: a whole window
    # Less than a window without a gain is a batch still measuring (a mailbox takes hours, a batch may queue
    # behind the endpoint's concurrent migrations), not a stall; so is a batch that has synced no one yet.
    for samples in ([_sample(0, 2), _sample(30, 4), _sample(50, 4)], [_sample(0, 0), _sample(0, 0)]):
        slow = forecast.batch("W", status="Syncing", synced=4, failed=0, total=10, samples=samples)
        assert (slow.state, slow.eta) == ("syncing", None) and slow.basis.startswith("measuring"), slow
    # Two samples at the same time with a gain (one pass recorded twice) divide by no time: measuring.
    same = [_sample(0, 2), _sample(0, 3)]
    assert forecast.batch("W", status="Syncing", synced=3, failed=0, total=10, samples=same).eta is None
    waiting = forecast.batch("W", status="Waiting", synced=0, failed=0, total=10, samples=[_sample(0, 0)] * 2)
    assert (waiting.state, waiting.eta) == ("not started", None) and "waiting" in waiting.basis
    regrown = [_sample(0, 0, total=8), _sample(1, 4, total=8), _sample(2, 4)]  # members added at hour 2
    again = forecast.batch("W", status="Syncing", synced=4, failed=0, total=10, samples=regrown)
    assert (again.state, again.eta) == ("syncing", None)


def test_the_earliest_cutover_is_the_latest_gate_and_a_gate_time_cannot_open_decides() -> None:
    later = forecast.Gate(START + timedelta(hours=48), "ttl-lead", "TTL low")
    sooner = forecast.Gate(START + timedelta(hours=7), "batches-completed", "Wave synced by then")
    assert forecast.cutover([sooner, later], done=None).gate == "ttl-lead"
    waiting = forecast.Gate(None, "batches-completed", "Wave is stalled")
    decided = forecast.cutover([sooner, later, waiting], needs=["a fix"], done=None)
    assert (decided.earliest, decided.gate, decided.needs) == (None, "batches-completed", ("a fix",))


def test_a_database_of_schema_1_gains_the_progress_table(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / store.DATABASE_FILE) as old:
        old.execute("CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        old.execute("INSERT INTO settings VALUES ('pass', '7')")
        old.execute("PRAGMA user_version = 1")
    opened = store.Store.open(tmp_path)
    try:
        assert opened.next_pass() == 8  # what it held is kept
        opened.record_progress([_sample(0, 1), _sample(1, 2)])
        assert [s.synced for s in opened.progress(["WAVE"])["wave"]] == [1, 2]
    finally:
        opened.close()


def test_the_status_carries_the_timeline_and_the_forecast(tmp_path: Path) -> None:
    workspace = webdemo.half_way(tmp_path / "ws")
    data = workspace.status()
    wave = _batch(workspace, webdemo.WAVE)
    assert (wave["status"], wave["synced"], wave["failed"], wave["total"]) == ("Syncing", 4, 1, 12)
    assert wave["since"] == "2026-11-24T14:00:00Z"
    predicted = {row["name"]: row for row in data["forecast"]["batches"]}  # type: ignore[index]
    assert predicted[webdemo.WAVE]["eta"] is not None and predicted[webdemo.WAVE]["remaining"] == 7
    assert predicted[PILOT]["state"] == "completed"
    [mx] = data["cutover"]["records"]  # type: ignore[index]
    assert (mx["lowTtlSince"], mx["swapPossibleAt"]) == ("2026-11-24T11:00:00Z", "2026-11-26T11:00:00Z")
    cutover = data["forecast"]["cutover"]  # type: ignore[index]
    assert (cutover["earliest"], cutover["gate"]) == ("2026-11-26T11:00:00Z", "ttl-lead")
    assert cutover["needs"] == [f"{webdemo.WAVE}: 1 failed user needs its fix, then a retry"]
    assert data["cutover"]["spf"][0]["phase"].startswith("coexistence")  # type: ignore[index]


# --- the page and its JSON (Starlette's TestClient) -------------------------------------------------------

COMMIT_URL = "https://git.example/migration/commit/{sha}"


@pytest.fixture(scope="module")
def half_way(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return webdemo.half_way(tmp_path_factory.mktemp("web") / "ws")


def _client(state_dir: Path, **options: object) -> TestClient:
    return TestClient(app.create(state_dir, commit_url=COMMIT_URL, **options))  # type: ignore[arg-type]


def test_the_json_has_the_batches_failures_forecast_timeline_and_audit(half_way: Workspace) -> None:
    response = _client(half_way.state_dir).get("/api/status.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    data = response.json()
    assert {
        "observedAt",
        "conditions",
        "revision",
        "batches",
        "failures",
        "cutover",
        "forecast",
        "dns",
        "blocked",
        "waiting",
        "drift",
        "audit",
        "refreshSeconds",
    } <= set(data)
    wave = next(b for b in data["batches"] if b["name"] == webdemo.WAVE)
    assert {k: wave[k] for k in ("status", "synced", "failed", "total", "forecast")} == {
        "status": "Syncing",
        "synced": 4,
        "failed": 1,
        "total": 12,
        "forecast": "syncing",
    }
    assert wave["eta"] == "2026-11-25T03:20:00Z"  # 3 users in the 4 h from 14:00 to 18:00; 7 to go
    [failure] = data["failures"]
    assert (failure["address"], failure["batch"]) == (webdemo.FAILED_MEMBER, webdemo.WAVE)
    assert failure["catalogue"]["fix"].startswith("Remove the items over 150 MB")
    assert failure["catalogue"]["retryHelps"] is False
    assert failure["handling"].startswith("held until fixed")  # what the plan does about it
    assert data["forecast"]["gate"] == "ttl-lead" and data["forecast"]["earliest"] == "2026-11-26T11:00:00Z"
    assert data["cutover"]["records"][0]["swapPossibleAt"] == "2026-11-26T11:00:00Z"
    audit = data["audit"]
    assert audit and all(a["phase"] in ("result", "settled") for a in audit)
    assert audit[0]["seq"] > audit[-1]["seq"]  # newest first
    assert audit[0]["url"] == COMMIT_URL.replace("{sha}", audit[0]["revision"])
    assert data["revision"]["url"] == COMMIT_URL.replace("{sha}", data["revision"]["served"])


def test_the_page_shows_bars_failures_with_fixes_and_refreshes_itself(half_way: Workspace) -> None:
    response = _client(half_way.state_dir, refresh=15).get("/")
    assert response.status_code == 200
    html = response.text
    assert '<meta http-equiv="refresh" content="15">' in html
    assert f'data-batch="{webdemo.WAVE}" data-synced="4" data-failed="1" data-total="12"' in html
    assert webdemo.FAILED_MEMBER in html and "Remove the items over 150 MB" in html
    assert "<script" not in html
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert _client(half_way.state_dir).post("/").status_code == 405  # read-only


def test_hostile_text_is_escaped(half_way: Workspace, tmp_path: Path) -> None:
    """A batch name, an address, an Exchange error and a commit subject holding markup (none can come
    from a valid repository, but Exchange and status files are not ours) are shown as text."""
    data = half_way.status()
    hostile = "<script>alert(1)</script>"
    data["batches"][1]["name"] = hostile  # type: ignore[index]
    for failed in (data["batches"][1]["failedUsers"][0], data["failures"][0]):  # type: ignore[index]
        failed["address"] = f'x"><img src=x onerror=alert(2)>{hostile}'
        failed["error"] = f"Error: {hostile}"
    data["revision"]["subject"] = f"<b>{hostile}</b>"  # type: ignore[index]
    status.write(tmp_path, data)
    html = _client(tmp_path).get("/").text
    assert "<script>" not in html and "<img" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'data-batch="&lt;script&gt;alert(1)&lt;/script&gt;"' in html
    assert _client(tmp_path).get("/api/status.json").json()["batches"][1]["name"] == hostile


def test_no_secret_is_served(half_way: Workspace, tmp_path: Path) -> None:
    data = half_way.status()
    for failed in (data["batches"][1]["failedUsers"][0], data["failures"][0]):  # type: ignore[index]
        failed["error"] = (
            "Error: MigrationTransientException: logon failed for CONTOSO\\migadmin, password=hunter2"
        )
    status.write(tmp_path, data)
    for state_dir in (half_way.state_dir, tmp_path):
        client = _client(state_dir)
        served = client.get("/").text + client.get("/api/status.json").text
        assert CREDENTIALS.split(":", 1)[1] not in served and "hunter2" not in served


def test_before_the_first_pass_the_page_says_so(tmp_path: Path) -> None:
    client = _client(tmp_path)
    assert "No pass has written a status yet" in client.get("/").text
    assert client.get("/api/status.json").status_code == 503


def test_commit_links_only_for_a_sha_and_a_template() -> None:
    assert page.commit_link(COMMIT_URL, "ab12cd34") == "https://git.example/migration/commit/ab12cd34"
    assert page.commit_link(None, "ab12cd34") is None
    assert page.commit_link(COMMIT_URL, "ab12<x>") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080", ("127.0.0.1", 8080)),
        (":9000", ("127.0.0.1", 9000)),
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:8080", ("::1", 8080)),
        ("0.0.0.0:8080", ("0.0.0.0", 8080)),
    ],
)
def test_the_page_listens_on_loopback_unless_an_address_is_written(
    text: str, expected: tuple[str, int]
) -> None:
    assert server.parse_listen(text) == expected
    assert server.is_loopback(expected[0]) is (expected[0] != "0.0.0.0")


def test_a_bad_listen_address_is_one_sentence() -> None:
    with pytest.raises(errors.InvalidInput, match="give \\[ADDRESS:\\]PORT"):
        server.parse_listen("web.example:http")
    with pytest.raises(errors.InvalidInput, match="not an IP address"):
        server.parse_listen("web.example:8080")


# --- the commands ------------------------------------------------------------------------------------------


def _url_in(stream: IO[str], pattern: str) -> str:
    for line in stream:
        found = re.search(pattern, line)
        if found:
            return found.group(1)
    raise AssertionError(f"no {pattern!r} in the output")


def test_serve_serves_a_stopped_controller_on_loopback_and_stops_on_sigterm(half_way: Workspace) -> None:
    process = half_way.start(
        "serve", "--state", str(half_way.state_dir), "--http", "0", "--commit-url", COMMIT_URL
    )
    try:
        assert process.stdout is not None
        url = _url_in(process.stdout, r"at (http://127\.0\.0\.1:\d+/) ")
        with urllib.request.urlopen(url + "api/status.json", timeout=10) as response:
            data = json.loads(response.read())
        assert data["failures"][0]["address"] == webdemo.FAILED_MEMBER
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_run_serves_the_page_of_the_running_controller(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path / "ws", interval="1s")
    process = workspace.start("run", "--config", str(workspace.config_path), "--http", "127.0.0.1:0")
    try:
        assert process.stderr is not None
        url = _url_in(process.stderr, r"the migration page at (http://127\.0\.0\.1:\d+/)")
        deadline = time.monotonic() + 30
        while True:  # the page answers 503 until the first pass wrote its status
            try:
                with urllib.request.urlopen(url + "api/status.json", timeout=10) as response:
                    data = json.loads(response.read())
                break
            except urllib.error.HTTPError as error:
                assert error.code == 503 and time.monotonic() < deadline
                time.sleep(0.2)
        assert [b["name"] for b in data["batches"]] == [PILOT, "Wave1"]
        with urllib.request.urlopen(url, timeout=10) as response:
            assert b"Migration status" in response.read()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_a_status_file_that_is_not_one_is_said_not_a_server_error(tmp_path: Path) -> None:
    for body in ("{not json", "[1, 2]"):
        (tmp_path / status.STATUS_FILE).write_text(body, encoding="utf-8")
        client = TestClient(app.create(tmp_path))
        page_answer, json_answer = client.get("/"), client.get("/api/status.json")
        assert (page_answer.status_code, json_answer.status_code) == (503, 503)
        assert "the next pass of the controller writes it again" in page_answer.text
        assert "the next pass" in json_answer.json()["error"]
