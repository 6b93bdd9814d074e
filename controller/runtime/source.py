"""The git source (contract §5): the tracked branch's committed desired tree, commit metadata, signatures."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from controller import errors, redact
from controller.desired.shown import printable

DEFAULT_TIMEOUT = 120.0
# How much of a desired tree is read: 100 batches of 2,000 members take some 8 MiB; a revision past this is
# refused before any of it is read, so that a pushed blob cannot take the controller's memory.
MAX_TREE_BYTES = 32 * 1024 * 1024
MAX_GIT_TEXT = 300
_SHA = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")
# Settings from the caller's environment that would point git at another repository.
_ENV_DROP = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
)
# Who writes the notes commits: the controller, whatever the host's git identity (it may have none).
_NOTES_AUTHOR = {
    "GIT_AUTHOR_NAME": "stagectl",
    "GIT_AUTHOR_EMAIL": "stagectl@localhost",
    "GIT_COMMITTER_NAME": "stagectl",
    "GIT_COMMITTER_EMAIL": "stagectl@localhost",
}
_REMOTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[^/\s:]+@[^/\s:]+:)", re.I)


class SignatureRefused(errors.Refused):
    """A revision whose commit is unsigned or not signed by an allowed key; the last good one is served."""


@dataclass(frozen=True, slots=True)
class SignaturePolicy:
    """How commits must be signed: SSH keys in an allowed-signers file, or keys in a GPG home."""

    allowed_signers: Path | None = None  # the `gpg.ssh.allowedSignersFile` format
    gpg_home: Path | None = None  # a GNUPGHOME holding only the keys allowed to sign

    def __post_init__(self) -> None:
        if (self.allowed_signers is None) == (self.gpg_home is None):
            raise errors.InvalidInput("signature verification needs exactly one of allowedSigners or gpgHome")


@dataclass(frozen=True, slots=True)
class CommitInfo:
    sha: str
    author_name: str
    author_email: str
    date: datetime
    subject: str

    @property
    def author(self) -> str:
        return f"{self.author_name} <{self.author_email}>"


def display_name(url_or_path: str) -> str:
    """The repository as it may appear in a message: credentials in a URL are removed."""
    return redact.redact_text(url_or_path)


class GitSource:
    """One branch of one repository; a local path is read in place, a remote URL is kept as a bare clone.

    Only committed state counts: trees are read from objects, never from a working tree.
    """

    def __init__(
        self,
        url_or_path: str | Path,
        *,
        branch: str = "main",
        desired_dir: str = "desired",
        workdir: Path,
        verify: SignaturePolicy | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        location = str(url_or_path)
        self.name = display_name(location)
        self.branch = branch
        self.desired_dir = desired_dir.strip("/")
        self.policy = verify
        self.timeout = timeout
        self._ref = f"refs/heads/{branch}"
        self._check_branch_name(branch)
        if _REMOTE.match(location) and not Path(location).exists():
            self.remote: str | None = location
            self.git_dir = workdir / "source.git"
        else:
            path = Path(location).expanduser()
            if not path.is_dir():
                raise errors.InvalidInput(f"git repository {self.name} does not exist")
            self.remote = None
            self.git_dir = Path(self._git(["rev-parse", "--absolute-git-dir"], cwd=path).decode().strip())

    @property
    def is_local(self) -> bool:
        return self.remote is None

    # --- revisions -------------------------------------------------------------------------------

    def refresh(self) -> str:
        """Fetch the tracked branch of a remote (cloning it first); returns the branch's commit."""
        if self.remote is not None:
            if not (self.git_dir / "HEAD").exists():
                self.git_dir.parent.mkdir(parents=True, exist_ok=True)
                self._git(["init", "--quiet", "--bare", str(self.git_dir)], cwd=self.git_dir.parent)
            # Only the tracked branch, force-updated: history rewritten upstream is followed.
            self._git(
                ["fetch", "--quiet", "--no-tags", "--prune", "--", self.remote, f"+{self._ref}:{self._ref}"],
                action="fetch",
            )
        return self.head()

    def head(self) -> str:
        """The tracked branch's commit sha (committed state only)."""
        return self.resolve(self._ref)

    def resolve(self, rev: str) -> str:
        """A revision (sha, branch, tag) as a full commit sha."""
        result = self._run(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"])
        sha = result.stdout.decode().strip()
        if result.returncode != 0 or not _SHA.match(sha):
            raise errors.ExternalFailure(f"git repository {self.name} has no commit {rev!r}")
        return sha

    def contains(self, ancestor: str, descendant: str) -> bool:
        """Whether `descendant` has `ancestor` in its history (a branch that contains its base)."""
        result = self._run(["merge-base", "--is-ancestor", ancestor, descendant])
        if result.returncode not in (0, 1):
            raise errors.ExternalFailure(f"git merge-base on {self.name} failed: {_excerpt(result.stderr)}")
        return result.returncode == 0

    def merge_base(self, one: str, other: str) -> str | None:
        """The best common ancestor of two commits (None: unrelated histories)."""
        result = self._run(["merge-base", one, other])
        sha = result.stdout.decode().strip()
        return sha if result.returncode == 0 and _SHA.match(sha) else None

    def count_missing(self, base: str, head: str) -> int:
        """How many commits of `base` `head` does not contain."""
        return int(self._git(["rev-list", "--count", f"{head}..{base}"]).decode().strip() or 0)

    def merge_tree(self, base: str, head: str) -> tuple[str | None, list[str]]:
        """The tree git would make merging `head` into `base` (`git merge-tree --write-tree`, git 2.38+),
        written to the object database and referenced by nothing; (None, conflicted paths) when the merge
        conflicts, (None, []) when this git cannot compute it."""
        result = self._run(["merge-tree", "--write-tree", "--name-only", "--no-messages", base, head])
        lines = result.stdout.decode("utf-8", errors="replace").splitlines()
        if result.returncode == 0 and lines and _SHA.match(lines[0]):
            return lines[0], []
        if result.returncode == 1 and lines and _SHA.match(lines[0]):
            return None, [printable(path) for path in lines[1:] if path]
        return None, []

    def commit(self, rev: str) -> CommitInfo:
        sha = self.resolve(rev)
        out = self._git(
            ["show", "--no-patch", "--no-show-signature", "--format=%H%x00%an%x00%ae%x00%aI%x00%s", sha]
        )
        fields = out.decode("utf-8", errors="replace").rstrip("\n").split("\x00")
        if len(fields) != 5:
            raise errors.ExternalFailure(f"git repository {self.name}: unreadable metadata for commit {sha}")
        return CommitInfo(
            sha=fields[0],
            author_name=fields[1],
            author_email=fields[2],
            date=datetime.fromisoformat(fields[3]),
            subject=fields[4],
        )

    # --- the desired tree ------------------------------------------------------------------------

    def read_tree(self, rev: str, *, tree: bool = False) -> dict[str, bytes]:
        """The files under the desired directory at `rev` (with `tree`, a tree's object id, such as a
        merge result), keyed by path relative to it.

        An absent directory gives an empty mapping (read, and nothing there); the loader reports it.
        """
        sha = self._tree(rev) if tree else self.resolve(rev)
        prefix = f"{self.desired_dir}/" if self.desired_dir else ""
        listing = self._git(
            ["ls-tree", "-r", "-z", "-l", "--full-tree", sha, "--", *([prefix] if prefix else [])]
        )
        blobs: list[tuple[str, str]] = []
        total = 0
        for entry in filter(None, listing.split(b"\x00")):
            meta, _, raw_path = entry.partition(b"\t")
            mode, kind, object_id, size = meta.decode().split()
            try:
                path = raw_path.decode("utf-8")
            except UnicodeDecodeError:
                shown = raw_path.decode("utf-8", errors="backslashreplace")
                raise errors.InvalidInput(
                    f"{shown!r} at {sha[:12]}: a file name that is not UTF-8; rename it in UTF-8"
                ) from None
            where = printable(path)
            if where != path:
                raise errors.InvalidInput(
                    f"{where} at {sha[:12]}: a file name with control or invisible characters; rename it"
                )
            if kind != "blob":
                raise errors.InvalidInput(
                    f"{where} at {sha[:12]} is a submodule; commit the files themselves"
                )
            if mode == "120000":
                raise errors.InvalidInput(f"{where} at {sha[:12]} is a symbolic link; commit the file itself")
            total += int(size)
            if total > MAX_TREE_BYTES:
                raise errors.InvalidInput(
                    f"{printable(self.desired_dir or '.')} at {sha[:12]} holds more than "
                    f"{MAX_TREE_BYTES // (1024 * 1024)} MiB of files (the total passes it at "
                    f"{where}); nothing in it is read"
                )
            blobs.append((path.removeprefix(prefix), object_id))
        if not blobs and self.desired_dir:
            self._check_directory(sha)
        contents = self._cat_blobs([object_id for _, object_id in blobs])
        return {name: contents[object_id] for name, object_id in blobs}

    def _tree(self, object_id: str) -> str:
        result = self._run(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{object_id}^{{tree}}"])
        sha = result.stdout.decode().strip()
        if result.returncode != 0 or not _SHA.match(sha):
            raise errors.ExternalFailure(f"git repository {self.name} has no tree {object_id!r}")
        return sha

    def _check_directory(self, sha: str) -> None:
        """Nothing under the desired directory: refuse it when that path is a file, not a directory."""
        listing = self._git(["ls-tree", "-z", "--full-tree", sha, "--", self.desired_dir])
        for entry in filter(None, listing.split(b"\x00")):
            meta, _, _ = entry.partition(b"\t")
            if meta.split()[0] == b"120000":
                raise errors.InvalidInput(
                    f"{printable(self.desired_dir)} at {sha[:12]} is a symbolic link, not the directory of "
                    "the desired state; commit the documents under it"
                )
            if meta.split()[1] == b"blob":
                raise errors.InvalidInput(
                    f"{printable(self.desired_dir)} at {sha[:12]} is a file, not the directory of the "
                    "desired state; commit the documents under it"
                )

    def _cat_blobs(self, object_ids: Sequence[str]) -> dict[str, bytes]:
        """Every blob through one `git cat-file --batch` process."""
        if not object_ids:
            return {}
        unique = list(dict.fromkeys(object_ids))
        out = self._git(["cat-file", "--batch"], stdin="".join(f"{oid}\n" for oid in unique).encode())
        contents: dict[str, bytes] = {}
        position = 0
        for oid in unique:
            header_end = out.index(b"\n", position)
            header = out[position:header_end].decode().split()
            if len(header) != 3 or header[0] != oid or header[1] != "blob":
                raise errors.ExternalFailure(
                    f"git repository {self.name}: object {oid} is missing or unreadable"
                )
            size = int(header[2])
            start = header_end + 1
            contents[oid] = out[start : start + size]
            position = start + size + 1  # the content is followed by a newline
        return contents

    # --- signatures ------------------------------------------------------------------------------

    def verify(self, rev: str) -> CommitInfo:
        """Check `rev`'s signature against the policy; raises SignatureRefused. No policy: nothing checked."""
        info = self.commit(rev)
        if self.policy is None:
            return info
        options: list[str] = []
        env: dict[str, str] = {}
        if self.policy.allowed_signers is not None:
            signers = self.policy.allowed_signers
            if not signers.is_file():
                raise errors.InvalidInput(f"the allowed-signers file {signers} does not exist")
            options = ["-c", f"gpg.ssh.allowedSignersFile={signers.resolve()}"]
        elif self.policy.gpg_home is not None:
            env = {"GNUPGHOME": str(self.policy.gpg_home.resolve())}
        result = self._run([*options, "verify-commit", "--", info.sha], env=env)
        if result.returncode == 0:
            return info
        status = self._run([*options, "log", "-1", "--format=%G?", info.sha], env=env).stdout.decode().strip()
        reason = {
            "N": "is not signed",
            "B": "has a bad signature",
            "E": "has a signature that cannot be checked (unknown key)",
            "U": "is signed by a key that is not allowed",
            "X": "has an expired signature",
            "Y": "is signed by an expired key",
            "R": "is signed by a revoked key",
        }.get(status, "has a signature that was not accepted")
        raise SignatureRefused(f"commit {info.sha[:12]} of {self.name} {reason}; it is not applied")

    # --- git notes (the audit trail in history, runtime/notes.py) --------------------------------

    def has_commit(self, sha: str) -> bool:
        return self._run(["cat-file", "-e", "--end-of-options", f"{sha}^{{commit}}"]).returncode == 0

    def note(self, ref: str, sha: str) -> str:
        """The note on `sha` under `ref`; empty when there is none."""
        result = self._run(["notes", f"--ref={ref}", "show", "--end-of-options", sha])
        return result.stdout.decode("utf-8", errors="replace") if result.returncode == 0 else ""

    def notes(self, ref: str) -> dict[str, str]:
        """Every note under `ref`, by the commit it annotates."""
        if self._run(["rev-parse", "--verify", "--quiet", ref]).returncode != 0:
            return {}
        pairs = [row.split() for row in self._git(["notes", f"--ref={ref}", "list"]).decode().splitlines()]
        blobs = self._cat_blobs([pair[0] for pair in pairs if len(pair) == 2])
        return {pair[1]: blobs[pair[0]].decode("utf-8", errors="replace") for pair in pairs if len(pair) == 2}

    def append_note(self, ref: str, sha: str, text: str) -> None:
        """Append a paragraph to the note on `sha` (a note commit by stagectl on `ref`)."""
        self._git(
            ["notes", f"--ref={ref}", "append", "--file=-", sha], stdin=text.encode(), env=_NOTES_AUTHOR
        )

    def push_notes(self, ref: str) -> None:
        """Push `ref` to a remote source (nothing to do for a local one). When the remote's notes moved
        (another writer), they are merged line by line (`cat_sort_uniq`) and pushed once more."""
        if self.remote is None:
            return
        push = ["push", "--quiet", "--", self.remote, f"{ref}:{ref}"]
        result = self._run(push)
        if result.returncode == 0:
            return
        theirs = f"{ref}-remote"
        if (
            self._run(["fetch", "--quiet", "--no-tags", "--", self.remote, f"+{ref}:{theirs}"]).returncode
            == 0
            and self._run(
                ["notes", f"--ref={ref}", "merge", "--quiet", "--strategy=cat_sort_uniq", theirs],
                env=_NOTES_AUTHOR,
            ).returncode
            == 0
        ):
            result = self._run(push)
            if result.returncode == 0:
                return
        detail = _excerpt(result.stderr)
        raise errors.ExternalFailure(
            f"git push of {ref} to {self.name} failed" + (f": {detail}" if detail else "")
        )

    # --- watching --------------------------------------------------------------------------------

    def watch_paths(self) -> list[Path]:
        """What a watcher should watch to notice new commits on a local repository (none for a remote).

        A watcher wakes the loop, which then compares `head()`: events are hints, not revisions.
        """
        if self.remote is not None:
            return []
        common = Path(self._git(["rev-parse", "--git-common-dir"], cwd=self.git_dir).decode().strip())
        if not common.is_absolute():
            common = (self.git_dir / common).resolve()
        # Loose refs change under refs/heads; `git gc`/`pack-refs` moves them into packed-refs.
        candidates = [common / "refs" / "heads", common / "packed-refs"]
        return [path for path in candidates if path.exists()]

    # --- running git -----------------------------------------------------------------------------

    def _check_branch_name(self, branch: str) -> None:
        result = subprocess.run(
            ["git", "check-ref-format", "--branch", branch],
            capture_output=True,
            env=_environment(),
            timeout=self.timeout,
            check=False,
        )
        if result.returncode != 0 or branch.startswith("-"):
            raise errors.InvalidInput(f"{branch!r} is not a valid branch name")

    def _run(
        self,
        args: list[str],
        *,
        cwd: Path | None = None,
        stdin: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        command = ["git"] if cwd is not None else ["git", f"--git-dir={self.git_dir}"]
        try:
            return subprocess.run(
                [*command, *args],
                cwd=cwd,
                input=stdin,
                capture_output=True,
                env=_environment(env),
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise errors.ExternalFailure(
                f"git {_verb(args)} on {self.name} did not finish within {self.timeout:g} s"
            ) from error
        except OSError as error:
            raise errors.ExternalFailure(f"git could not be run for {self.name}: {error.strerror}") from error

    def _git(
        self,
        args: list[str],
        *,
        cwd: Path | None = None,
        stdin: bytes | None = None,
        action: str | None = None,
        env: dict[str, str] | None = None,
    ) -> bytes:
        result = self._run(args, cwd=cwd, stdin=stdin, env=env)
        if result.returncode != 0:
            detail = _excerpt(result.stderr)
            raise errors.ExternalFailure(
                f"git {action or _verb(args)} on {self.name} failed" + (f": {detail}" if detail else "")
            )
        return result.stdout


def _verb(args: list[str]) -> str:
    return next((arg for arg in args if not arg.startswith("-") and "=" not in arg), "command")


def _excerpt(stderr: bytes) -> str:
    """git's own words, bounded and scrubbed: they go into an error message shown to people."""
    text = " ".join(stderr.decode("utf-8", errors="replace").split())
    text = redact.redact_text(text)
    return text if len(text) <= MAX_GIT_TEXT else text[: MAX_GIT_TEXT - 1] + "…"


def _environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _ENV_DROP}
    # Never wait for a password prompt; parse git's output in one language.
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="", SSH_ASKPASS="", LC_ALL="C")
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    env.update(extra or {})
    return env
