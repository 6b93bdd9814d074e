"""The README and docs/ stand on their own: every link resolves to a file inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    targets = [t for t in LINK.findall(text) if not re.match(r"[a-z]+://|mailto:|#", t)]
    for target in targets:
        resolved = (page.parent / target.split("#", 1)[0]).resolve()
        assert resolved.is_relative_to(ROOT), f"{page.name} links outside the repository: {target}"
        assert resolved.exists(), f"{page.name} links to a missing file: {target}"
    assert not re.search(r"\.\./shared|DESIGN|EXCHANGE-FACTS", text), (
        f"{page.name} sends the reader to a document outside the repository"
    )


def test_the_contract_and_the_architecture_are_linked_from_the_readme() -> None:
    links = set(LINK.findall((ROOT / "README.md").read_text(encoding="utf-8")))
    assert {"docs/contract.md", "docs/architecture.md"} <= links
