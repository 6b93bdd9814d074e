"""Secret removal for everything that leaves the process as text: audit records, alerts and logs."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any

REDACTED = "<redacted>"

# Key names that hold a secret, compared per word so "Credentials" and "api_key" match but "monkey" does not.
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "credential",
        "credentials",
        "token",
        "key",
        "apikey",
        "authorization",
    }
)
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")

# A reference names where a secret lives (resolved at apply time); the name itself is not secret.
_REFERENCE = re.compile(r"^(?:(?:env|file):[^\s]+|<credentials from [^>]+>)$")

_SECRET_NAME = r"(?:password|passwd|pwd|passphrase|secret|client_secret|token|access_token|api[_-]?key)\b"

_TEXT_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A PEM private key, whole.
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
        REDACTED,
    ),
    # HTTP authorization headers, to the end of the line.
    (re.compile(r"(?im)^(\s*(?:proxy-)?authorization\s*:\s*).+$"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    # BIND/nsupdate key blocks (`secret "base64";`) and dig/nsupdate `-y hmac-sha256:name:secret`.
    (re.compile(r'(?i)(\bsecret\s+")[^"]*(")'), r"\1" + REDACTED + r"\2"),
    (re.compile(r"(?i)\b(hmac-[a-z0-9-]+:[^:\s]+:)[A-Za-z0-9+/]+={0,2}"), r"\1" + REDACTED),
    # Credentials inside a URL: scheme://user:password@host.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]+:)[^\s/@]+@"), r"\1" + REDACTED + "@"),
    # key=value and key: value for secret-looking keys in free text, JSON text included.
    (
        re.compile(rf"(?i)(\b{_SECRET_NAME}[\"']?\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&\"'}}]+)"),
        r"\1" + REDACTED,
    ),
    # A PowerShell parameter followed by its value: `-Password hunter2`.
    (re.compile(rf"(?i)((?:^|\s)-{_SECRET_NAME}\s+)(\"[^\"]*\"|'[^']*'|\S+)"), r"\1" + REDACTED),
    # Query-string signatures (SAS tokens, signed webhook URLs).
    (re.compile(r"(?i)([?&](?:sig|signature|code|token|key)=)[^&\s]+"), r"\1" + REDACTED),
)


def is_secret_key(name: str) -> bool:
    """Whether a mapping key or parameter name names a secret (Password, clientSecret, api_key, Token…)."""
    words = {word.lower().removesuffix("s") for word in _WORD.findall(name)}
    return (
        bool(words & _SECRET_WORDS)
        or name.lower().replace("-", "").replace("_", "").removesuffix("s") in _SECRET_WORDS
    )


def _is_credential_object(value: object) -> bool:
    """PSCredential, SecureString and the like, whatever library made them."""
    type_name = type(value).__name__.lower()
    return "credential" in type_name or "securestring" in type_name


def redact_text(text: str, *, secrets: Iterable[str] = ()) -> str:
    """Text with known secret values and secret-looking patterns replaced by `<redacted>`."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern, replacement in _TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_data(value: object, *, secrets: Iterable[str] = ()) -> object:
    """JSON-ready data with secret values removed: by key name, by type, and by text pattern."""
    known = tuple(secrets)
    return _redact(value, known)


def redact_mapping(value: Mapping[str, object], *, secrets: Iterable[str] = ()) -> dict[str, object]:
    """`redact_data` of a mapping, typed as the mapping it returns (a webhook body, say)."""
    return _redact_mapping(value, tuple(secrets))


def _redact(value: object, secrets: tuple[str, ...]) -> object:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value, secrets=secrets)
    if isinstance(value, datetime):
        from controller.model.snapshot import at

        return at(value)
    if _is_credential_object(value):
        return REDACTED
    if isinstance(value, Mapping):
        return _redact_mapping(value, secrets)
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(item, secrets) for item in value]
    if hasattr(value, "model_dump"):
        return _redact(value.model_dump(mode="json"), secrets)
    if is_dataclass(value) and not isinstance(value, type):
        return _redact(asdict(value), secrets)
    # Unknown objects are rendered as text and then scrubbed like any other text.
    return redact_text(str(value), secrets=secrets)


def _redact_mapping(value: Mapping[Any, object], secrets: tuple[str, ...]) -> dict[str, object]:
    # Keys of any type (a Mapping's key type is invariant); they come out as text.
    return {str(key): _redact_entry(str(key), item, secrets) for key, item in value.items()}


def _redact_entry(key: str, item: object, secrets: tuple[str, ...]) -> object:
    if not is_secret_key(key):
        return _redact(item, secrets)
    if isinstance(item, str) and _REFERENCE.match(item):
        return item
    if item is None or isinstance(item, bool):
        return item
    return REDACTED


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs each record's rendered message; add it to every stagectl handler."""

    def __init__(self, *, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message, secrets=self._secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
