"""The simulator's SQLite store: persistence across runners and processes, rows written, SimRunner."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.exchange.errors import CmdletError, PermanentError, ThrottledError
from controller.secrets import Credential
from controller.sim.exchange import database
from controller.sim.exchange import state as s
from controller.sim.exchange import store as store_module
from controller.sim.exchange.simulator import ExchangeSimulator
from controller.sim.exchange.store import SimRunner, SimStore
from tests.test_exchange_sim_cli import stagectl_sim

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
ENDPOINT = {
    "ExchangeOutlookAnywhere": True,
    "Name": "StagedEndpoint",
    "Credentials": Credential("migrator", "s3cret-pw"),
    "ExchangeServer": "mail.contoso.com",
    "RpcProxyServer": "mail.contoso.com",
}


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "exchange.sqlite"
    simulator = ExchangeSimulator(now=T0)
    simulator.add_recipient("alice@contoso.com")
    SimStore(path).create(simulator)
    return path


def test_round_trip_across_runners(state: Path) -> None:
    SimRunner(state).run("New-MigrationEndpoint", ENDPOINT)
    SimRunner(state).run(
        "New-MigrationBatch",
        {
            "Name": "B1",
            "SourceEndpoint": "StagedEndpoint",
            "CSVData": b"EmailAddress\nalice@contoso.com\n",
            "AutoStart": True,
            "StartAfter": T0 - timedelta(hours=1),
        },
    )
    with SimStore(state).transaction() as simulator:
        simulator.advance(timedelta(hours=1))
    [batch] = SimRunner(state).run("Get-MigrationBatch", {"ResultSize": "Unlimited"})
    assert batch["Status"] == "Synced" and batch["StartAfterUTC"] == T0 - timedelta(hours=1)
    assert SimStore(state).now() == T0 + timedelta(hours=1)
    reloaded = SimStore(state).load()
    assert "s3cret-pw" not in reloaded.to_json()
    assert b"s3cret-pw" not in b"".join(path.read_bytes() for path in state.parent.glob(f"{state.name}*"))
    assert reloaded.to_json() == ExchangeSimulator.from_json(reloaded.to_json()).to_json()
    assert reloaded.calls("Get-MigrationBatch") == 1 and reloaded.calls() == 3


def test_refused_call_is_counted_and_changes_nothing(state: Path) -> None:
    runner = SimRunner(state)
    runner.run("New-MigrationEndpoint", ENDPOINT)
    before = SimStore(state).load().state.endpoints
    with pytest.raises(CmdletError):
        runner.run("Set-MigrationEndpoint", {"Identity": "StagedEndpoint", "MaxConcurrentMigrations": 0})
    after = SimStore(state).load()
    assert after.state.endpoints == before
    assert after.calls("Set-MigrationEndpoint") == 1


def test_throttle_and_latency_persist(state: Path) -> None:
    with SimStore(state).transaction() as simulator:
        simulator.throttle("Get-MigrationBatch", 1)
        simulator.set_latency(0.25)
    slept: list[float] = []
    runner = SimRunner(state, sleep=slept.append)
    with pytest.raises(ThrottledError):
        runner.run("Get-MigrationBatch", {})
    assert runner.run("Get-MigrationBatch", {}) == []
    assert slept == [0.25, 0.25]


def test_unexpected_exception_discards_changes(state: Path) -> None:
    with pytest.raises(RuntimeError), SimStore(state).transaction() as simulator:
        simulator.advance(timedelta(days=1))
        raise RuntimeError("boom")
    assert SimStore(state).now() == T0


def test_missing_state_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="stagectl sim init"):
        SimRunner(tmp_path / "absent.sqlite").run("Get-MigrationBatch", {})


def test_concurrent_transactions_lose_no_update(state: Path) -> None:
    def worker(prefix: str) -> None:
        runner = SimRunner(state)  # its own runner and store: the transactions serialise the threads
        for i in range(25):
            with SimStore(state).transaction() as simulator:
                simulator.add_recipient(f"{prefix}{i}@contoso.com")
            runner.run("Get-MigrationBatch", {})

    threads = [threading.Thread(target=worker, args=(prefix,)) for prefix in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    simulator = SimStore(state).load()
    assert simulator.calls("Get-MigrationBatch") == 50
    assert len(simulator.state.recipients) == 51


# --- rows written, other processes, restarts, export -------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def csv(*addresses: str) -> bytes:
    return ("EmailAddress\n" + "".join(f"{address}\n" for address in addresses)).encode()


def members(batch: int, count: int = 5) -> list[str]:
    return [f"u{batch}-{i}@contoso.com" for i in range(count)]


@pytest.fixture
def tenant(tmp_path: Path) -> Path:
    """Three batches of five mail users, none started, and the endpoint."""
    path = tmp_path / "exchange.sqlite"
    simulator = ExchangeSimulator(now=T0)
    for batch in range(4):
        for address in members(batch):
            simulator.add_recipient(address)
    simulator.call("New-MigrationEndpoint", ENDPOINT)
    for batch in range(3):
        simulator.call("New-MigrationBatch", {"Name": f"B{batch}", "SourceEndpoint": "StagedEndpoint",
                                              "CSVData": csv(*members(batch))})  # fmt: skip
    SimStore(path).create(simulator)
    return path


def another_process(path: Path, code: str) -> str:
    """Run `code` in a new Python process with `path`, SimRunner and SimStore at hand; its stdout."""
    script = (
        "import sys\nfrom datetime import timedelta\n"
        "from controller.sim.exchange.store import SimRunner, SimStore\n"
        f"path = sys.argv[1]\n{textwrap.dedent(code)}"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_only_the_rows_that_changed_are_written(tenant: Path) -> None:
    runner, store = SimRunner(tenant), SimStore(tenant)
    runner.run("Get-MigrationBatch", {})
    assert runner.store.rows_written == 1  # the tenant row: the call is counted
    runner.run("Set-MigrationBatch", {"Identity": "B1", "NotificationEmails": ["admin@contoso.com"]})
    assert runner.store.rows_written == 2  # that batch's row, and the tenant row
    runner.run("Start-MigrationBatch", {"Identity": "B0"})
    assert runner.store.rows_written == 5 + 1 + 1  # its five users (Syncing), its row (Running), the tenant
    with store.transaction() as simulator:
        simulator.advance(timedelta(minutes=20))
    # Five users Synced, their mail users now mailboxes, the batch's counts, the clock.
    assert store.rows_written == 5 + 5 + 1 + 1
    with pytest.raises(CmdletError):
        runner.run("Complete-MigrationBatch", {"Identity": "B2"})  # refused: it was never started
    assert runner.store.rows_written == 1
    with store.transaction() as simulator:
        assert simulator.batch_status("B0") == "Synced"
    assert store.rows_written == 0
    runner.run("Remove-MigrationUser", {"Identity": members(1)[0], "Confirm": False})
    assert runner.store.rows_written == 4  # the user's row goes, a note that it went, the counts, the tenant
    runner.run(
        "New-MigrationBatch", {"Name": "B3", "SourceEndpoint": "StagedEndpoint", "CSVData": csv(*members(3))}
    )
    assert runner.store.rows_written == 5 + 1 + 1
    assert SimStore(tenant).load().state.batches["b0"].users[members(0)[0]].status == "Synced"


def test_every_field_of_a_user_and_a_recipient_has_a_column() -> None:
    assert set(database.USER_COLUMNS) == set(s.User.model_fields)
    assert set(s.Recipient.model_fields) == {"address", "type", "dir_synced", "licensed"}


def test_a_new_process_resumes_from_the_file_and_this_one_sees_its_changes(tenant: Path) -> None:
    runner = SimRunner(tenant)
    runner.run("Start-MigrationBatch", {"Identity": "B0"})  # this process keeps the tenant from here
    shown = another_process(
        tenant,
        """
        runner = SimRunner(path)
        print(runner.run("Get-MigrationBatch", {"Identity": "B0"})[0]["Status"])
        runner.run("Stop-MigrationBatch", {"Identity": "B0"})
        """,
    )
    assert shown.split() == ["Syncing"]
    whole = runner.store.reads.whole
    [batch] = runner.run("Get-MigrationBatch", {"Identity": "B0"})
    assert batch["Status"] == "Stopping" and batch["StoppedCount"] == 5
    assert runner.store.reads.whole == whole  # caught up: the rows the other process wrote
    assert SimStore(tenant).load().calls("Stop-MigrationBatch") == 1


def test_what_other_processes_wrote_is_caught_up_exactly(tenant: Path) -> None:
    runner = SimRunner(tenant)
    runner.run("Get-MigrationBatch", {})  # this process keeps the tenant from here
    runner.run("Get-MigrationUser", {"BatchId": "B1"})  # and has read B1's users
    for address in ("u3-4@contoso.com", "u0-2@contoso.com", "u3-1@contoso.com"):  # and some of the directory
        runner.run("Get-Recipient", {"Identity": address})
    with pytest.raises(CmdletError):
        runner.run("Get-Recipient", {"Identity": "late@contoso.com"})  # not there yet
    another_process(
        tenant,
        """
        runner = SimRunner(path)
        runner.run("Start-MigrationBatch", {"Identity": "B0"})
        runner.run("Remove-MigrationUser", {"Identity": "u1-0@contoso.com", "Confirm": False})
        runner.run("Remove-MigrationBatch", {"Identity": "B2", "Confirm": False})
        with SimStore(path).transaction() as simulator:
            simulator.advance(timedelta(minutes=30))  # B2 is gone, B0 is synced
            simulator.add_recipient("late@contoso.com")
            simulator.fail_user("u3-1@contoso.com", exception_type="MigrationPermanentException", message="x")
            del simulator.state.recipients["u3-4@contoso.com"]
        csv = b"EmailAddress\\nu3-0@contoso.com\\nu3-1@contoso.com\\nu1-0@contoso.com\\n"
        runner.run("New-MigrationBatch", {"Name": "B2", "SourceEndpoint": "StagedEndpoint", "CSVData": csv})
        runner.run("Set-MigrationBatch", {"Identity": "B1", "AddUsers": True,
                                          "CSVData": b"EmailAddress\\nu1-0@contoso.com\\n"})
        """,
    )
    reads = SimStore(tenant).reads
    whole = reads.whole
    with pytest.raises(CmdletError):
        runner.run("Get-Recipient", {"Identity": "u3-4@contoso.com"})
    late = runner.run("Get-Recipient", {"Identity": "late@contoso.com"})
    assert late[0]["RecipientTypeDetails"] == "MailUser"
    batches = {batch["Identity"]: batch for batch in runner.run("Get-MigrationBatch", {})}
    assert list(batches) == ["B0", "B1", "B2"]
    assert batches["B0"]["Status"] == "Synced" and batches["B2"]["TotalCount"] == 3
    assert batches["B1"]["TotalCount"] == 5 and batches["B1"]["FailedCount"] == 1  # u1-0 is B2's now
    with SimStore(tenant).transaction() as simulator:
        kept = simulator.to_json()  # and now every row, read in the order the database keeps
        assert list(simulator.state.batches["b1"].users)[-1] == "u1-0@contoso.com"  # set again: it goes last
    assert reads.whole == whole and reads.caught_up > 0  # only what was written since was read again
    assert kept == SimStore(tenant).load().to_json()


def test_a_process_reads_the_users_and_recipients_a_call_needs_and_no_more(tenant: Path) -> None:
    runner = SimRunner(tenant)
    reads = runner.store.reads
    assert [batch["TotalCount"] for batch in runner.run("Get-MigrationBatch", {})] == [5, 5, 5]
    assert (reads.whole, reads.batches_of_users, reads.recipients) == (1, 0, 0)  # the counts are stored
    assert len(runner.run("Get-MigrationUser", {"BatchId": "B1"})) == 5
    runner.run("Get-Recipient", {"Filter": "(PrimarySmtpAddress -eq 'u3-0@contoso.com')"})
    assert (reads.batches_of_users, reads.recipients) == (1, 1)
    # Two members B0 holds: B0's users are read to see they are real members there, not the others.
    runner.run("New-MigrationBatch", {"Name": "Dup", "SourceEndpoint": "StagedEndpoint",
                                      "CSVData": csv(*members(0)[:2], *members(3)[:1])})  # fmt: skip
    assert reads.batches_of_users == 2
    users = runner.run("Get-MigrationUser", {"BatchId": "Dup"})
    duplicate = [str(user["ErrorSummary"]).startswith("Error: UserDuplicateInOtherBatch") for user in users]
    assert duplicate == [True, True, False]


def test_processes_writing_at_once_lose_no_update(tenant: Path) -> None:
    code = """
        prefix = sys.argv[2]
        runner = SimRunner(path)
        for i in range(20):
            with SimStore(path).transaction() as simulator:
                simulator.add_recipient(f"{prefix}{i}@contoso.com")
            runner.run("Get-MigrationBatch", {})
        """
    script = (
        "import sys\nfrom controller.sim.exchange.store import SimRunner, SimStore\n"
        f"path = sys.argv[1]\n{textwrap.dedent(code)}"
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tenant), prefix], cwd=ROOT, stderr=subprocess.PIPE
        )
        for prefix in ("p", "q")
    ]
    SimRunner(tenant).run("Get-MigrationBatch", {})  # and this process at the same time
    for worker in workers:
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr
    simulator = SimStore(tenant).load()
    assert simulator.calls("Get-MigrationBatch") == 41
    assert len(simulator.state.recipients) == 20 + 40


def test_a_discarded_transaction_leaves_no_trace_in_this_process(tenant: Path) -> None:
    runner = SimRunner(tenant)
    runner.run("Start-MigrationBatch", {"Identity": "B0"})
    with pytest.raises(RuntimeError), SimStore(tenant).transaction() as simulator:
        simulator.advance(timedelta(days=1))
        simulator.add_recipient("ghost@contoso.com")
        raise RuntimeError("boom")
    with SimStore(tenant).transaction() as simulator:  # not the tenant the failed transaction changed
        assert simulator.now == T0 and "ghost@contoso.com" not in simulator.state.recipients
        assert simulator.batch_status("B0") == "Syncing"


def test_export_prints_the_tenant_as_json_that_reads_back(
    tenant: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    SimRunner(tenant).run("Start-MigrationBatch", {"Identity": "B0"})
    assert stagectl_sim("export", "--state", str(tenant)) == 0
    printed = capsys.readouterr().out
    assert printed == SimStore(tenant).load().to_json() + "\n"
    copy = tmp_path / "copy.sqlite"
    SimStore(copy).create(ExchangeSimulator.from_json(printed))
    assert stagectl_sim("export", "--state", str(copy), "--out", str(tmp_path / "copy.json")) == 0
    assert (tmp_path / "copy.json").read_text() == printed


def test_a_json_state_of_an_older_stagectl_is_refused_and_init_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "exchange.json"
    path.write_text(ExchangeSimulator(now=T0).to_json())
    with pytest.raises(PermanentError, match="not a simulator database"):
        SimRunner(path).run("Get-MigrationBatch", {})
    SimStore(path).create(ExchangeSimulator(now=T0 + timedelta(days=1)))
    assert SimStore(path).now() == T0 + timedelta(days=1)


def test_a_tenant_created_again_is_read_afresh(tenant: Path) -> None:
    runner = SimRunner(tenant)
    assert len(runner.run("Get-MigrationBatch", {})) == 3
    SimStore(tenant).create(ExchangeSimulator(now=T0))
    assert runner.run("Get-MigrationBatch", {}) == []


def test_more_stores_than_a_process_keeps_open_all_work(tmp_path: Path) -> None:
    paths = [tmp_path / f"tenant{i}.sqlite" for i in range(store_module.KEPT_DATABASES + 3)]
    for i, path in enumerate(paths):
        SimStore(path).create(ExchangeSimulator(now=T0 + timedelta(days=i)))
        SimRunner(path).run("Get-MigrationBatch", {})
    assert [SimStore(path).now() for path in paths] == [T0 + timedelta(days=i) for i in range(len(paths))]
    assert SimStore(paths[0]).load().calls("Get-MigrationBatch") == 1
