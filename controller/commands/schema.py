"""`stagectl schema [--out DIR]`: write one JSON Schema per document kind, generated from the models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from controller.desired import models as desired

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_files() -> dict[str, str]:
    """{file name: JSON text} for every kind, e.g. batch.schema.json; the text ends with a newline."""
    files = {}
    for kind, model in desired.DOCUMENT_KINDS.items():
        schema = {"$schema": SCHEMA_DIALECT, **model.model_json_schema(by_alias=True, mode="validation")}
        schema["title"] = f"stagectl {kind}"
        files[f"{kind.lower()}.schema.json"] = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    return files


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("schema", help="write the JSON Schemas of the desired-state documents")
    parser.add_argument("--out", type=Path, default=Path("schemas"), metavar="DIR", help="default: schemas/")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in schema_files().items():
        (args.out / name).write_text(text, encoding="utf-8")
        print(args.out / name)
    return 0
