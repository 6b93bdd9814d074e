"""Desired state from files: every YAML document validated, every problem collected with its
`file:line:column`, and a resolved `models.DesiredState` built when there are none.

The input is `{path relative to the desired directory: bytes}` so that the git source can feed a
revision as well as `load_directory` feeds the working tree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from controller import errors
from controller.desired import consistency, csvmembers, documents, kinds, models, yamlsafe
from controller.desired.problems import Problems


def load_files(
    files: Mapping[str, bytes], *, root: str = "desired", revision: str = ""
) -> models.DesiredState:
    """The desired state in `files` ({path relative to the desired directory: bytes}); raises
    `errors.InvalidInput` listing every problem, each as `<root>/<path>:<line>:<column>: <message>`."""
    problems = Problems(root.rstrip("/") or ".")
    found = documents.parse(files, problems)
    consistency.check_migrations(found, problems)
    for item in found.migrations:
        kinds.check_endpoint(item, problems)
    declared = [batch for item in found.batches if (batch := kinds.batch(item, files, problems))]
    consistency.check_batches(declared, problems)
    zones = [kinds.zone(item, problems) for item in found.zones]
    consistency.check_zones(zones, problems)
    if problems or not found.migrations:
        messages = problems.messages()
        noun = "problem" if len(messages) == 1 else "problems"
        raise errors.InvalidInput(f"{problems.root}: {len(messages)} {noun} in the desired state", messages)
    migration = found.migrations[0].model
    csv_paths = {batch.csv_path for batch in declared if batch.csv_path is not None}
    read = sorted({*found.files, *csv_paths})
    return models.DesiredState(
        migration=migration.spec,
        name=migration.metadata.name,
        batches=tuple(batch.batch for batch in declared),
        zones=tuple(zones),
        revision=revision,
        digest=_digest(files, read),
        files=tuple(read),
    )


def _digest(files: Mapping[str, bytes], read: list[str]) -> str:
    """sha256 over the name, size and bytes of every file read, so a plan names what it was made from."""
    digest = hashlib.sha256()
    for path in read:
        digest.update(f"{path}\0{len(files[path])}\0".encode())
        digest.update(files[path])
    return f"sha256:{digest.hexdigest()}"


def load_directory(path: Path, *, revision: str = "") -> models.DesiredState:
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
        is_yaml = relative.endswith(documents.YAML_SUFFIXES)
        if not (is_yaml or relative.endswith(".csv")) or not file.resolve().is_relative_to(top):
            continue
        bound = (yamlsafe.MAX_YAML_BYTES if is_yaml else csvmembers.MAX_CSV_BYTES) + 1
        try:
            with file.open("rb") as handle:
                files[relative] = handle.read(bound)
        except OSError as error:
            raise errors.InvalidInput(f"{file}: cannot read: {error.strerror}") from error
    return files
