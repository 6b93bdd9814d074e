"""The push webhook: only a request signed with the shared secret wakes the loop, a push to another
branch is ignored, and end to end a merge on a remote repository reaches Exchange without waiting for
the interval."""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
from pathlib import Path

import pytest

from controller import errors
from controller.runtime.config import load_config
from controller.runtime.webhook import MAX_BODY, WebhookServer, pushed_ref, signed
from controller.sim.bind import free_port
from tests.support.controller import make_workspace
from tests.support.pushes import github as signed_with
from tests.support.pushes import post
from tests.test_controller_process import BOUND, processes, run, wait_until  # noqa: F401 - fixture

SECRET = "webhook-shared-secret"


def github(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return signed_with(body, secret)


def too_large(port: int) -> int:
    """A request announcing a body over the limit: answered before any of it is read."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=BOUND)
    try:
        connection.putrequest("POST", "/hooks/git")
        connection.putheader("Content-Length", str(MAX_BODY + 1))
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_signatures_and_refs() -> None:
    body = b'{"ref": "refs/heads/main"}'
    assert signed(body, {k.lower(): v for k, v in github(body).items()}, SECRET)
    assert not signed(body, {k.lower(): v for k, v in github(body, "guess").items()}, SECRET)
    assert not signed(body + b" ", {k.lower(): v for k, v in github(body).items()}, SECRET)
    assert signed(body, {"x-gitlab-token": SECRET}, SECRET)
    assert not signed(body, {"x-gitlab-token": "nope"}, SECRET) and not signed(body, {}, SECRET)
    assert pushed_ref(body) == "refs/heads/main"
    assert pushed_ref(b"not json") is None and pushed_ref(b"[1]") is None


def test_only_a_signed_push_to_the_branch_wakes() -> None:
    woken = threading.Event()
    server = WebhookServer("127.0.0.1", 0, secret=SECRET, branch="main", wake=woken.set).start()
    try:
        main, other = json.dumps({"ref": "refs/heads/main"}).encode(), b'{"ref": "refs/heads/feature"}'
        assert post(server.port, main, github(main, "wrong")) == 401 and not woken.is_set()
        assert post(server.port, main, {}) == 401 and not woken.is_set()
        assert post(server.port, other, github(other)) == 202 and not woken.is_set()
        assert post(server.port, main, github(main), path="/elsewhere") == 404 and not woken.is_set()
        assert too_large(server.port) == 413 and not woken.is_set()
        assert post(server.port, main, github(main)) == 202 and woken.is_set()
        assert (server.accepted, server.refused) == (1, 2)
    finally:
        server.stop()


def test_a_listen_address_that_is_not_address_port_is_refused(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path / "ws")
    source = {"repo": str(workspace.repo.path), "webhook": {"listen": "8090", "secretRef": "env:X"}}
    workspace.write_config(source=source)
    with pytest.raises(errors.InvalidInput) as refused:
        load_config(workspace.config_path)
    assert any("listen must be address:port" in problem for problem in refused.value.problems)


def test_a_merge_on_a_remote_repository_reaches_exchange_on_the_webhook(
    tmp_path: Path,
    processes: list[subprocess.Popen[str]],  # noqa: F811 - the fixture
) -> None:
    workspace = make_workspace(tmp_path / "ws")
    remote = tmp_path / "remote.git"
    workspace.repo.git("clone", "--bare", "--quiet", str(workspace.repo.path), str(remote))
    port = free_port()
    workspace.write_config(
        source={
            "repo": f"file://{remote}",
            "branch": "main",
            "desiredDir": "desired",
            "webhook": {"listen": f"127.0.0.1:{port}", "secretRef": "env:STAGECTL_TEST_HOOK_SECRET"},
        }
    )
    workspace.env["STAGECTL_TEST_HOOK_SECRET"] = SECRET
    process = run(workspace, processes)  # interval 1 h: only the webhook can bring the next pass
    wait_until(lambda: (workspace.state_dir / "status.json").exists(), process, "first pass")
    workspace.commit_desired(pilot="started", message="Start the pilot")
    workspace.repo.git("push", "--quiet", str(remote), "HEAD:main")
    body = json.dumps({"ref": "refs/heads/main", "after": workspace.repo.head()}).encode()
    assert post(port, body, github(body, "forged")) == 401
    assert post(port, body, github(body)) == 202
    wait_until(lambda: workspace.writes()["New-MigrationBatch"] == 1, process, "New-MigrationBatch")
    process.terminate()
    assert process.wait(timeout=BOUND) == 0
    _, err = process.communicate(timeout=BOUND)
    assert SECRET not in err
