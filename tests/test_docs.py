"""The documentation stands on its own: every relative link resolves inside the repository,
no page points outside it, and the README stays a first reader's page."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(
    [
        ROOT / "README.md",
        ROOT / "benchmarks" / "RESULTS.md",
        ROOT / "evaluation" / "paper" / "README.md",
        *(ROOT / "docs").glob("*.md"),
    ]
)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CODE_BLOCK = re.compile(r"```.*?```", re.S)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = CODE_BLOCK.sub("", page.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def _links(page: Path) -> list[str]:
    return LINK.findall(CODE_BLOCK.sub("", page.read_text(encoding="utf-8")))


def test_pages_exist():
    assert (ROOT / "docs").is_dir()
    for name in ("reproducing", "evaluation", "distributed", "demo", "optimizers"):
        assert (ROOT / "docs" / f"{name}.md").is_file(), name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    for target in _links(page):
        if re.match(r"[a-z]+:", target):  # http(s):, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.relative_to(ROOT)}: link {target!r} points to no file"
        assert ROOT in dest.parents or dest == ROOT, f"{page.relative_to(ROOT)}: {target!r} leaves the repo"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), (
                f"{page.relative_to(ROOT)}: no heading #{anchor} in {path or page.name}"
            )


def test_no_references_outside_the_repository():
    """Nothing in the docs or the code points at the workspace around the clone."""
    outside = re.compile(r"\.\./shared|shared/paper|SPEC (section|§)|ADATAMW_PAPER_DIR")
    code = [
        f
        for d in ("adatamw", "recipes", "evaluation", "tests", "benchmarks")
        for f in (ROOT / d).rglob("*")
        if f.suffix in (".py", ".md", ".cpp", ".yaml")
    ]
    files = [*PAGES, *code, ROOT / "Makefile", ROOT / "pyproject.toml"]
    hits = [
        f"{f.relative_to(ROOT)}:{i}"
        for f in files
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
        if outside.search(line) and f.name != "test_docs.py"
    ]
    assert not hits, f"references to files outside the repository: {hits}"


def test_readme_links_every_guide():
    links = {t.partition("#")[0] for t in _links(ROOT / "README.md")}
    for name in ("reproducing", "evaluation", "distributed", "demo", "optimizers"):
        assert f"docs/{name}.md" in links, name
    assert "benchmarks/RESULTS.md" in links


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 200, f"README.md has {lines} lines; move detail to docs/"
