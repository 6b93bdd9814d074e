"""Desired state from files: every YAML document validated, every problem collected with its
`file:line:column`, and a resolved `desired.DesiredState` built when there are none.

The input is `{path relative to the desired directory: bytes}` so that the git source can feed a
revision as well as `load_directory` feeds the working tree.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pydantic

from controller import errors, redact
from controller.desired import csvmembers, records, yamlsafe
from controller.desired import models as desired
from controller.desired.models import Batch, BatchState, DesiredState, Member, Record, Source, Zone

YAML_SUFFIXES = (".yaml", ".yml")
# A batch without members is a placeholder (planned) or on its way out (removed); any other
# state asks Exchange to migrate someone, so it needs at least one member.
EMPTY_BATCH_STATES = (BatchState.PLANNED, BatchState.REMOVED)


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return (
            f"{self.path}:{self.line}:{self.column}: {self.message}"
            if self.line
            else f"{self.path}: {self.message}"
        )


@dataclass
class _Parsed:
    """One validated document and where it came from."""

    path: str  # relative to the desired directory
    document: yamlsafe.Document
    model: pydantic.BaseModel


class _Loader:
    def __init__(self, files: Mapping[str, bytes], root: str) -> None:
        self.files = files
        self.root = root.rstrip("/") or "."
        self.problems: list[Problem] = []
        self.read: dict[str, bytes] = {}
        self.migration_documents = 0  # valid or not, so that a broken one is not also "missing"

    # --- problems ----------------------------------------------------------------------------

    def where(self, path: str) -> str:
        return f"{self.root}/{path}"

    def add(self, path: str, position: tuple[int, int], message: str) -> None:
        self.problems.append(Problem(self.where(path), position[0], position[1], message))

    def source(self, path: str, document: yamlsafe.Document, at: tuple[str | int, ...]) -> Source:
        line, column = document.position(at)
        return Source(self.where(path), line, column)

    # --- documents ---------------------------------------------------------------------------

    def parse(self) -> list[_Parsed]:
        parsed: list[_Parsed] = []
        for path in sorted(self.files):
            if not path.endswith(YAML_SUFFIXES):
                continue
            self.read[path] = self.files[path]
            try:
                for document in yamlsafe.load_documents(self.files[path]):
                    model = self.validate(path, document)
                    if model is not None:
                        parsed.append(_Parsed(path, document, model))
            except yamlsafe.YamlError as error:
                self.add(path, (error.line, error.column), error.message)
        return parsed

    def validate(self, path: str, document: yamlsafe.Document) -> pydantic.BaseModel | None:
        reported: set[tuple[str | int, ...]] = set()
        for at, line, column, message in document.problems:
            self.add(path, (line, column), message)
            reported.add(at)
        for at in _secret_keys(document.data, ()):
            self.add(
                path,
                document.position(at, key=True),
                f"{_dotted(at)}: secrets never belong in git; use credentialsRef: env:NAME or file:PATH",
            )
            reported.add(at)
        data = document.data
        if not isinstance(data, dict):
            self.add(path, document.start, "a document must be a mapping with apiVersion and kind")
            return None
        if data.get("kind") == "Migration":
            self.migration_documents += 1
        model_class = self.kind(path, document, data)
        if model_class is None:
            return None
        try:
            model = model_class.model_validate(data)
        except pydantic.ValidationError as error:
            for item in error.errors(include_url=False):
                at = tuple(item["loc"])
                if not any(at[:size] in reported for size in range(len(at) + 1)):
                    position, message = _describe(item, document)
                    self.add(path, position, message)
            return None
        return None if reported else model

    def kind(self, path: str, document: yamlsafe.Document, data: dict) -> type[pydantic.BaseModel] | None:
        ok = True
        api_version = data.get("apiVersion")
        if api_version != desired.API_VERSION:
            message = (
                f"unknown apiVersion {api_version!r}: expected {desired.API_VERSION}"
                if "apiVersion" in data
                else f"missing apiVersion: expected {desired.API_VERSION}"
            )
            self.add(path, document.position(("apiVersion",)), message)
            ok = False
        kind = data.get("kind")
        kinds = ", ".join(desired.DOCUMENT_KINDS)
        if not isinstance(kind, str) or kind not in desired.DOCUMENT_KINDS:
            message = (
                f"unknown kind {kind!r}: expected one of {kinds}"
                if "kind" in data
                else f"missing kind: one of {kinds}"
            )
            self.add(path, document.position(("kind",)), message)
            return None
        return desired.DOCUMENT_KINDS[kind] if ok else None

    # --- the whole desired state -------------------------------------------------------------

    def resolve(self, parsed: list[_Parsed]) -> tuple[_Parsed | None, list[Batch], list[Zone]]:
        migrations = [item for item in parsed if isinstance(item.model, desired.MigrationDocument)]
        for item in migrations[1:]:
            first = self.source(migrations[0].path, migrations[0].document, ())
            self.add(item.path, item.document.start, f"a second Migration document (the first is at {first})")
        if not self.migration_documents:
            self.problems.append(Problem(self.root, 0, 0, "no Migration document (kind: Migration) found"))
        for item in migrations:
            self.check_endpoint(item)
        batches = [self.batch(item) for item in parsed if isinstance(item.model, desired.BatchDocument)]
        resolved = [batch for batch in batches if batch is not None]
        self.check_batches(resolved)
        zones = [self.zone(item) for item in parsed if isinstance(item.model, desired.DnsZoneDocument)]
        self.check_zones(zones)
        return (migrations[0] if migrations else None), [batch for batch, _ in resolved], zones

    def check_endpoint(self, item: _Parsed) -> None:
        endpoint = item.model.spec.endpoint
        if endpoint.autodiscover:
            return
        missing = [
            key
            for key, value in (
                ("exchangeServer", endpoint.exchange_server),
                ("rpcProxyServer", endpoint.rpc_proxy_server),
            )
            if not value
        ]
        if missing:
            self.add(
                item.path,
                item.document.position(("spec", "endpoint"), key=True),
                f"endpoint {endpoint.name} needs {' and '.join(missing)} unless autodiscover is true",
            )

    def batch(self, item: _Parsed) -> tuple[Batch, list[Source]] | None:
        """The batch with its members and where each member was named, or None when it is broken."""
        spec = item.model.spec
        name = item.model.metadata.name
        document = item.document
        if (spec.members is None) == (spec.members_csv is None):
            both = spec.members is not None
            self.add(
                item.path,
                document.position(("spec", "membersCsv") if both else ("spec",), key=True),
                f"batch {name}: give exactly one of members and membersCsv"
                + ("" if both else ", not neither"),
            )
            return None
        if spec.members is not None:
            members = spec.members
            sources = [
                self.source(item.path, document, ("spec", "members", index)) for index in range(len(members))
            ]
            at: tuple[str | int, ...] = ("spec", "members")
        else:
            at = ("spec", "membersCsv")
            loaded = self.csv(item, spec.members_csv)
            if loaded is None:
                return None
            members, sources = loaded
        if len(members) > desired.MAX_BATCH_MEMBERS:
            self.add(
                item.path,
                document.position(at),
                f"batch {name} has {len(members):,} members; "
                f"a staged batch holds at most {desired.MAX_BATCH_MEMBERS:,}",
            )
        if not members and spec.state not in EMPTY_BATCH_STATES:
            self.add(
                item.path,
                document.position(at),
                f"batch {name} is {spec.state.value} but has no members (only planned or removed may be)",
            )
        batch = Batch(
            name=name,
            state=spec.state,
            members=tuple(Member(address) for address in members),
            start_after=spec.start_after,
            complete_after=spec.complete_after,
            source=self.source(item.path, document, ("metadata", "name")),
        )
        return batch, sources

    def csv(self, item: _Parsed, reference: str) -> tuple[list[str], list[Source]] | None:
        position = item.document.position(("spec", "membersCsv"))
        path = posixpath.normpath(posixpath.join(posixpath.dirname(item.path), reference))
        if reference.startswith("/") or "\\" in reference or path == ".." or path.startswith("../"):
            self.add(item.path, position, f"membersCsv {reference!r} is outside the desired directory")
            return None
        if path not in self.files:
            self.add(
                item.path, position, f"membersCsv {reference!r} not found (looked for {self.where(path)})"
            )
            return None
        data = self.files[path]
        self.read[path] = data
        rows, problems = csvmembers.read_members(data)
        for row, message in problems:
            self.add(path, (row, 1), message)
        if problems:
            return None
        where = self.where(path)
        return [address for _, address in rows], [Source(where, row, 1) for row, _ in rows]

    def check_batches(self, batches: list[tuple[Batch, list[Source]]]) -> None:
        names: dict[str, Batch] = {}
        owners: dict[str, tuple[Batch, Source]] = {}
        active = 0
        for batch, sources in batches:
            first = names.setdefault(batch.key, batch)
            if first is not batch:
                self._problem(
                    batch.source,
                    f"batch name {batch.name!r} is also used at {first.source} "
                    "(names are compared without case)",
                )
            if batch.state is not BatchState.REMOVED:
                active += 1
                if active == desired.MAX_BATCHES + 1:
                    total = sum(1 for b, _ in batches if b.state is not BatchState.REMOVED)
                    self._problem(
                        batch.source,
                        f"more than {desired.MAX_BATCHES} batches that are not removed "
                        f"({total}); Exchange Online holds at most {desired.MAX_BATCHES}",
                    )
            for member, source in zip(batch.members, sources, strict=True):
                owner = owners.setdefault(member.key, (batch, source))
                if owner[0] is batch and owner[1] is not source:
                    self._problem(
                        source,
                        f"duplicate member {member.address} in batch {batch.name} (also at {owner[1]})",
                    )
                elif owner[0] is not batch:
                    self._problem(
                        source,
                        f"{member.address} is a member of both {batch.name} and "
                        f"{owner[0].name} (at {owner[1]})",
                    )

    def _problem(self, source: Source, message: str) -> None:
        self.problems.append(Problem(source.path, source.line, source.column, message))

    def zone(self, item: _Parsed) -> Zone:
        name = item.model.metadata.name.lower().rstrip(".")
        specs = item.model.spec.records
        document = item.document
        good, problems = records.check_zone(
            name, specs, lambda index: document.position(("spec", "records", index))[0]
        )
        for at, message in problems:
            self.add(item.path, document.position(at), message)
        zone_records = tuple(
            Record(
                zone=name,
                name=record_name,
                type=specs[index].type,
                ttl=specs[index].ttl,
                values=values,
                spf=specs[index].spf,
                cutover=specs[index].cutover,
                source=self.source(item.path, document, ("spec", "records", index)),
            )
            for index, record_name, values in good
        )
        return Zone(name, zone_records, self.source(item.path, document, ("metadata", "name")))

    def check_zones(self, zones: list[Zone]) -> None:
        seen: dict[str, Zone] = {}
        for zone in zones:
            first = seen.setdefault(zone.name, zone)
            if first is not zone:
                self._problem(zone.source, f"zone {zone.name} is also defined at {first.source}")


def _secret_keys(data: object, at: tuple[str | int, ...]) -> list[tuple[str | int, ...]]:
    found: list[tuple[str | int, ...]] = []
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


def _dotted(at: tuple[str | int, ...]) -> str:
    text = ""
    for part in at:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "document"


def _short(value: object) -> object:
    """A value for a message, cut so that a pasted blob cannot flood the output."""
    text = repr(value)
    return value if len(text) <= 80 else f"{text[:77]}..."


def _describe(item: dict, document: yamlsafe.Document) -> tuple[tuple[int, int], str]:
    """Position and message of one pydantic error, in the words of the YAML file."""
    at = tuple(item["loc"])
    kind = item["type"]
    message = item["msg"].removeprefix("Value error, ")
    if kind == "missing":
        return document.position(at[:-1], key=True), f"{_dotted(at[:-1])}: missing required field {at[-1]!r}"
    if kind == "extra_forbidden":
        return document.position(at, key=True), f"{_dotted(at)}: unknown field {at[-1]!r}"
    if kind in ("enum", "literal_error"):
        value = _short(item.get("input"))
        expected = item.get("ctx", {}).get("expected", "")
        noun = {"type": "record type", "state": "state"}.get(str(at[-1]), "value")
        if at[-1] == "type" and "records" in at:
            message = f"unsupported record type {value!r}: expected {expected}"
        else:
            message = f"unknown {noun} {value!r}: expected {expected}"
    return document.position(at), f"{_dotted(at)}: {message}"


def load_files(files: Mapping[str, bytes], *, root: str = "desired", revision: str = "") -> DesiredState:
    """The desired state in `files` ({path relative to the desired directory: bytes}); raises
    `errors.InvalidInput` listing every problem, each as `<root>/<path>:<line>:<column>: <message>`."""
    loader = _Loader(files, root)
    parsed = loader.parse()
    migration, batches, zones = loader.resolve(parsed)
    if loader.problems or migration is None:
        problems = [str(problem) for problem in sorted(loader.problems)]
        noun = "problem" if len(problems) == 1 else "problems"
        raise errors.InvalidInput(f"{loader.root}: {len(problems)} {noun} in the desired state", problems)
    digest = hashlib.sha256()
    for path in sorted(loader.read):
        digest.update(f"{path}\0{len(loader.read[path])}\0".encode())
        digest.update(loader.read[path])
    return DesiredState(
        migration=migration.model.spec,
        name=migration.model.metadata.name,
        batches=tuple(batches),
        zones=tuple(zones),
        revision=revision,
        digest=f"sha256:{digest.hexdigest()}",
        files=tuple(sorted(loader.read)),
    )


def load_directory(path: Path, *, revision: str = "") -> DesiredState:
    """The desired state under `path` on disk (YAML and CSV files; hidden entries are skipped)."""
    return load_files(read_directory(path), root=str(path).rstrip("/") or ".", revision=revision)


def read_directory(path: Path) -> dict[str, bytes]:
    """{relative path: bytes} of the YAML and CSV files under `path`; an oversize file is read only
    past its bound, so that the loader reports it without holding it in memory."""
    if not path.is_dir():
        raise errors.InvalidInput(f"{path}: no such directory")
    top = path.resolve()
    files: dict[str, bytes] = {}
    for file in sorted(path.rglob("*")):
        relative = file.relative_to(path).as_posix()
        if any(part.startswith(".") for part in relative.split("/")) or not file.is_file():
            continue
        if not relative.endswith((*YAML_SUFFIXES, ".csv")) or not file.resolve().is_relative_to(top):
            continue
        bound = (
            yamlsafe.MAX_YAML_BYTES if relative.endswith(YAML_SUFFIXES) else csvmembers.MAX_CSV_BYTES
        ) + 1
        try:
            with file.open("rb") as handle:
                files[relative] = handle.read(bound)
        except OSError as error:
            raise errors.InvalidInput(f"{file}: cannot read: {error.strerror}") from error
    return files
