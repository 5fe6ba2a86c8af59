"""Regenerate the bundled offline text sample (``recipes/sample_data/``) from English Wikipedia.

The source is the Wikipedia dump excerpt that the gensim wheel (PyPI ``gensim``) ships as test
data, ``gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``:
206 pages of the ``enwiki`` ``pages-articles`` dump (100 redirects, 106 articles), the same
source WikiText-2/103 was built from. The article text is CC BY-SA (``sample_data/SOURCE.md``).

Each article becomes WikiText raw layout (what ``Salesforce/wikitext`` ``wikitext-*-raw-v1``
looks like, minus its tokenisation of punctuation): `` = Title = `` heading, `` = = Section = = ``
(one more ``=`` per level) sub-headings, one paragraph per line, each line starting with a space,
a blank (``' '``) line between blocks. Removed, as in WikiText: templates (``{{...}}``), tables
(``{| ... |}``), references (``<ref>``), comments, other HTML tags (their text kept where it is
prose), files / images / categories / interlanguage links, lists, and the sections that hold
only such things (References, External links, ...). Links keep their shown text, bold and
italic quotes go, HTML entities are decoded.

Articles are put in a fixed pseudo-random order (sha256 of the title; the dump is alphabetical),
then every ``--valid_every``-th one goes to validation, the rest to train (a split by article, as
WikiText's), so the two files share no article. The output is a pure
function of the dump excerpt::

    pip install gensim            # or: pip install -e ".[offline]"
    python -m recipes.wiki_sample # rewrites recipes/sample_data/wiki.{train,valid}.raw

reproduces the committed files byte for byte (``SOURCE.md`` lists their SHA-256).
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import html
import importlib.util
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

DUMP_NAME = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
DEFAULT_OUT = Path(__file__).resolve().parent / "sample_data"
# Sections WikiText-style text does without: lists of sources and links, no prose.
DROP_SECTIONS = {
    "references",
    "external links",
    "see also",
    "further reading",
    "notes",
    "bibliography",
    "sources",
    "footnotes",
    "citations",
    "notes and references",
    "references and notes",
    "works cited",
    "selected bibliography",
    "selected works",
    "works",
    "publications",
    "discography",
    "filmography",
    "gallery",
    "primary sources",
    "secondary sources",
}
# Paragraphs shorter than this are leftovers (captions, stray cells), not prose.
MIN_PARAGRAPH_WORDS = 5

_COMMENT = re.compile(r"<!--.*?-->", re.S)
_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.S | re.I)
# Tags whose content is not prose: dropped with it.
_DROP_TAGS = re.compile(
    r"<(math|gallery|timeline|score|syntaxhighlight|source|pre|imagemap|chem|hiero|code|table)\b[^>]*>.*?</\1\s*>",
    re.S | re.I,
)
_TAG = re.compile(r"</?[A-Za-z][^<>]*?/?>")
_HEADING = re.compile(r"^(={2,6})\s*(.*?)\s*\1\s*$")
_EXTERNAL = re.compile(r"\[(?:https?:)?//[^\s\]]+(?:\s+([^\]]*))?\]")
_BARE_URL = re.compile(r"https?://\S+")
_NON_ARTICLE_LINK = re.compile(
    r"^\s*:?\s*(file|image|media|category|wikt|wiktionary|[a-z]{2,3}(-[a-z]+)?)\s*:", re.I
)


def find_dump() -> Path:
    """The dump excerpt inside the installed gensim package (found without importing gensim)."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            'gensim is not installed: `pip install gensim` (or `pip install -e ".[offline]"`), '
            "or pass --dump PATH to the .xml.bz2 file"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "test" / "test_data" / DUMP_NAME
    if not path.is_file():
        raise SystemExit(f"{path} not found: this gensim wheel does not ship its test data; pass --dump PATH")
    return path


def pages(dump: Path) -> Iterator[tuple[str, str]]:
    """(title, wiki markup) of every main-namespace page of a MediaWiki XML dump, redirects left out."""
    with bz2.open(dump) as handle:
        for _, elem in ET.iterparse(handle):
            if not elem.tag.endswith("}page"):
                continue
            ns = elem.tag[: -len("page")]
            title = elem.findtext(f"{ns}title") or ""
            text = elem.findtext(f"{ns}revision/{ns}text") or ""
            is_redirect = elem.find(f"{ns}redirect") is not None or text.lstrip().lower().startswith(
                "#redirect"
            )
            if elem.findtext(f"{ns}ns", "0") == "0" and not is_redirect and text.strip():
                yield title, text
            elem.clear()


def _strip_nested(text: str, open_: str, close: str) -> str:
    """Remove every (possibly nested) ``open_ ... close`` span, e.g. templates ``{{ }}``."""
    out, depth, i = [], 0, 0
    while i < len(text):
        if text.startswith(open_, i):
            depth += 1
            i += len(open_)
        elif depth and text.startswith(close, i):
            depth -= 1
            i += len(close)
        else:
            if not depth:
                out.append(text[i])
            i += 1
    return "".join(out)


def _strip_tables(text: str) -> str:
    """Remove ``{| ... |}`` tables (nested ones too), which start and end on their own lines."""
    out, depth = [], 0
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("{|"):
            depth += 1
        elif depth and stripped.startswith("|}"):
            depth -= 1
        elif not depth:
            out.append(line)
    return "\n".join(out)


