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
from typing import Any, ClassVar, Self, TypeVar, overload

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
        """A row from values the store wrote, every field given: `model_construct` without its per-field
        defaults pass, which made reading 200,000 rows take seconds. The rows of a class share one set of
        fields set: pydantic only ever adds to it names it holds already."""
        row = cls.__new__(cls)
        object.__setattr__(row, "__dict__", fields)
        every = _EVERY_FIELD.get(cls)
        if every is None:
            every = _EVERY_FIELD[cls] = set(cls.model_fields)
        object.__setattr__(row, "__pydantic_fields_set__", every)
        object.__setattr__(row, "__pydantic_extra__", None)
        object.__setattr__(row, "__pydantic_private__", {"_home": None})
        return row


_EVERY_FIELD: dict[type[Row], set[str]] = {}
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
    model as a field, validated and serialised as that dict. Subclasses say what setting and deleting do."""

    __slots__ = ("_items",)
    value_type: ClassVar[type[BaseModel]]

    def __init__(self) -> None:
        self._items: dict[str, V] = {}

    def __getitem__(self, key: str) -> V:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    @overload
    def get(self, key: str, /) -> V | None: ...
    @overload
    def get(self, key: str, /, default: V | _T) -> V | _T: ...
    def get(self, key: str, /, default: object = None) -> object:
        return self._items.get(key, default)

    def keys(self) -> KeysView[str]:
        return self._items.keys()

    def values(self) -> ValuesView[V]:
        return self._items.values()

    def items(self) -> ItemsView[str, V]:
        return self._items.items()

    def as_dict(self) -> dict[str, V]:
        """The dict the values are kept in (for serialising; not to be changed)."""
        return self._items

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Keyed):
            return self._items == other._items
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"

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
        for key, value in self._items.items():
            copied[key] = copy.deepcopy(value, memo)
        return copied


class Table(Keyed[RowT]):
    """Rows by key, in insertion order, as a dict keeps them.

    While `recording` it notes in `changed` the keys set or changed (in the order they were first set or
    changed) and in `deleted` the keys deleted, until `forget_changes`. A key deleted and set again is in
    both: its row is new and goes last, as in a dict.
    """

    __slots__ = ("changed", "deleted", "recording")

    def __init__(self) -> None:
        super().__init__()
        self.recording = False
        self.changed: dict[str, None] = {}
        self.deleted: set[str] = set()

    def __setitem__(self, key: str, row: RowT) -> None:
        old = self._items.get(key)
        if old is not None and old is not row:
            _place(old, None)  # a row replaced no longer reports here
        self._items[key] = row
        _place(row, (self, key))
        if old is None:
            self._added(key)
        self.touch(key)

    def __delitem__(self, key: str) -> None:
        row = self._items.pop(key)
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
        """Rows were added by `load`: for subclasses that derive data from the rows."""
