"""Resolve secret references (`env:NAME`, `file:PATH`) when used; errors name the reference only."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from controller import errors


@dataclass(frozen=True, slots=True)
class Credential:
    """A PSCredential: user name and password, resolved from a reference at apply time only."""

    username: str
    password: str = field(repr=False)


class SecretError(errors.InvalidInput):
    """A reference that cannot be resolved; the message names the reference, never a value."""


def resolve(ref: str) -> str:
    """The secret behind `env:NAME` or `file:PATH` (a file's trailing newline is not part of it)."""
    scheme, _, name = ref.partition(":")
    if scheme not in ("env", "file"):
        # Not a reference at all: perhaps the secret itself was pasted here, so none of it is repeated.
        raise SecretError(
            "a secret reference has an unknown scheme: write env:NAME or file:PATH "
            "(the value given is not repeated, in case it is the secret itself)"
        )
    if not name:
        raise SecretError(f"secret reference {scheme}: name the variable or file after the colon")
    if scheme == "env":
        value = os.environ.get(name)
        if value is None:
            raise SecretError(f"secret reference {ref}: environment variable {name} is not set")
    elif scheme == "file":
        try:
            value = Path(name).expanduser().read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as error:
            raise SecretError(f"secret reference {ref}: cannot read the file ({error.strerror})") from None
        except UnicodeDecodeError:
            raise SecretError(f"secret reference {ref}: the file is not UTF-8 text") from None
    else:  # pragma: no cover - the scheme was checked above
        raise AssertionError(scheme)
    if not value:
        raise SecretError(f"secret reference {ref}: the secret is empty")
    return value


def credential(ref: str, *, resolve_secret: Callable[[str], str] = resolve) -> Credential:
    """A credential secret holds `username:password`, split at the first colon (passwords may hold colons)."""
    value = resolve_secret(ref)
    username, colon, password = value.partition(":")
    if not colon or not username or not password:
        raise SecretError(f"secret reference {ref}: a credential must hold username:password")
    return Credential(username=username, password=password)