def _links(text: str) -> str:
    """``[[target|shown]]`` -> shown, ``[[target]]`` -> target; files, categories and
    interlanguage links (with their nested captions) removed."""
    out, i = [], 0
    while True:
        start = text.find("[[", i)
        if start < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:start])
        depth, j = 0, start
        while j < len(text):  # the matching ]] (captions of files nest links)
            if text.startswith("[[", j):
                depth, j = depth + 1, j + 2
            elif text.startswith("]]", j):
                depth, j = depth - 1, j + 2
                if not depth:
                    break
            else:
                j += 1
        inner = text[start + 2 : j - 2]
        if not _NON_ARTICLE_LINK.match(inner):
            inner = _links(inner)  # a nested link inside shown text
            shown = (
                inner.split("|")[-1]
                if "|" in inner
                else inner.split("#")[0]
                if not inner.startswith("#")
                else inner[1:]
            )
            out.append(shown)
        i = j


def clean_inline(text: str) -> str:
    """Markup of one paragraph or heading removed; text kept."""
    text = _links(text)
    text = _EXTERNAL.sub(lambda m: m.group(1) or "", text)
    text = _BARE_URL.sub("", text)
    text = _TAG.sub("", text)
    text = re.sub(r"'{2,}", "", text)
    text = html.unescape(text).replace("\xa0", " ")
    text = re.sub(r"\(\s*[,;]?\s*\)", "", text)  # "()" left where a template (IPA, dates) was
    text = re.sub(r"\s+([,.;:])", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def to_blocks(markup: str) -> list[tuple[int, str]]:
    """(level, heading) and (0, paragraph) blocks of one article's markup, in order."""
    text = _COMMENT.sub("", markup)
    text = _REF.sub("", text)
    text = _DROP_TAGS.sub("", text)
    text = _strip_tables(text)
    text = _strip_nested(text, "{{", "}}")
    text = _strip_tables(text)  # tables built inside templates
    blocks: list[tuple[int, str]] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            paragraph = clean_inline(" ".join(para))
            para.clear()
            if len(paragraph.split()) >= MIN_PARAGRAPH_WORDS and not re.search(
                r"[\[\]{}|<>]|={2}", paragraph
            ):
                blocks.append((0, paragraph))

    for line in text.split("\n"):
        stripped = line.strip()
        heading = _HEADING.match(stripped)
        if heading:
            flush()
            blocks.append((len(heading.group(1)), clean_inline(heading.group(2))))
        elif not stripped or stripped[0] in "*#:;|!" or stripped.startswith(("__", "----")):
            flush()  # blank line, list, indentation, table remnant, magic word, rule
        else:
            para.append(stripped)
    flush()
    return blocks


def _prune(blocks: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Drop the non-prose sections (with their subsections) and headings left without text."""
    kept: list[tuple[int, str]] = []
    drop_level = None
    for level, text in blocks:
        if level and drop_level is not None and level <= drop_level:
            drop_level = None
        if drop_level is not None:
            continue
        if level and text.lower() in DROP_SECTIONS:
            drop_level = level
            continue
        kept.append((level, text))
    # a heading survives only if some paragraph follows before a heading of its level or higher
    out: list[tuple[int, str]] = []
    for i, (level, text) in enumerate(kept):
        if level:
            rest = kept[i + 1 :]
            end = next((k for k, (lv, _) in enumerate(rest) if lv and lv <= level), len(rest))
            if not any(lv == 0 for lv, _ in rest[:end]):
                continue
        out.append((level, text))
    return out


def article(title: str, markup: str) -> str:
    """One article in WikiText raw layout: a blank (' ') line before and after every block."""
    lines = [f" = {title} = "]
    for level, text in _prune(to_blocks(markup)):
        marks = " ".join(["="] * level)  # "==" -> "= =", as WikiText writes section levels
        lines.append(f" {marks} {text} {marks} " if level else f" {text} ")
    return "".join(f" \n{line}\n" for line in lines)


def split(dump: Path, valid_every: int) -> tuple[str, str, list[str], list[str]]:
    """Train text, validation text and their article titles.

    Every ``valid_every``-th article goes to validation, the others to train.
    """
    train, valid, train_titles, valid_titles = [], [], [], []
    texts = [(title, article(title, markup)) for title, markup in pages(dump)]
    texts = [(title, text) for title, text in texts if text.count("\n") > 4]  # more than a title
    # The dump is alphabetical; a fixed pseudo-random order (sha256 of the title) puts unrelated
    # articles side by side, so the first blocks a short run trains on are not one topic.
    texts.sort(key=lambda item: hashlib.sha256(item[0].encode("utf-8")).hexdigest())
    for i, (title, text) in enumerate(texts):
        if i % valid_every == valid_every - 1:
            valid.append(text)
            valid_titles.append(title)
        else:
            train.append(text)
            train_titles.append(title)
    return "".join(train), "".join(valid), train_titles, valid_titles


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.wiki_sample",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dump", type=Path, help="the .xml.bz2 dump (default: the one inside the installed gensim)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output folder (default: recipes/sample_data)"
    )
    parser.add_argument("--valid_every", type=int, default=10, help="every N-th article goes to validation")
    args = parser.parse_args(argv)
    if args.valid_every < 2:
        raise SystemExit(f"--valid_every must be at least 2, got {args.valid_every}")
    dump = args.dump or find_dump()
    if not dump.is_file():
        raise SystemExit(f"--dump {dump}: no such file")
    train, valid, train_titles, valid_titles = split(dump, args.valid_every)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text, titles in (
        ("wiki.train.raw", train, train_titles),
        ("wiki.valid.raw", valid, valid_titles),
    ):
        path = args.out / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        print(f"{path}: {len(titles)} articles, {len(text.encode('utf-8'))} bytes, sha256 {digest}")


if __name__ == "__main__":
    main()
