"""TSIG keys by reference (a BIND key file or an environment variable); no secret in any message."""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import dns.name
import dns.tsig

from controller.dns.base import DnsPermanentError

DEFAULT_ALGORITHM = "hmac-sha256"
ALGORITHMS = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-md5": dns.tsig.HMAC_MD5,
}

# `key "name" { algorithm hmac-sha256; secret "base64"; };` as written by tsig-keygen / ddns-confgen.
_KEY_BLOCK = re.compile(r'key\s+"?(?P<name>[^"\s{]+)"?\s*\{(?P<body>.*?)\}\s*;', re.DOTALL)
_ALGORITHM = re.compile(r"algorithm\s+\"?(?P<value>[A-Za-z0-9.-]+)\"?\s*;")
_SECRET = re.compile(r'secret\s+"(?P<value>[^"]*)"\s*;')
# Quoted strings first, so "//" or "#" inside a base64 secret is never taken for a comment.
_COMMENTS = re.compile(r'"[^"]*"|(#|//)[^\n]*|/\*.*?\*/', re.DOTALL)


def _strip_comments(text: str) -> str:
    return _COMMENTS.sub(lambda match: match[0] if match[0].startswith('"') else "", text)


@dataclass(frozen=True)
class TsigKey:
    """A loaded key. `repr` leaves the secret out so it can never reach a log by accident."""

    name: str
    algorithm: str
    secret: bytes = field(repr=False)

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        key = dns.tsig.Key(self.name, self.secret, ALGORITHMS[self.algorithm])
        return {key.name: key}


def _algorithm(value: str, *, source: str) -> str:
    name = value.lower().rstrip(".")
    if name not in ALGORITHMS:
        raise DnsPermanentError(f"the TSIG key from {source} uses an unsupported algorithm {value!r}")
    return name


def _secret(value: str, *, source: str) -> bytes:
    try:
        secret = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise DnsPermanentError(f"the TSIG secret from {source} is not valid base64") from None
    if not secret:
        raise DnsPermanentError(f"the TSIG secret from {source} is empty")
    return secret


def parse_key_file(text: str, *, source: str, name: str | None = None) -> TsigKey:
    """The key named `name` (or the only key) of a BIND key file."""
    blocks = list(_KEY_BLOCK.finditer(_strip_comments(text)))
    if name is not None:
        blocks = [block for block in blocks if block["name"].rstrip(".") == name.rstrip(".")]
    if len(blocks) != 1:
        what = f"a key named {name!r}" if name else "exactly one key"
        raise DnsPermanentError(f"the BIND key file {source} does not hold {what}")
    block = blocks[0]
    algorithm = _ALGORITHM.search(block["body"])
    secret = _SECRET.search(block["body"])
    if secret is None:
        raise DnsPermanentError(f"the key {block['name']!r} in {source} has no secret")
    return TsigKey(
        name=block["name"].rstrip("."),
        algorithm=_algorithm(algorithm["value"] if algorithm else DEFAULT_ALGORITHM, source=source),
        secret=_secret(secret["value"], source=source),
    )


def parse_env_value(text: str, *, source: str) -> TsigKey:
    """`name:algorithm:base64secret` or `name:base64secret` (hmac-sha256); base64 has no colon."""
    parts = text.strip().split(":")
    if len(parts) == 2:
        name, algorithm, secret = parts[0], DEFAULT_ALGORITHM, parts[1]
    elif len(parts) == 3:
        name, algorithm, secret = parts
    else:
        raise DnsPermanentError(f"{source} must hold name:algorithm:base64secret")
    if not name:
        raise DnsPermanentError(f"{source} names no key")
    return TsigKey(
        name=name.rstrip("."),
        algorithm=_algorithm(algorithm, source=source),
        secret=_secret(secret, source=source),
    )


def is_key_ref(ref: str) -> bool:
    return ref.startswith(("file:", "env:")) and len(ref.split(":", 1)[1]) > 0


def load_key(ref: str) -> TsigKey:
    """Resolve `file:/path[#keyname]` or `env:NAME`; errors name the reference, never the secret."""
    if ref.startswith("file:"):
        location = ref[len("file:") :]
        path, _, name = location.partition("#")
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise DnsPermanentError(f"cannot read the TSIG key file {path}: {error.strerror}") from None
        return parse_key_file(text, source=path, name=name or None)
    if ref.startswith("env:"):
        variable = ref[len("env:") :]
        value = os.environ.get(variable)
        if not value:
            raise DnsPermanentError(f"the environment variable {variable} holding the TSIG key is not set")
        return parse_env_value(value, source=f"the environment variable {variable}")
    raise DnsPermanentError("a TSIG key is given by reference: keyRef: file:/path/to/key or env:NAME")
