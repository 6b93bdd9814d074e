"""Pull-request plans (issue 15 item 1): the command documented in docs/ci/ run on a real pair of
revisions of a real repository, against the snapshot a real controller pass published; its checksum is
the one `stagectl apply --checksum` accepts; its Markdown parses as CommonMark tables with every hostile
character kept as text."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token

from controller.commands import reviewed
from controller.desired import loader
from controller.desired.models import DesiredState
from controller.model.actions import DnsAction, ExchangeAction, Plan
from controller.model.snapshot import Snapshot
from controller.planner import changes, render
from tests.support.controller import (
    CREDENTIALS,
    PILOT,
    PILOT_MEMBERS,
    WAVE,
    WAVE_MEMBERS,
    ZONE_YAML,
    Workspace,
    batch_yaml,
    desired_files,
    make_workspace,
)

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / "docs" / "ci"
# Characters an address may legally hold that Markdown reads as emphasis or entities.
HOSTILE_MEMBER = "o'brien&co*x_y@contoso.com"
# A TXT value may hold anything: a pipe, HTML, an entity, backticks, emphasis.
TXT_BEFORE = "a|b <b>bold</b> &amp; `code` *em* _em_"
TXT_AFTER = "c|d <script>x</script> & ``tick`` **strong** __u__ ~~s~~"
FORMATTING = {"em_open", "strong_open", "s_open", "link_open", "html_inline", "html_block", "code_inline"}


def zone(txt: str) -> str:
    return (
        ZONE_YAML
        + f"""\
    - name: notes
      type: TXT
      ttl: 3600
      values: [{json.dumps(txt)}]
