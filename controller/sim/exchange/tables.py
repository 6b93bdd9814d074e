"""Tables of rows that note which rows changed, so the simulator's store writes those and no others.

A `Row` tells the `Table` that holds it when one of its fields takes a new value; the table notes the key
while it is `recording` (the store turns that on for the tenant it keeps) and lets a subclass keep what it
derives from its rows in step. Whatever changes a row (a cmdlet, the engine, a test's own hand) is noticed,
so the store never compares or rewrites rows that did not change.
"""

from __future__ import annotations

import copy
from collections.abc import (
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)
from typing import Any, ClassVar, Protocol, Self, TypeVar, overload

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, PrivateAttr
from pydantic_core import core_schema

_ABSENT = object()
_T = TypeVar("_T")


class Row(BaseModel):
    """One row of a `Table`; where it lives is not part of its value (equality and copies ignore it)."""

    model_config = ConfigDict(validate_assignment=False, extra="forbid")
    _home: tuple[Table[Any], str] | None = PrivateAttr(default=None)

    def __setattr__(self, name: str, value: Any) -> None:
        old = self.__dict__.get(name, _ABSENT)
        super().__setattr__(name, value)
        if old is _ABSENT or (type(old) is type(value) and old == value):
            return  # a private attribute, or the same value again: nothing to write
        home = _home(self)
        if home is not None:
            home[0].touch(home[1])

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Row)
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # mutable, as every pydantic model that is not frozen

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        fields: dict[str, Any] = copy.deepcopy(self.__dict__, memo)
        return type(self).from_store(fields)  # a copy belongs to no table until one takes it

    @classmethod
    def from_store(cls, fields: dict[str, Any]) -> Self:
        """A row from values the store wrote, every field given: what `model_construct` makes, without its
        per-field pass over defaults (three times slower, when a batch's 2,000 users are read)."""
        row = cls.__new__(cls)
        object.__setattr__(row, "__dict__", fields)
        object.__setattr__(row, "__pydantic_fields_set__", set(fields))
        object.__setattr__(row, "__pydantic_extra__", None)
        object.__setattr__(row, "__pydantic_private__", {"_home": None})
        return row


RowT = TypeVar("RowT", bound=Row)


def _home(row: Row) -> tuple[Table[Any], str] | None:
    private = row.__pydantic_private__
    return None if private is None else private.get("_home")


def _place(row: Row, home: tuple[Table[Any], str] | None) -> None:
    private = row.__pydantic_private__
    if private is None:
        object.__setattr__(row, "__pydantic_private__", {"_home": home})
    else:
        private["_home"] = home


V = TypeVar("V", bound=BaseModel)


class Keyed(MutableMapping[str, V]):
    """Models by key, in insertion order, read straight from the dict that keeps them; held in a pydantic
    model as a field, validated and serialised as that dict. Subclasses say what setting and deleting do,
    and may read their items lazily (`_every`, `_one`)."""

    __slots__ = ("_items",)
    value_type: ClassVar[type[BaseModel]]

    def __init__(self) -> None:
        self._items: dict[str, V] = {}

    def _every(self) -> dict[str, V]:
        """Every item (a table read lazily reads the rest first)."""
        return self._items

    def _one(self, key: str) -> V | None:
        """The item at `key`, if there is one (a table read lazily reads it first)."""
        return self._items.get(key)

    def __getitem__(self, key: str) -> V:
        try:
            return self._items[key]
        except KeyError:
            item = self._one(key)
            if item is None:
                raise
            return item

    def __iter__(self) -> Iterator[str]:
        return iter(self._every())

    def __len__(self) -> int:
        return len(self._every())

    def __contains__(self, key: object) -> bool:
        return key in self._items or (isinstance(key, str) and self._one(key) is not None)

    @overload
    def get(self, key: str, /) -> V | None: ...
    @overload
    def get(self, key: str, /, default: V | _T) -> V | _T: ...
    def get(self, key: str, /, default: object = None) -> object:
        item = self._items.get(key)
        if item is None:
            item = self._one(key)
        return default if item is None else item

    def keys(self) -> KeysView[str]:
        return self._every().keys()

    def values(self) -> ValuesView[V]:
        return self._every().values()

    def items(self) -> ItemsView[str, V]:
        return self._every().items()

    def as_dict(self) -> dict[str, V]:
        """The dict the values are kept in (for serialising; not to be changed)."""
        return self._every()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Keyed):
            return self._every() == other._every()
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._every()!r})"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        plain = handler.generate_schema(dict[str, cls.value_type])  # type: ignore[name-defined]
        return core_schema.no_info_after_validator_function(
            cls.from_dict,
            plain,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda mapping: mapping.as_dict(), return_schema=plain
            ),
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, V]) -> Self:
        made = cls()
        for key, value in values.items():
            made[key] = value
        return made

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        copied = type(self)()
        memo[id(self)] = copied
        for key, value in self._every().items():
            copied[key] = copy.deepcopy(value, memo)
        return copied


