"""Real git repositories in temporary directories for tests: init with a user, write files, commit."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

# Tests must never see the developer's or a hook's git settings (GIT_DIR would redirect every call).
_CLEAN_ENV_DROP = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR")


def git_env(home: Path) -> dict[str, str]:
    """An environment where git reads no global or system configuration."""
    env = {key: value for key, value in os.environ.items() if key not in _CLEAN_ENV_DROP}
    env.update(
        HOME=str(home),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
    )
    return env


class GitRepo:
    """A working repository with one configured author; every method runs the real `git`."""

    def __init__(self, path: Path, *, author: str = "Ada Admin", email: str = "ada@example.com") -> None:
        self.path = path
        self.env = git_env(path.parent)
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "--quiet", "--initial-branch=main")
        self.git("config", "user.name", author)
        self.git("config", "user.email", email)
        self.git("config", "commit.gpgsign", "false")

    def git(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        result = subprocess.run(
            ["git", *args],
            cwd=self.path,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def write(self, files: Mapping[str, str | bytes]) -> None:
        """Write files (paths relative to the repository) without committing them."""
        for name, content in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, str):
                target.write_text(content, encoding="utf-8")
            else:
                target.write_bytes(content)

    def remove(self, *names: str) -> None:
        self.git("rm", "--quiet", "--", *names)

    def commit(
        self,
        files: Mapping[str, str | bytes] | None = None,
        *,
        message: str = "change",
        sign: bool = False,
        author: str | None = None,
        email: str | None = None,
        date: str | None = None,
    ) -> str:
        """Write `files`, stage everything and commit; returns the new commit's sha."""
        if files:
            self.write(files)
        self.git("add", "--all")
        args = ["commit", "--quiet", "--allow-empty", "-m", message]
        if sign:
            args.insert(1, "-S")
        if author or email:
            args += ["--author", f"{author or 'Ada Admin'} <{email or 'ada@example.com'}>"]
        env = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date} if date else None
        self.git(*args, env=env)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").strip()

    def use_ssh_signing(self, private_key: Path) -> None:
        """Sign later commits made with `sign=True` with this SSH key."""
        self.git("config", "gpg.format", "ssh")
        self.git("config", "user.signingkey", str(private_key))


def ssh_keypair(directory: Path, *, name: str = "signer") -> tuple[Path, str]:
    """A new ed25519 key without passphrase; returns the private key path and the public key line."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    key.chmod(0o600)
    return key, (directory / f"{name}.pub").read_text(encoding="utf-8").strip()
