"""User data as messages quote it: escaped and bounded, so that a 4 MB name or a control character in a
file name never reaches a terminal, a log or `status` whole or raw."""

from __future__ import annotations

import unicodedata

SHOWN = 80  # characters of a quoted value a message keeps


def shown(value: object, limit: int = SHOWN) -> str:
    """`repr` of the value (control characters escaped), cut to `limit` with how long it was."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = len(value) if isinstance(value, str | bytes) else len(text)
    return f"{text[: limit - 1]}… ({size:,} characters)"


def printable(text: str) -> str:
    """A path or name as it is, but with control and non-printable characters escaped (`\\x1b`)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def character(value: str) -> str:
    """One character with its code point and Unicode name: 'о' (U+043E CYRILLIC SMALL LETTER O), so that a
    look-alike of an ASCII letter, or an invisible one, is told apart in a message."""
    return f"{value!r} (U+{ord(value):04X} {unicodedata.name(value, 'unnamed')})"
