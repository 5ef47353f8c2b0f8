"""Every relative link in the README and under docs/ points at a file or folder that exists in the repository.

The results pages link into `benchmarks/results/` and `docs/images/` from two depths (the README at the root,
the full records under `docs/results/`); a page moved without re-pointing its links fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def relative_links(page: Path) -> list[str]:
    """The link targets of `page` that are neither web addresses nor in-page anchors."""
    return [t for t in _LINK.findall(page.read_text(encoding="utf-8"))
            if not t.startswith(("http://", "https://", "mailto:"))]


def test_pages_found() -> None:
    assert (ROOT / "README.md") in PAGES
    assert any(p.parent.name == "results" for p in PAGES), "docs/results/*.md not found"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    links = relative_links(page)
    missing = [t for t in links if not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(ROOT)}: links to missing paths {missing}"


def test_link_pattern_sees_markdown_links(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("[a](x/y.md) [b](https://e.org) [c](#top) [d](z.png#frag) ![i](img.png)\n", encoding="utf-8")
    assert relative_links(page) == ["x/y.md", "z.png", "img.png"]
