"""Plain-data YAML: documents composed by PyYAML's safe loader, turned into data by us so that every
value keeps its file position and nothing but plain data gets through.

Refused, each with the position at fault:
- aliases (`*name`): the desired state must read in review exactly as the controller reads it,
  and refusing every alias rules out alias bombs ("billion laughs") outright — the composer never
  expands an alias, and we stop at the first one instead of counting expansions;
- tags other than YAML's plain ones (`!python/object`, `!Ref`, `!!binary`, `!!set`...);
- duplicate keys, which YAML loaders otherwise resolve silently to the last one;
- nesting deeper than `MAX_DEPTH`, files larger than `MAX_YAML_BYTES` and files of more than `MAX_NODES`
  values (counted on the parser's events before anything is composed: PyYAML's nodes take some 300 bytes
  each, so 5 MiB of `[1,1,1,…]` composed would take 1.5 GB);
- text that is not UTF-8: UTF-16 or UTF-32 (which PyYAML would decode, but git and review tools show as
  binary, so it cannot be reviewed), NUL bytes (binary data, or UTF-16 without a byte order mark), bytes
  that are not UTF-8 (Latin-1, Windows-1252) and control characters, each at its line and column. A UTF-8
  byte order mark, which many Windows editors write, is accepted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import yaml
from yaml.constructor import SafeConstructor

from controller.desired.shown import shown

MAX_YAML_BYTES = 5 * 1024 * 1024
MAX_DEPTH = 64
# Values (scalars, lists, mappings) in one file; 100 batches of 2,000 members inline fit in 2.5 files.
MAX_NODES = 100_000

# libyaml composes in C when it is available; both loaders are safe, neither constructs objects.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_TAG}{name}" for name in ("str", "int", "float", "bool", "null", "timestamp")}
_MAP_TAG, _SEQ_TAG = f"{_TAG}map", f"{_TAG}seq"
_ALLOWED_TAGS = {yaml.ScalarNode: _SCALAR_TAGS, yaml.SequenceNode: {_SEQ_TAG}, yaml.MappingNode: {_MAP_TAG}}
_CONSTRUCTORS = SafeConstructor.yaml_constructors

_UTF8_BOM = b"\xef\xbb\xbf"
_WIDE_BOMS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
# What YAML 1.1 does not allow in a stream (PyYAML's reader refuses the same, without a line).
_NOT_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_ALIAS_REFUSED = "YAML aliases (*name) are not allowed: write the value out in full"

Path = tuple[str | int, ...]
Position = tuple[int, int]  # 1-based line and column


class YamlError(Exception):
    """The file is not plain YAML data; `line` and `column` are 1-based."""

    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(message)
        self.line, self.column, self.message = line, column, message


@dataclass
class Document:
    """One YAML document as plain data, with the position of every node by its path."""

    data: object
    start: Position
    nodes: int = 0  # the values it holds
    values: dict[Path, Position] = field(default_factory=dict)  # where each value starts
    keys: dict[Path, Position] = field(default_factory=dict)  # where the key of a mapping entry is
    # Problems that spoil one value but not the document: (path, line, column, message).
    problems: list[tuple[Path, int, int, str]] = field(default_factory=list)

    def position(self, path: Path, *, key: bool = False) -> Position:
        """The position of `path`, or of its nearest ancestor that exists in the document."""
        path = tuple(path)
        if key and path in self.keys:
            return self.keys[path]
        while path:
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.start


class _Mark(Protocol):
    """A parser's mark: PyYAML's own or libyaml's, which share no base class."""

    @property
    def line(self) -> int: ...

    @property
    def column(self) -> int: ...


def _position(mark: _Mark | None) -> Position:
    """The 1-based position of `mark`; the start of the file when the parser gave none."""
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def load_documents(text: bytes, *, max_nodes: int = MAX_NODES, too_many: str = "") -> Iterator[Document]:
    """Every non-empty document of a YAML stream; raises YamlError at the first thing not plain data, or at
    the value past `max_nodes` (with `too_many` as the reason when given)."""
    if len(text) > MAX_YAML_BYTES:
        raise YamlError(1, 1, f"file is larger than {MAX_YAML_BYTES // (1024 * 1024)} MiB")
    _check_text(text)
    try:
        # Every value takes at least one byte: a shorter file cannot hold too many.
        if b"*" in text or len(text) > max_nodes:
            _scan_events(text, max_nodes, too_many or f"more than {max_nodes:,} values in one file: split it")
        loader = _LOADER(text)
        try:
            while loader.check_node():
                node = loader.get_node()
                if node is None:
                    continue
                document = Document(data=None, start=_position(node.start_mark))
                builder = _Builder(document)
                document.data = builder.build(node, (), 0)
                document.nodes = len(builder.seen)
                if document.data is not None:
                    yield document
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as error:
        line, column = _position(error.problem_mark or error.context_mark)
        problem = " ".join(part for part in (error.context, error.problem) if part)
        raise YamlError(line, column, f"YAML syntax: {problem or 'cannot parse'}") from None
    except yaml.YAMLError as error:  # reader errors: bad encoding, control characters
        raise YamlError(1, 1, f"not readable as YAML: {_one_line(str(error))}") from None


