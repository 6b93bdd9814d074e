"""Internationalised domain names as DNS carries them: Unicode names converted to A-labels per IDNA 2008,
A-labels checked, so that the planner, the DNS wire and Exchange all see one spelling of a name.

The conversion is the `idna` package's (IDNA 2008, RFC 5891-5893): each Unicode label is first mapped
as UTS #46 does without transitional processing (upper to lower case, full-width letters to ASCII,
NFC; `ß` stays `ß`), then checked (disallowed code points, the contextual rules for joiners, the bidi
rule) and encoded. ASCII labels other than A-labels are left to the callers' own checks: DNS names
carry labels such as `_dmarc` or `*` that are not host names and never pass through IDNA.
"""

from __future__ import annotations

import unicodedata

import idna

ACE_PREFIX = "xn--"
SHOWN = 80  # characters of a name repeated in a message, so that a pasted blob cannot flood it
# Scripts that are written together (UTS #39, "highly restrictive"): Japanese, Chinese and Korean with
# Latin. Any other mix in one label (Cyrillic 'а' among Latin letters) is how a look-alike of another
# name is made: cоntoso.com with a Cyrillic 'о' is another domain that reads as contoso.com.
_SCRIPTS_TOGETHER = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)


def to_ascii(name: str) -> str:
    """`name` with each Unicode label as its A-label; raises ValueError naming the label and why.

    A name that is all ASCII is returned as written (its A-labels checked), so that an administrator's
    spelling of an ordinary name never changes."""
    if name.isascii():
        for label in name.split("."):
            _check_a_label(name, label)
        return name
    try:
        # The mapping keeps the dots (and turns the ideographic full stop into one): labels come after.
        mapped = idna.uts46_remap(name, std3_rules=False, transitional=False)
    except idna.IDNAError as error:
        raise ValueError(f"{_shown(name)} is not a valid IDNA 2008 name: {_reason(error)}") from error
    labels = []
    for label in mapped.split("."):
        if label.isascii():
            _check_a_label(name, label)
            labels.append(label)
            continue
        try:
            labels.append(idna.alabel(label).decode("ascii"))
        except idna.IDNAError as error:
            raise ValueError(
                f"{_shown(name)} is not a valid IDNA 2008 name: label {_shown(label)}: {_reason(error)}"
            ) from error
        scripts = _scripts(label)
        if len(scripts) > 1 and not any(scripts <= together for together in _SCRIPTS_TOGETHER):
            raise ValueError(
                f"{_shown(name)} is refused: label {_shown(label)} mixes {' and '.join(sorted(scripts))} "
                "letters, which makes a look-alike of another name"
            )
    return ".".join(labels)


def _scripts(label: str) -> frozenset[str]:
    """The scripts of the letters of `label`, by the first word of their Unicode names (CJK: HAN)."""
    found = set()
    for character in label:
        if unicodedata.category(character).startswith("L"):
            script = unicodedata.name(character, "UNKNOWN").split(" ")[0]
            found.add("HAN" if script == "CJK" else script)
    return frozenset(found)


def _check_a_label(name: str, label: str) -> None:
    """An `xn--` label must be the canonical A-label of a valid U-label (RFC 5891 §5.4)."""
    if not label.lower().startswith(ACE_PREFIX):
        return
    try:
        # Decoded, checked, and encoded again to the same label: a non-canonical spelling (a "fake
        # A-label") would show as one name and be another on the wire. Recent `idna` checks it too.
        if idna.alabel(idna.ulabel(label)).decode("ascii") != label.lower():
            raise idna.IDNAError("not the canonical Punycode of its U-label")
    except idna.IDNAError as error:
        raise ValueError(
            f"{_shown(name)} is not a valid IDNA 2008 name: "
            f"{_shown(label)} is not a valid A-label ({_reason(error)})"
        ) from error


def _shown(text: str) -> str:
    return repr(text) if len(text) <= SHOWN else repr(text[: SHOWN - 3] + "...")


def _reason(error: idna.IDNAError) -> str:
    """The library's reason, cut: it may quote the label, which is the administrator's input."""
    text = str(error)
    return text if len(text) <= 2 * SHOWN else text[: 2 * SHOWN - 3] + "..."