"""
    )


# --- Markdown, read back by a real CommonMark parser -------------------------------------------------


def parse(text: str) -> list[Token]:
    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).parse(text)


def tables(text: str) -> list[list[list[str]]]:
    """Every table as rows of cell texts (header row first); a cell holding formatting or HTML fails."""
    found: list[list[list[str]]] = []
    row: list[str] = []
    in_cell = False
    for token in parse(text):
        if token.type == "table_open":
            found.append([])
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close":
            found[-1].append(row)
        elif token.type in ("th_open", "td_open"):
            in_cell = True
        elif token.type in ("th_close", "td_close"):
            in_cell = False
        elif token.type == "inline" and in_cell:
            kinds = {child.type for child in token.children or []}
            assert not kinds & FORMATTING, f"a cell is formatted: {token.content!r} -> {kinds}"
            row.append("".join(child.content for child in token.children or []))
    return found


def code_spans(text: str) -> list[str]:
    return [
        child.content
        for token in parse(text)
        if token.type == "inline"
        for child in token.children or []
        if child.type == "code_inline"
    ]


def test_hostile_names_stay_text_in_every_table(tmp_path: Path) -> None:
    hostile = "x|y <img src=x onerror=alert(1)> &amp; `tick` *a* _b_ ~~c~~ [l](http://e) \\|\n#h"
    found = changes.DesiredChanges(
        "a" * 40,
        "b" * 40,
        (
            changes.Change(f"batch/{hostile}", "changed", (f"1 member added: {hostile}", "state a -> b")),
            changes.Change("dns/contoso.com/@/TXT", "added", (f"values [{hostile}]",)),
        ),
    )
    plan = Plan(
        revision="b" * 40,
        checksum="sha256:" + "c" * 64,
        actions=(
            ExchangeAction("Set-MigrationBatch", (("Identity", hostile),), f"batch/{hostile}", hostile),
            DnsAction(
                "contoso.com", "@", "TXT", 300, (hostile,), 300, ("old",), "dns/contoso.com/@/TXT", hostile
            ),
        ),
    )
    text = render.to_pr_markdown(plan, {f"exchange/{hostile}": hostile}, found, f"context {hostile}")
    shown = tables(text)
    flat = " ".join(hostile.split())  # a newline in a cell becomes a space
    assert [len(t) for t in shown] == [3, 2, 3]  # changes, unknown, actions: header and rows
    assert all(len(row) == 3 for row in shown[0]) and all(len(row) == 4 for row in shown[2])
    assert shown[0][1] == [f"batch/{flat}", "changed", f"1 member added: {flat}; state a -> b"]
    assert shown[1][1] == [f"exchange/{flat}", flat]
    assert shown[2][1][1] == f"batch/{flat}" and shown[2][1][3] == flat
    assert shown[2][2][2] == f"replace contoso.com TXT 300 {flat}"
    # the apply command is one code span, the only one
    assert code_spans(text)[-1] == f"stagectl apply --rev {'b' * 40} --checksum sha256:{'c' * 64}"
    assert not any(t.type.startswith("html") for t in parse(text))
    # The reviewed actions ride along as one HTML comment, whatever the names hold; read back whole.
    block = reviewed.block(plan)
    with_block = parse(text + "\n" + block)
    html = [t for t in with_block if t.type.startswith("html")]
    assert (
        len(html) == 1 and html[0].content == block and block.startswith("<!-- ") and block.count("-->") == 1
    )
    assert tables(text + "\n" + block) == shown
    saved = tmp_path / "plan.md"
    saved.write_text(text + "\n" + block, encoding="utf-8")
    back = reviewed.from_file(saved, plan.checksum)
    assert [e["object"] for e in back] == [f"batch/{hostile}", "dns/contoso.com/@/TXT"]
    assert reviewed.differences(back, plan.actions) == []


# --- the desired-state changes, pure ------------------------------------------------------------------


def load(files: dict[str, str], revision: str) -> DesiredState:
    data = {name.removeprefix("desired/"): body.encode() for name, body in files.items()}
    return loader.load_files(data, revision=revision)


def test_changes_name_each_object_with_counts_and_a_few_addresses() -> None:
    base_files = desired_files() | {"desired/dns/contoso.com.yaml": zone(TXT_BEFORE)}
    many = tuple(f"user{i}@contoso.com" for i in range(8))
    head_files = desired_files(pilot="started") | {
        "desired/dns/contoso.com.yaml": zone(TXT_AFTER).replace(
            'ttl: 3600\n      values: ["0 contoso', 'ttl: 600\n      values: ["0 contoso'
        ),
        "desired/batches/wave1.yaml": batch_yaml(WAVE, (*WAVE_MEMBERS[1:], *many)),
        "desired/batches/wave2.yaml": batch_yaml("Wave2", ("zed@contoso.com",), state="created"),
        "desired/migration.yaml": desired_files()["desired/migration.yaml"]
        .replace("maxConcurrentMigrations: 20", "maxConcurrentMigrations: 40")
        .replace("lowTtl: 300", "lowTtl: 600"),
    }
    base, head = load(base_files, "1" * 40), load(head_files, "2" * 40)
    found = changes.diff(base, head)
    by_object = {c.object: c for c in found.changes}
    assert by_object["batch/Pilot"].details == ("state planned -> started",)
    wave = by_object["batch/Wave1"].details
    assert wave[0] == "8 members added: " + ", ".join(many[:5]) + " and 3 more"
    assert wave[1] == f"1 member removed: {WAVE_MEMBERS[0]}"
    assert by_object["batch/Wave2"].kind == "added"
    assert by_object["batch/Wave2"].details == ("state created", "1 member", "zed@contoso.com")
    assert by_object["dns/contoso.com/@/MX"].details == ("ttl 3600 -> 600",)
    assert by_object["dns/contoso.com/notes/TXT"].details == (f"values [{TXT_BEFORE}] -> [{TXT_AFTER}]",)
    assert by_object["endpoint/StagedEndpoint"].details == ("maxConcurrentMigrations 20 -> 40",)
    assert by_object["migration/contoso"].details == ("policy.lowTtl 300 -> 600",)
    assert set(by_object) == {
        "batch/Pilot",
        "batch/Wave1",
        "batch/Wave2",
        "dns/contoso.com/@/MX",
        "dns/contoso.com/notes/TXT",
        "endpoint/StagedEndpoint",
        "migration/contoso",
    }
    back = changes.diff(head, base)
    assert {c.object: c.kind for c in back.changes}["batch/Wave2"] == "removed"
    assert changes.diff(base, base).changes == ()


# --- end to end: a controller publishes, CI plans the pull request, apply honours the checksum -----------


class PullRequest:
    def __init__(self, root: Path) -> None:
        self.published = root / "www" / "snapshot.json"
        self.workspace = ws = make_workspace(root, publish={"snapshot": str(self.published)})
        with ws.tenant() as tenant:
            tenant.add_recipient(HOSTILE_MEMBER)
        base_files = desired_files() | {
            "desired/dns/contoso.com.yaml": zone(TXT_BEFORE),
            "desired/batches/wave1.yaml": batch_yaml(WAVE, (*WAVE_MEMBERS, HOSTILE_MEMBER)),
        }
        self.base = ws.commit(base_files, message="Wave1 gets o'brien; a TXT record")
        for _ in range(4):  # the controller converges the base and publishes what it observed
            if not ws.run_pass().plan.actions:
                break
        else:
            raise AssertionError("the base did not converge")
        ws.repo.git("checkout", "--quiet", "-b", "start-pilot")
        head_files = base_files | {
            "desired/batches/pilot.yaml": batch_yaml(PILOT, PILOT_MEMBERS, state="started"),
            "desired/batches/wave1.yaml": batch_yaml(WAVE, WAVE_MEMBERS),
            "desired/dns/contoso.com.yaml": zone(TXT_AFTER),
        }
        self.head = ws.commit(head_files, message="Start the pilot")
        ws.repo.git("checkout", "--quiet", "main")
        # The CI checkout: a clone at the merge of the pull request into main, as both CI systems make it.
        self.checkout = root / "ci"
        subprocess.run(
            ["git", "clone", "--quiet", str(ws.repo.path), str(self.checkout)],
            env=ws.repo.env,
            check=True,
            capture_output=True,
        )
        self.git("checkout", "--quiet", "--detach", self.base)
        self.git(
            "-c",
            "user.name=CI",
            "-c",
            "user.email=ci@example.com",
            "merge",
            "--quiet",
            "--no-ff",
            "--no-edit",
            self.head,
        )

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args],
            cwd=self.checkout,
            env=self.workspace.repo.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def run_step(self, script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """A CI step's script in bash, as the runner runs it, with stagectl of this checkout on PATH."""
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        return subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=self.checkout,
            env={**self.workspace.process_env(), **env, "PATH": path, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module")
def pull_request(tmp_path_factory: pytest.TempPathFactory) -> PullRequest:
    return PullRequest(tmp_path_factory.mktemp("pr"))


def github_steps() -> list[tuple[str, dict[str, str]]]:
    workflow = yaml.safe_load((CI / "github-actions.yml").read_text(encoding="utf-8"))
    steps = workflow["jobs"]["plan"]["steps"]
    return [(s["run"], s.get("env", {})) for s in steps if "stagectl" in s.get("run", "").split()[0:1]]


def azure_steps() -> list[tuple[str, dict[str, str]]]:
    pipeline = yaml.safe_load((CI / "azure-pipelines.yml").read_text(encoding="utf-8"))
    return [
        (s["script"], s.get("env", {}))
        for s in pipeline["steps"]
        if "stagectl " in s.get("script", "") and "pip install" not in s["script"]
    ]


def ci_values(pr: PullRequest) -> dict[str, str]:
    """What each CI system puts in the variables the documented steps read."""
    return {
        "${{ github.event.pull_request.base.sha }}": pr.base,
        "${{ github.event.pull_request.head.sha }}": pr.head,
        "$(System.PullRequest.SourceCommitId)": pr.head,
    }


@pytest.mark.parametrize("system", ["github", "azure"])
def test_the_documented_pipeline_plans_the_pull_request_and_apply_honours_its_checksum(
    pull_request: PullRequest, system: str, tmp_path: Path
) -> None:
    pr = pull_request
    steps = github_steps() if system == "github" else azure_steps()
    scripts = [script for script, _ in steps]
    assert any(s.strip() == "stagectl validate desired" for s in scripts), scripts
    planned = [s for s in scripts if "stagectl plan " in s]
    assert len(planned) == 1 and "--base" in planned[0] and "--format markdown" in planned[0]
    # The snapshot the controller published is what CI fetched (curl in the pipelines).
    shutil.copyfile(pr.published, pr.checkout / "snapshot.json")
    (pr.checkout / "plan.md").unlink(missing_ok=True)
    values = ci_values(pr)
    for script, env in steps:
        result = pr.run_step(script, {name: values.get(value, value) for name, value in env.items()})
        assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
    text = (pr.checkout / "plan.md").read_text(encoding="utf-8")

    shown = tables(text)
    changed, actions = shown[0], shown[1]
    assert changed[0] == ["object", "change", "details"]
    assert changed[1:] == [
        ["batch/Pilot", "changed", "state planned -> started"],
        ["batch/Wave1", "changed", f"1 member removed: {HOSTILE_MEMBER}"],
        ["dns/contoso.com/notes/TXT", "changed", f"values [{TXT_BEFORE}] -> [{TXT_AFTER}]"],
    ]
    assert actions[0] == ["#", "object", "change", "why"]
    objects = [row[1] for row in actions[1:]]
    assert objects == ["dns/contoso.com/@/TXT", "batch/Pilot", "dns/contoso.com/notes/TXT"]
    assert actions[3][2] == f"replace notes.contoso.com TXT 3600 {TXT_AFTER}"
    assert all(len(row) == len(table[0]) for table in shown for row in table)
    assert CREDENTIALS not in text and "Secret123" not in text

    # The reviewed actions, for `apply --reviewed plan.md`: one hidden HTML comment, the only HTML.
    html = [t for t in parse(text) if t.type.startswith("html")]
    assert len(html) == 1 and html[0].content.startswith("<!-- stagectl:reviewed-plan v1 ")

    command = code_spans(text)[-1]
    assert command.startswith(f"stagectl apply --rev {pr.head} --checksum sha256:")
    checksum = command.split()[-1]
    assert f"checksum {checksum}" in text
    if system == "azure":
        return  # the same plan; applying it once is enough (the GitHub case applies it)
    ws = pr.workspace
    wrong = ws.stagectl(
        "apply", "--repo", str(ws.repo.path), "--rev", pr.base, "--config", str(ws.config_path),
        "--checksum", checksum, "--yes",
    )  # fmt: skip
    assert wrong.returncode == 1 and "nothing was applied" in wrong.stderr
    applied = ws.stagectl(
        *command.split()[1:], "--repo", str(ws.repo.path), "--config", str(ws.config_path), "--yes"
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "applied 3 actions" in applied.stdout
    assert ws.exchange().batch_status(PILOT) is not None


def test_the_published_snapshot_holds_no_secret_and_reads_as_a_snapshot(pull_request: PullRequest) -> None:
    ws: Workspace = pull_request.workspace
    published = pull_request.published.read_bytes()
    assert published == (ws.state_dir / "snapshot.json").read_bytes()
    assert stat.S_IMODE(pull_request.published.stat().st_mode) == 0o644
    assert stat.S_IMODE((ws.state_dir / "snapshot.json").stat().st_mode) == 0o600
    for part in (CREDENTIALS, *re.split(r"[\\:]", CREDENTIALS)):
        assert part.encode() not in published
    data = json.loads(published)
    assert data["published"]["revision"] == pull_request.base
    # the pass sent nothing after observing (the pipeline test's `stagectl apply` may have, since)
    assert data["published"]["actionsApplied"] == data["published"]["applyActions"]
    snapshot = Snapshot.from_json(published)
    assert snapshot.exchange.endpoints and snapshot.exchange.endpoints[0].Identity == "StagedEndpoint"
    # the pilot's members were looked up when it was found ready: the snapshot carries them for CI
    assert {m.lower() for m in PILOT_MEMBERS} <= {a.lower() for a in snapshot.exchange.mailUsers or []}


# --- a head that is behind its base: what the pull request changes, and what merging it would do ----------


def behind_workspace(root: Path) -> tuple[Workspace, Path, str]:
    """A branch cut from main, then main starts the pilot and the controller applies it: the branch adds a
    TXT record and knows nothing of the pilot. Returns the workspace, the published snapshot and main's
    commit before the pilot (where the branch was cut)."""
    published = root / "www" / "snapshot.json"
    ws = make_workspace(root, publish={"snapshot": str(published)})
    cut = ws.repo.head()
    ws.repo.git("checkout", "--quiet", "-b", "stale")
    ws.commit(desired_files() | {"desired/dns/contoso.com.yaml": zone(TXT_BEFORE)}, message="A TXT record")
    ws.repo.git("checkout", "--quiet", "main")
    ws.commit_desired(pilot="started", message="Start the pilot")
    while ws.run_pass().plan.actions:  # until the published snapshot holds the started pilot
        pass
    with ws.tenant() as tenant:
        assert tenant.batch_status(PILOT) is not None
    return ws, published, cut


def pr_plan(ws: Workspace, published: Path, head: str, fmt: str = "markdown") -> str:
    result = ws.stagectl(
        "plan", "--repo", str(ws.repo.path), "--base", "main", "--head", head,
        "--observed", str(published), "--format", fmt,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_branch_behind_its_base_lists_its_own_changes_and_plans_the_merge(tmp_path: Path) -> None:
    ws, published, cut = behind_workspace(tmp_path)
    text = pr_plan(ws, published, "stale")
    main = ws.repo.git("rev-parse", "main").strip()
    stale = ws.repo.git("rev-parse", "stale").strip()

    blocks = [t for t in parse(text) if t.type == "inline"]
    assert blocks[0].content == f"stagectl: merging `{stale[:12]}` into `{main[:12]}`"
    notice = blocks[1].content.strip("*")
    assert notice.startswith(f"The head {stale[:12]} does not contain 1 commit of the base {main[:12]}: ")
    assert "the plan below is of merging it" in notice and "no apply line" in notice
    assert f"since the merge base `{cut[:12]}`" in text
    shown = tables(text)
    # Only what the branch changes: not the pilot the base started after it was cut.
    assert shown[0][1:] == [["dns/contoso.com/notes/TXT", "added", f"ttl 3600; values [{TXT_BEFORE}]"]]
    assert [row[1] for row in shown[1][1:]] == ["dns/contoso.com/notes/TXT"], "merging keeps the pilot"
    assert not any(span.startswith("stagectl apply") for span in code_spans(text))

    data = json.loads(pr_plan(ws, published, "stale", "json"))
    assert data["pullRequest"]["planned"] == "merge result" and data["pullRequest"]["behind"] == 1
    assert data["desiredChanges"]["base"] == cut and data["desiredChanges"]["head"] == stale


def test_a_branch_behind_that_conflicts_is_planned_as_it_is_and_says_so(tmp_path: Path) -> None:
    ws, published, _ = behind_workspace(tmp_path)
    ws.repo.git("checkout", "--quiet", "stale")
    conflicting = ws.commit(desired_files(pilot="created"), message="Create the pilot")
    ws.repo.git("checkout", "--quiet", "main")
    text = pr_plan(ws, published, "stale")
    notice = [t for t in parse(text) if t.type == "inline"][1].content.strip("*")
    assert "without conflicts (desired/batches/pilot.yaml)" in notice
    assert "the plan shown is for the head as it is" in notice and "rebase or merge the base" in notice
    assert tables(text)[0][1][:2] == ["batch/Pilot", "changed"]
    assert tables(text)[0][1][2].startswith("state planned -> created")
    assert code_spans(text)[-1].startswith(f"stagectl apply --rev {conflicting} --checksum sha256:")


def test_a_plan_after_a_manual_apply_says_the_tenant_changed_since_the_snapshot(tmp_path: Path) -> None:
    """`stagectl apply` with the controller's state directory counts what it sent in the published
    snapshot, so a pull-request plan made before the next pass says the tenant changed since."""
    published = tmp_path / "www" / "snapshot.json"
    ws = make_workspace(tmp_path, publish={"snapshot": str(published)})
    while ws.run_pass().plan.actions:
        pass
    before = json.loads(published.read_bytes())["published"]
    assert before["actionsApplied"] == 0 == before["applyActions"]
    base = ws.repo.head()
    head = ws.commit_desired(pilot="started", message="Start the pilot")
    applied = ws.stagectl(
        "apply", "--repo", str(ws.repo.path), "--rev", head, "--config", str(ws.config_path), "--yes"
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    sent = int(re.search(r"applied (\d+) actions", applied.stdout).group(1))  # type: ignore[union-attr]
    assert sent > 0
    after = json.loads(published.read_bytes())
    assert after["published"]["actionsApplied"] == sent == after["published"]["applyActions"]
    assert published.read_bytes() == (ws.state_dir / "snapshot.json").read_bytes()
    assert stat.S_IMODE(published.stat().st_mode) == 0o644
    Snapshot.from_json(published.read_bytes())  # still a snapshot

    result = ws.stagectl(
        "plan", "--repo", str(ws.repo.path), "--base", base, "--head", head,
        "--observed", str(published), "--format", "markdown",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert f"stagectl apply sent {sent} actions after observing it: the tenant changed since" in text