def _check_text(text: bytes) -> None:
    """Refuse what is not UTF-8 text at the line and column of the first byte at fault."""
    for bom, encoding in _WIDE_BOMS:
        if text.startswith(bom):
            raise YamlError(
                1, 1, f"{encoding} text (it starts with a {encoding} byte order mark): save the file as UTF-8"
            )
    nul = text.find(b"\x00")
    if nul >= 0:
        raise YamlError(
            *_byte_position(text, nul),
            "a NUL byte: binary data, or UTF-16 text without a byte order mark, is not YAML; "
            "save the file as UTF-8 text",
        )
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as error:
        raise YamlError(
            *_byte_position(text, error.start),
            f"not UTF-8 (byte 0x{text[error.start]:02x}; Latin-1 or Windows-1252 text?): "
            "save the file as UTF-8",
        ) from None
    bad = _NOT_PRINTABLE.search(decoded, 1 if decoded.startswith("\ufeff") else 0)
    if bad is not None:
        before = decoded[: bad.start()]
        line = before.count("\n") + 1
        column = bad.start() - (before.rfind("\n") + 1) + 1
        raise YamlError(
            line,
            column,
            f"control character {shown(bad.group())} is not allowed in YAML; write it escaped in a "
            "double-quoted string if it is meant",
        )


def _byte_position(text: bytes, offset: int) -> Position:
    """The 1-based line and column (in characters) of the byte at `offset`."""
    start = text.rfind(b"\n", 0, offset) + 1
    head = text[start:offset]
    if start == 0 and head.startswith(_UTF8_BOM):
        head = head[len(_UTF8_BOM) :]
    return text.count(b"\n", 0, offset) + 1, len(head.decode("utf-8", errors="replace")) + 1


def _scan_events(text: bytes, max_nodes: int, too_many: str) -> None:
    """Stop at the first alias, named where it is written (the composed node only knows its anchor), and
    at the value past `max_nodes`, before any node is built."""
    nodes = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.AliasEvent):
            raise YamlError(*_position(event.start_mark), _ALIAS_REFUSED)
        if isinstance(event, yaml.ScalarEvent | yaml.SequenceStartEvent | yaml.MappingStartEvent):
            nodes += 1
            if nodes > max_nodes:
                raise YamlError(*_position(event.start_mark), too_many)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


class _Builder:
    def __init__(self, document: Document) -> None:
        self.document = document
        self.seen: set[int] = set()
        self.constructor = SafeConstructor()

    def build(self, node: yaml.Node, path: Path, depth: int) -> object:
        position = _position(node.start_mark)
        # The composer hands out the anchored node again for each alias: a node met twice is an alias.
        if id(node) in self.seen:
            raise YamlError(*position, _ALIAS_REFUSED)
        self.seen.add(id(node))
        if depth > MAX_DEPTH:
            raise YamlError(*position, f"nested deeper than {MAX_DEPTH} levels")
        self.document.values[path] = position
        if node.tag not in _ALLOWED_TAGS[type(node)]:
            tag = node.tag.replace(_TAG, "!!")
            self.document.problems.append((path, *position, f"tag {tag} is not allowed: plain data only"))
            return None
        if isinstance(node, yaml.ScalarNode):
            try:
                return _CONSTRUCTORS[node.tag](self.constructor, node)
            except (ValueError, TypeError, yaml.YAMLError) as error:
                message = f"cannot read {shown(node.value)}: {_one_line(str(error))}"
                self.document.problems.append((path, *position, message))
                return None
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, index), depth + 1) for index, item in enumerate(node.value)]
        mapping: dict[str, object] = {}
        for key_node, value_node in node.value:
            key_position = _position(key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode) or id(key_node) in self.seen:
                raise YamlError(*key_position, "mapping keys must be plain words")
            self.seen.add(id(key_node))
            key = str(key_node.value)  # the key as written: `on:` stays "on", not True
            if key in mapping:
                first = self.document.keys[(*path, key)]
                message = f"duplicate key {shown(key)} (first at line {first[0]})"
                self.document.problems.append(((*path, key), *key_position, message))
                continue
            self.document.keys[(*path, key)] = key_position
            mapping[key] = self.build(value_node, (*path, key), depth + 1)
        return mapping
