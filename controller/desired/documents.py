"""The YAML files of the desired state parsed into typed documents of each kind, every problem of
syntax, apiVersion, kind, schema or a secret written in the clear reported at its position."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import pydantic
import pydantic_core

from controller import redact
from controller.desired import models, yamlsafe
from controller.desired.problems import Problems
from controller.desired.shown import shown

YAML_SUFFIXES = (".yaml", ".yml")
# Values in all the YAML files of one revision: what a load holds at most (100 batches of 2,000 members
# inline need 200,000). Each file is held to `yamlsafe.MAX_NODES` as well.
MAX_TOTAL_NODES = 250_000
# A file emptied by mistake (a bad merge, a truncated save) must not read as a batch deleted on purpose.
_EMPTY = "the file holds no YAML document (it is empty or only comments): delete the file if that is meant"

DocumentT = TypeVar("DocumentT", bound=models.Model)


@dataclass(frozen=True, slots=True)
class Parsed(Generic[DocumentT]):
    """One valid document and where it came from."""

    path: str  # relative to the desired directory
    where: str  # the path as messages name it
    document: yamlsafe.Document
    model: DocumentT

    def source(self, at: yamlsafe.Path) -> models.Source:
        line, column = self.document.position(at)
        return models.Source(self.where, line, column)


@dataclass(slots=True)
class Documents:
    """The valid documents of the desired directory by kind, each kind in the order of its files."""

    files: list[str] = field(default_factory=list)  # every YAML file read, valid or not
    migrations: list[Parsed[models.MigrationDocument]] = field(default_factory=list)
    batches: list[Parsed[models.BatchDocument]] = field(default_factory=list)
    zones: list[Parsed[models.DnsZoneDocument]] = field(default_factory=list)
    migration_documents: int = 0  # valid or not, so that a broken one is not also "missing"
    unreadable: int = 0  # files that are not YAML data: one of them may be the Migration

    def add(self, path: str, where: str, document: yamlsafe.Document, model: models.Model | None) -> None:
        """Count a Migration document and keep the document under its kind when it is valid."""
        data = document.data
        if isinstance(data, dict) and data.get("kind") == "Migration":
            self.migration_documents += 1
        if isinstance(model, models.MigrationDocument):
            self.migrations.append(Parsed(path, where, document, model))
        elif isinstance(model, models.BatchDocument):
            self.batches.append(Parsed(path, where, document, model))
        elif isinstance(model, models.DnsZoneDocument):
            self.zones.append(Parsed(path, where, document, model))


def parse(files: Mapping[str, bytes], problems: Problems) -> Documents:
    """The valid documents of the YAML files among `files`; the problems of the others go to `problems`."""
    found = Documents()
    total = 0
    for path in sorted(files):
        if not path.endswith(YAML_SUFFIXES):
            continue
        found.files.append(path)
        left = MAX_TOTAL_NODES - total
        documents = 0
        try:
            for document in yamlsafe.load_documents(
                files[path],
                max_nodes=min(yamlsafe.MAX_NODES, left),
                too_many=""
                if left > yamlsafe.MAX_NODES
                else f"the YAML files hold more than {MAX_TOTAL_NODES:,} values together",
            ):
                documents += 1
                total += document.nodes
                found.add(path, problems.where(path), document, _validate(path, document, problems))
        except yamlsafe.YamlError as error:
            problems.add(path, (error.line, error.column), error.message)
            found.unreadable += 1
            continue
        if not documents:
            problems.add(path, (1, 1), _EMPTY)
    return found


def _validate(path: str, document: yamlsafe.Document, problems: Problems) -> models.Model | None:
    """The document as its kind's model, or None when it has any problem."""
    reported: set[yamlsafe.Path] = set()
    for at, line, column, message in document.problems:
        problems.add(path, (line, column), message)
        reported.add(at)
    for at in _secret_keys(document.data, ()):
        problems.add(
            path,
            document.position(at, key=True),
            f"{_dotted(at)}: secrets never belong in git; use credentialsRef: env:NAME or file:PATH",
        )
        reported.add(at)
    data = document.data
    if not isinstance(data, dict):
        problems.add(path, document.start, "a document must be a mapping with apiVersion and kind")
        return None
    model_class = _kind(path, document, data, problems)
    if model_class is None:
        return None
    try:
        model = model_class.model_validate(data)
    except pydantic.ValidationError as error:
        for item in error.errors(include_url=False):
            at = tuple(item["loc"])
            if not any(at[:size] in reported for size in range(len(at) + 1)):
                position, message = _describe(item, document)
                problems.add(path, position, message)
        return None
    return None if reported else model


def _kind(
    path: str, document: yamlsafe.Document, data: Mapping[str, object], problems: Problems
) -> type[models.Model] | None:
    """The model of the document's kind, or None when its apiVersion or kind is wrong."""
    ok = True
    api_version = data.get("apiVersion")
    if api_version != models.API_VERSION:
        message = (
            f"unknown apiVersion {shown(api_version)}: expected {models.API_VERSION}"
            if "apiVersion" in data
            else f"missing apiVersion: expected {models.API_VERSION}"
        )
        problems.add(path, document.position(("apiVersion",)), message)
        ok = False
    kind = data.get("kind")
    kinds = ", ".join(models.DOCUMENT_KINDS)
    if not isinstance(kind, str) or kind not in models.DOCUMENT_KINDS:
        message = (
            f"unknown kind {shown(kind)}: expected one of {kinds}"
            if "kind" in data
            else f"missing kind: one of {kinds}"
        )
        problems.add(path, document.position(("kind",)), message)
        return None
    return models.DOCUMENT_KINDS[kind] if ok else None


def _secret_keys(data: object, at: yamlsafe.Path) -> list[yamlsafe.Path]:
    found: list[yamlsafe.Path] = []
    if isinstance(data, dict):
        for key, value in data.items():
            # A secret-looking key holds the secret itself unless it is a reference (credentialsRef).
            if redact.is_secret_key(key) and not key.lower().endswith("ref"):
                found.append((*at, key))
            else:
                found += _secret_keys(value, (*at, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _secret_keys(value, (*at, index))
    return found


def _dotted(at: yamlsafe.Path) -> str:
    text = ""
    for part in at:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "document"


def _short(value: object) -> object:
    """A value for a message, cut so that a pasted blob cannot flood the output."""
    text = repr(value)
    return value if len(text) <= 80 else f"{text[:77]}..."


def _describe(item: pydantic_core.ErrorDetails, document: yamlsafe.Document) -> tuple[yamlsafe.Position, str]:
    """Position and message of one pydantic error, in the words of the YAML file."""
    at = tuple(item["loc"])
    kind = item["type"]
    message = item["msg"].removeprefix("Value error, ")
    if kind == "missing":
        return document.position(
            at[:-1], key=True
        ), f"{_dotted(at[:-1])}: missing required field {shown(at[-1])}"
    if kind == "extra_forbidden":
        return document.position(at, key=True), f"{_dotted(at)}: unknown field {shown(at[-1])}"
    if kind in ("enum", "literal_error"):
        value = _short(item.get("input"))
        expected = item.get("ctx", {}).get("expected", "")
        noun = {"type": "record type", "state": "state"}.get(str(at[-1]), "value")
        if at[-1] == "type" and "records" in at:
            message = f"unsupported record type {shown(value)}: expected {expected}"
        else:
            message = f"unknown {noun} {shown(value)}: expected {expected}"
    return document.position(at), f"{_dotted(at)}: {message}"
