"""SPF strings (RFC 7208) as the cutover needs them: find the one at a name, count its DNS lookups, and
derive the coexistence string that authorises on-premises and Exchange Online senders alike. Pure."""

from __future__ import annotations

from collections.abc import Sequence

EXCHANGE_ONLINE = "include:spf.protection.outlook.com"
MAX_LOOKUPS = 10  # RFC 7208 §4.6.4: more DNS-querying terms than this is a permerror at every receiver
_LOOKUP_MECHANISMS = frozenset({"include", "a", "mx", "ptr", "exists"})
_QUALIFIERS = "+-~?"


def is_spf(value: str) -> bool:
    """RFC 7208 §4.5: a record is SPF when its version section is exactly `v=spf1` (any case)."""
    lowered = value.lower()
    return lowered == "v=spf1" or lowered.startswith("v=spf1 ")


def spf_strings(values: Sequence[str]) -> list[str]:
    return [value for value in values if is_spf(value)]


def _mechanism(term: str) -> str:
    """`-all` -> `all`, `include:x` -> `include`, `a/24` -> `a`, `redirect=x` -> `redirect=`."""
    bare = term.lstrip(_QUALIFIERS).lower()
    if "=" in bare.split(":", 1)[0]:
        return bare.split("=", 1)[0] + "="
    return bare.split(":", 1)[0].split("/", 1)[0]


def lookups(spf: str) -> int:
    """The DNS-querying terms of a string: include, a, mx, ptr, exists and the redirect modifier."""
    terms = [_mechanism(term) for term in spf.split()[1:]]
    return sum(1 for term in terms if term in _LOOKUP_MECHANISMS or term == "redirect=")


def authorises_exchange_online(spf: str) -> bool:
    """Exchange Online's include is there, however written: `+include:`, any case, a trailing dot."""
    return any(term.lower().lstrip("+").rstrip(".") == EXCHANGE_ONLINE for term in spf.split()[1:])


def only_exchange_online(spf: str) -> bool:
    """The final string of a finished migration: Exchange Online's include is its only sender."""
    kinds = [(term, _mechanism(term)) for term in spf.split()[1:]]
    senders = [term.lower().lstrip("+") for term, kind in kinds if kind != "all" and not kind.endswith("=")]
    return senders == [EXCHANGE_ONLINE]


def coexistence(observed: str) -> str:
    """The observed string with Exchange Online's include placed before its `all` term (or after its last
    mechanism when it has none), so mail from both on-premises and Exchange Online passes."""
    if authorises_exchange_online(observed):
        return observed
    terms = observed.split()
    at = len(terms)
    for index, term in enumerate(terms[1:], start=1):
        if _mechanism(term) == "all":
            at = index
            break
    else:
        while at > 1 and _mechanism(terms[at - 1]).endswith("="):
            at -= 1  # modifiers (redirect=, exp=) may stand anywhere; keep the new mechanism among the others
    return " ".join([*terms[:at], EXCHANGE_ONLINE, *terms[at:]])
