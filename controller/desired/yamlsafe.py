"""Plain-data YAML: documents composed by PyYAML's safe loader, turned into data by us so that every
value keeps its file position and nothing but plain data gets through.

Refused, each with the position at fault:
- aliases (`*name`): the desired state must read in review exactly as the controller reads it,
  and refusing every alias rules out alias bombs ("billion laughs") outright — the composer never
  expands an alias, and we stop at the first one instead of counting expansions;
- tags other than YAML's plain ones (`!python/object`, `!Ref`, `!!binary`, `!!set`...);
- duplicate keys, which YAML loaders otherwise resolve silently to the last one;
- nesting deeper than `MAX_DEPTH` and files larger than `MAX_YAML_BYTES`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import yaml
from yaml.constructor import SafeConstructor

from controller.desired.shown import shown

MAX_YAML_BYTES = 5 * 1024 * 1024
MAX_DEPTH = 64

# libyaml composes in C when it is available; both loaders are safe, neither constructs objects.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_TAG}{name}" for name in ("str", "int", "float", "bool", "null", "timestamp")}
_MAP_TAG, _SEQ_TAG = f"{_TAG}map", f"{_TAG}seq"
_ALLOWED_TAGS = {yaml.ScalarNode: _SCALAR_TAGS, yaml.SequenceNode: {_SEQ_TAG}, yaml.MappingNode: {_MAP_TAG}}
_CONSTRUCTORS = SafeConstructor.yaml_constructors

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


def load_documents(text: bytes) -> Iterator[Document]:
    """Every non-empty document of a YAML stream; raises YamlError at the first thing not plain data."""
    if len(text) > MAX_YAML_BYTES:
        raise YamlError(1, 1, f"file is larger than {MAX_YAML_BYTES // (1024 * 1024)} MiB")
    try:
        if b"*" in text:
            _refuse_aliases(text)
        loader = _LOADER(text)
        try:
            while loader.check_node():
                node = loader.get_node()
                if node is None:
                    continue
                document = Document(data=None, start=_position(node.start_mark))
                document.data = _Builder(document).build(node, (), 0)
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


def _refuse_aliases(text: bytes) -> None:
    """Stop at the first alias, named where it is written (the composed node only knows its anchor)."""
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.AliasEvent):
            raise YamlError(*_position(event.start_mark), _ALIAS_REFUSED)


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