RowT_co = TypeVar("RowT_co", bound=Row, covariant=True)


class Source(Protocol[RowT_co]):
    """Where a table read lazily finds the rows it has not read yet (the store's database)."""

    def one(self, key: str) -> RowT_co | None: ...

    def every(self) -> Iterator[tuple[str, RowT_co]]: ...


class Table(Keyed[RowT]):
    """Rows by key, in insertion order, as a dict keeps them.

    While `recording` it notes in `changed` the keys set or changed (in the order they were first set or
    changed) and in `deleted` the keys deleted, until `forget_changes`. A key deleted and set again is in
    both: its row is new and goes last, as in a dict.

    A table can be read lazily (`read_later`): a row is read from its `Source` when first asked for by key,
    all of them when iterated (or at the first use of any kind, for a table that `reads_whole`); the rows
    read, changed or added here stand over what the source holds.
    """

    __slots__ = ("_absent", "_source", "changed", "deleted", "recording")
    reads_whole: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.recording = False
        self.changed: dict[str, None] = {}
        self.deleted: set[str] = set()
        self._source: Source[RowT] | None = None
        self._absent: set[str] = set()  # keys the source was asked for and does not hold

    def read_later(self, source: Source[RowT]) -> None:
        self._source = source

    @property
    def pending(self) -> bool:
        """Rows are still to be read from the source."""
        return self._source is not None

    def _every(self) -> dict[str, RowT]:
        if self._source is not None:
            self._read_rest()
        return self._items

    def _one(self, key: str) -> RowT | None:
        row = self._items.get(key)
        if row is not None or self._source is None or key in self._absent or key in self.deleted:
            return row
        if self.reads_whole:
            return self._every().get(key)
        row = self._source.one(key)
        if row is None:
            self._absent.add(key)
        else:
            self._items[key] = row
            _place(row, (self, key))
        return row

    def _read_rest(self) -> None:
        source, self._source = self._source, None
        assert source is not None
        held, merged = self._items, {}
        for key, row in source.every():
            if key in self.deleted:
                continue  # deleted here since: gone, or set again (then it goes last, below)
            kept = held.pop(key, None)
            if kept is None:
                _place(row, (self, key))
                kept = row
            merged[key] = kept
        merged.update(held)  # set here, not written yet
        self._items = merged
        self._absent.clear()
        self._loaded()

    def __setitem__(self, key: str, row: RowT) -> None:
        if self.reads_whole:
            self._every()
        old = self._items.get(key)
        if old is not None and old is not row:
            _place(old, None)  # a row replaced no longer reports here
        self._items[key] = row
        self._absent.discard(key)
        _place(row, (self, key))
        if old is None:
            self._added(key)
        self.touch(key)

    def __delitem__(self, key: str) -> None:
        row = self[key]  # read it if it is not yet: KeyError if there is none
        del self._items[key]
        _place(row, None)
        if self.recording:
            self.changed.pop(key, None)
            self.deleted.add(key)
        self._removed(key)
        self._changed(key)

    def touch(self, key: str) -> None:
        """The row at `key` changed: note it, and let a subclass update what it derives."""
        if self.recording:
            self.changed[key] = None
        self._changed(key)

    def load(self, rows: Iterable[tuple[str, RowT]]) -> None:
        """Add rows read from the store to a table without those keys: not noted as changed."""
        kept = self._items
        for key, row in rows:
            kept[key] = row
            _place(row, (self, key))
        self._loaded()

    def stored(self, key: str, row: RowT | None) -> None:
        """Another transaction wrote the row at `key` (None: deleted it): take it if this table holds the
        key or has read all its rows; else forget that the source did not have it."""
        if key in self._items or self._source is None:
            if row is not None:
                self[key] = row
            elif key in self._items:
                del self[key]
        else:
            self._absent.discard(key)

    def forget_changes(self) -> None:
        self.changed.clear()
        self.deleted.clear()

    def _added(self, key: str) -> None:
        """A new key: for subclasses that index the keys."""

    def _removed(self, key: str) -> None:
        """A key deleted: for subclasses that index the keys."""

    def _changed(self, key: str) -> None:
        """A row set, changed or deleted: for subclasses that derive data from the rows."""

    def _loaded(self) -> None:
        """Rows were added by `load` or read at once: for subclasses that derive data from the rows."""
