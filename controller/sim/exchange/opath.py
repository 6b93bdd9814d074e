"""The part of Exchange's OPATH `-Filter` syntax the simulator answers (exchange-facts §10).

Comparisons `Property -eq 'value'` (also `-ne`, and `-like` with `*` wildcards), grouped by parentheses
and joined by `-and`/`-or`, optionally negated by `-not`; a value is single-quoted, a quote inside it
doubled. Anything else is refused as Exchange refuses a filter it cannot parse: with a cmdlet error, never
by matching everything.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Row = Mapping[str, object]
Predicate = Callable[[Row], bool]

_TOKEN = re.compile(
    r"\s*(?:(?P<open>\()|(?P<close>\))|(?P<op>-(?:eq|ne|like|and|or|not))\b|'(?P<value>(?:[^']|'')*)'"
    r"|(?P<name>[A-Za-z][A-Za-z0-9]*))",
    re.IGNORECASE,
)


class FilterError(ValueError):
    """The filter is not OPATH this simulator understands."""


@dataclass
class _Token:
    kind: str  # open, close, op, value, name
    text: str


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise FilterError(
                f"cannot parse the filter at position {position}: {text[position : position + 20]!r}"
            )
        kind = next(k for k, v in match.groupdict().items() if v is not None)
        value = match.group(kind)
        tokens.append(_Token(kind, value.replace("''", "'") if kind == "value" else value))
        position = match.end()
    return tokens


def compile_filter(text: str) -> Predicate:
    """A predicate over an output row (property names compared case-insensitively, values too)."""
    parser = _Parser(_tokens(text))
    predicate = parser.expression()
    if parser.position != len(parser.tokens):
        raise FilterError("unexpected text after the end of the filter")
    return predicate


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.position = 0

    def _peek(self) -> _Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self, kind: str) -> _Token:
        token = self._peek()
        if token is None or token.kind != kind:
            raise FilterError(f"expected {kind} in the filter")
        self.position += 1
        return token

    def _is_op(self, *names: str) -> bool:
        token = self._peek()
        return token is not None and token.kind == "op" and token.text.lower() in names

    def expression(self) -> Predicate:
        terms = [self._conjunction()]
        while self._is_op("-or"):
            self.position += 1
            terms.append(self._conjunction())
        return terms[0] if len(terms) == 1 else (lambda row: any(term(row) for term in terms))

    def _conjunction(self) -> Predicate:
        terms = [self._unary()]
        while self._is_op("-and"):
            self.position += 1
            terms.append(self._unary())
        return terms[0] if len(terms) == 1 else (lambda row: all(term(row) for term in terms))

    def _unary(self) -> Predicate:
        if self._is_op("-not"):
            self.position += 1
            inner = self._unary()
            return lambda row: not inner(row)
        token = self._peek()
        if token is not None and token.kind == "open":
            self.position += 1
            inner = self.expression()
            self._take("close")
            return inner
        return self._comparison()

    def _comparison(self) -> Predicate:
        name = self._take("name").text.lower()
        operator = self._take("op").text.lower()
        if operator not in ("-eq", "-ne", "-like"):
            raise FilterError(f"{operator} is not a comparison")
        wanted = self._take("value").text.lower()

        def value(row: Row) -> str:
            found = next((v for k, v in row.items() if k.lower() == name), None)
            return "" if found is None else str(found).lower()

        if operator == "-eq":
            return lambda row: value(row) == wanted
        if operator == "-ne":
            return lambda row: value(row) != wanted
        return lambda row: fnmatch.fnmatchcase(value(row), wanted)


def equal_values(text: str, prop: str) -> set[str] | None:
    """The values of a filter that is only `prop -eq 'v'` terms joined by -or (lower-cased), or None.

    Lets the simulator answer the controller's address filter by lookup instead of a directory scan.
    """
    try:
        tokens = _tokens(text)
    except FilterError:
        return None
    values: set[str] = set()
    index = 0
    while index < len(tokens):
        group = tokens[index : index + 5]
        shaped = [t.kind for t in group] == ["open", "name", "op", "value", "close"]
        if not shaped or group[1].text.lower() != prop.lower() or group[2].text.lower() != "-eq":
            return None
        values.add(group[3].text.lower())
        index += 5
        if index < len(tokens):
            if tokens[index].kind != "op" or tokens[index].text.lower() != "-or":
                return None
            index += 1
            if index == len(tokens):
                return None
    return values or None
