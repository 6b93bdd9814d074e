"""The git source against real repositories made in temporary directories."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from controller import errors
from controller.runtime import source
from tests.support.gitrepo import GitRepo, ssh_keypair


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "migration")


def test_read_tree_at_an_old_revision(repo: GitRepo, tmp_path: Path) -> None:
    first = repo.commit({"desired/batches.yaml": "one\n", "README.md": "outside\n"}, message="first")
    repo.commit({"desired/batches.yaml": "two\n", "desired/csv/pilot.csv": b"EmailAddress\r\na@x\r\n"})
    git = source.GitSource(repo.path, workdir=tmp_path / "state")

    assert git.read_tree(first) == {"batches.yaml": b"one\n"}
    assert git.read_tree(git.head()) == {
        "batches.yaml": b"two\n",
        "csv/pilot.csv": b"EmailAddress\r\na@x\r\n",
    }


def test_uncommitted_edits_do_not_count(repo: GitRepo, tmp_path: Path) -> None:
    committed = repo.commit({"desired/a.yaml": "committed\n"})
    repo.write({"desired/a.yaml": "edited\n", "desired/new.yaml": "untracked\n"})
    repo.git("add", "desired/new.yaml")  # staged is not committed either
    git = source.GitSource(repo.path, workdir=tmp_path / "state")

    assert git.head() == committed
    assert git.read_tree(git.head()) == {"a.yaml": b"committed\n"}


def test_only_the_tracked_branch_counts(repo: GitRepo, tmp_path: Path) -> None:
    main = repo.commit({"desired/a.yaml": "main\n"})
    repo.git("checkout", "--quiet", "-b", "feature")
    repo.commit({"desired/a.yaml": "feature\n"})
    git = source.GitSource(repo.path, workdir=tmp_path / "state")

    assert git.head() == main
    assert source.GitSource(repo.path, branch="feature", workdir=tmp_path / "s2").read_tree("feature") == {
        "a.yaml": b"feature\n"
    }


def test_many_files_and_binary_content_in_one_batch(repo: GitRepo, tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {f"desired/f{i:03}.yaml": f"n: {i}\n" for i in range(150)}
    files["desired/blob.bin"] = bytes(range(256)) + b"\n\n"
    files["desired/same.yaml"] = "n: 1\n"  # a blob shared by two paths
    files["desired/empty.yaml"] = ""
    sha = repo.commit(files)
    tree = source.GitSource(repo.path, workdir=tmp_path / "state").read_tree(sha)

    assert len(tree) == 153
    assert tree["blob.bin"] == bytes(range(256)) + b"\n\n"
    assert tree["same.yaml"] == tree["f001.yaml"] == b"n: 1\n"
    assert tree["empty.yaml"] == b""


def test_a_missing_desired_directory_reads_as_empty(repo: GitRepo, tmp_path: Path) -> None:
    sha = repo.commit({"other/a.yaml": "x\n"})
    assert source.GitSource(repo.path, workdir=tmp_path / "state").read_tree(sha) == {}


def test_a_symbolic_link_is_refused(repo: GitRepo, tmp_path: Path) -> None:
    repo.write({"desired/a.yaml": "x\n"})
    (repo.path / "desired" / "link.yaml").symlink_to("a.yaml")
    sha = repo.commit()
    with pytest.raises(errors.InvalidInput, match=r"link\.yaml .* symbolic link"):
        source.GitSource(repo.path, workdir=tmp_path / "state").read_tree(sha)


def test_a_file_name_that_is_not_utf8_is_refused_with_the_name_escaped(repo: GitRepo, tmp_path: Path) -> None:
    repo.write({"desired/a.yaml": "x\n"})
    (repo.path / "desired").joinpath(b"caf\xe9.yaml".decode("utf-8", "surrogateescape")).write_bytes(b"x\n")
    sha = repo.commit()
    with pytest.raises(errors.InvalidInput, match=r"caf\\\\xe9\.yaml.*not UTF-8"):
        source.GitSource(repo.path, workdir=tmp_path / "state").read_tree(sha)


def test_commit_metadata(repo: GitRepo, tmp_path: Path) -> None:
    sha = repo.commit(
        {"desired/a.yaml": "x\n"},
        message="Start the pilot batch\n\nBody text",
        author="Bob Operator",
        email="bob@example.com",
        date="2024-05-01T10:00:00+02:00",
    )
    info = source.GitSource(repo.path, workdir=tmp_path / "state").commit(sha[:10])

    assert info.sha == sha
    assert (info.author_name, info.author_email) == ("Bob Operator", "bob@example.com")
    assert info.author == "Bob Operator <bob@example.com>"
    assert info.date.isoformat() == "2024-05-01T10:00:00+02:00"
    assert info.subject == "Start the pilot batch"


def test_unknown_revision_and_missing_repository_are_clear(repo: GitRepo, tmp_path: Path) -> None:
    repo.commit({"desired/a.yaml": "x\n"})
    git = source.GitSource(repo.path, workdir=tmp_path / "state")
    with pytest.raises(errors.ExternalFailure, match=r"has no commit '--output=x'"):
        git.read_tree("--output=x")
    with pytest.raises(errors.InvalidInput, match="does not exist"):
        source.GitSource(tmp_path / "nowhere", workdir=tmp_path / "state")
    with pytest.raises(errors.InvalidInput, match="not a valid branch name"):
        source.GitSource(repo.path, branch="bad..name", workdir=tmp_path / "state")


def test_remote_clone_and_refresh_sees_a_new_commit(repo: GitRepo, tmp_path: Path) -> None:
    first = repo.commit({"desired/a.yaml": "one\n"})
    git = source.GitSource(f"file://{repo.path}", workdir=tmp_path / "state")
    assert not git.is_local
    assert git.watch_paths() == []

    assert git.refresh() == first
    assert git.read_tree(first) == {"a.yaml": b"one\n"}

    second = repo.commit({"desired/a.yaml": "two\n"}, message="second")
    assert git.head() == first  # nothing is seen before a fetch
    assert git.refresh() == second
    assert git.read_tree(second) == {"a.yaml": b"two\n"}
    assert git.commit(second).subject == "second"
    assert (tmp_path / "state" / "source.git" / "HEAD").exists()

    # A fresh process finds the existing clone and fetches into it.
    again = source.GitSource(f"file://{repo.path}", workdir=tmp_path / "state")
    assert again.refresh() == second


def test_an_unreachable_remote_names_the_repository_without_credentials(tmp_path: Path) -> None:
    url = f"file://user:hunter2@localhost{tmp_path}/absent.git"
    git = source.GitSource(url, workdir=tmp_path / "state")
    with pytest.raises(errors.ExternalFailure) as caught:
        git.refresh()
    message = str(caught.value)
    assert message.startswith("git fetch on file://user:<redacted>@localhost")
    assert "hunter2" not in message


def test_watch_paths_of_a_local_repository(repo: GitRepo, tmp_path: Path) -> None:
    repo.commit({"desired/a.yaml": "x\n"})
    paths = source.GitSource(repo.path, workdir=tmp_path / "state").watch_paths()
    assert repo.path / ".git" / "refs" / "heads" in paths
    repo.git("pack-refs", "--all")
    paths = source.GitSource(repo.path, workdir=tmp_path / "state").watch_paths()
    assert repo.path / ".git" / "packed-refs" in paths


def test_ssh_signed_commit_verifies_and_unsigned_is_refused(repo: GitRepo, tmp_path: Path) -> None:
    assert shutil.which("ssh-keygen"), "ssh-keygen (openssh-client) is required"
    key, public = ssh_keypair(tmp_path / "keys")
    other_key, _ = ssh_keypair(tmp_path / "keys", name="intruder")
    signers = tmp_path / "allowed_signers"
    signers.write_text(f'ada@example.com namespaces="git" {public}\n', encoding="utf-8")
    repo.use_ssh_signing(key)
    signed = repo.commit({"desired/a.yaml": "signed\n"}, sign=True)
    unsigned = repo.commit({"desired/a.yaml": "unsigned\n"})
    repo.use_ssh_signing(other_key)
    foreign = repo.commit({"desired/a.yaml": "foreign\n"}, sign=True)

    git = source.GitSource(
        repo.path, workdir=tmp_path / "state", verify=source.SignaturePolicy(allowed_signers=signers)
    )
    assert git.verify(signed).sha == signed
    with pytest.raises(source.SignatureRefused, match=rf"commit {unsigned[:12]} of .* is not signed"):
        git.verify(unsigned)
    with pytest.raises(source.SignatureRefused, match="not allowed"):
        git.verify(foreign)
    assert isinstance(source.SignatureRefused("x"), errors.Refused)


def test_signature_policy_needs_one_trust_source(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidInput):
        source.SignaturePolicy()
    with pytest.raises(errors.InvalidInput):
        source.SignaturePolicy(allowed_signers=tmp_path, gpg_home=tmp_path)


def test_a_desired_path_that_is_a_file_is_named_as_such(repo: GitRepo, tmp_path: Path) -> None:
    repo.write({"desired": "apiVersion: stagectl/v1\n"})
    sha = repo.commit()
    with pytest.raises(errors.InvalidInput, match=r"desired at \w+ is a file, not the directory"):
        source.GitSource(repo.path, workdir=tmp_path / "state").read_tree(sha)
