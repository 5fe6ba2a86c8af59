"""Regenerate the bundled offline text sample in ``recipes/sample_data/``.

The sample is the Jargon File 4.4.7 (public domain), as shipped by the Debian
package ``jargon-text`` (``/usr/share/doc/jargon-text/jargon.txt.gz``), rewritten
into the WikiText raw format that ``Salesforce/wikitext`` uses: `` = Title = ``
headings, `` = = Section = = `` sub-headings, one paragraph per line, every line
starting with a space, blank lines between blocks.

Articles (chapters, appendices, lexicon entries) go, in document order, every
``--valid_every``-th one to the validation file and the rest to the train file,
until each file reaches its byte budget. The output is a pure function of the
input file, so::

    apt-get install -y jargon-text
    python recipes/make_sample.py            # rewrites recipes/sample_data/wiki.*.raw

reproduces the committed files byte for byte (``SOURCE.md`` lists their SHA-256).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import re
from pathlib import Path

DEFAULT_SOURCE = Path("/usr/share/doc/jargon-text/jargon.txt.gz")
DEFAULT_OUT = Path(__file__).resolve().parent / "sample_data"
TABLE_CHARS = set("│├└┌┐┘┤┬┴┼─═")
ENTRY_RE = re.compile(r"^   :(?P<term>[^:]+):")
CROSSREF_RE = re.compile(r"\{([^{}]*)\}")


def _read_lines(source: Path) -> list[str]:
    if not source.exists():
        raise SystemExit(
            f"{source} not found: install the Debian package with "
            "`apt-get install -y jargon-text`, or pass --source PATH to jargon.txt[.gz]."
        )
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rt", encoding="utf-8") as handle:
        # The text uses no-break spaces in headings ("Chapter\xa01."); plain spaces are easier to match.
        return handle.read().replace("\xa0", " ").splitlines()


def _index(lines: list[str], predicate, start: int = 0) -> int:
    for i in range(start, len(lines)):
        if predicate(lines[i]):
            return i
    raise SystemExit("unexpected layout of the Jargon File text: a section marker was not found")


def _blocks(lines: list[str]):
    """Yield ('heading', level, text) and ('para', text) items from the text."""
    para: list[str] = []

    def flush():
        if para:
            text = " ".join(part.strip() for part in para)
            para.clear()
            return ("para", text)
        return None

    for line in lines:
        if TABLE_CHARS & set(line):
            continue  # tables (some flush left) do not fit the one-paragraph-per-line format
        entry = ENTRY_RE.match(line)
        if entry or (line and not line[0].isspace()):
            item = flush()
            if item:
                yield item
            if entry:
                yield ("heading", 1, entry.group("term").strip())
            elif re.match(r"^(Chapter|Appendix) [0-9A-Z]+\. ", line) or line.startswith("Bibliography"):
                yield ("heading", 1, re.sub(r"^(Chapter|Appendix) [0-9A-Z]+\. ", "", line).strip())
            else:
                yield ("heading", 2, line.strip())
        elif not line.strip():
            item = flush()
            if item:
                yield item
        else:
            para.append(line)
    item = flush()
    if item:
        yield item


def _keep_paragraph(text: str) -> bool:
    if TABLE_CHARS & set(text) or text == "Table of Contents":
        return False
    words = text.split()
    # Table-of-contents lines: short, one line, no sentence punctuation.
    return not (len(words) <= 8 and not text.rstrip().endswith((".", "?", "!", ":", ")", "\"", "”")))


def articles(lines: list[str]) -> list[list[str]]:
    """Split the Jargon File into WikiText-formatted articles (lists of lines)."""
    part1 = _index(lines, lambda s: s.startswith("Chapter 1."))
    part2 = _index(lines, lambda s: "Part II. The Jargon Lexicon" in s, part1)
    lexicon = _index(lines, lambda s: ENTRY_RE.match(s) is not None, part2)
    part3 = _index(lines, lambda s: "Part III. Appendices" in s, lexicon)
    appendix = _index(lines, lambda s: s.startswith("Appendix A."), part3)
    body = lines[part1:part2] + lines[lexicon:part3] + lines[appendix:]

    result: list[list[str]] = []
    current: list[str] | None = None
    for item in _blocks(body):
        if item[0] == "heading":
            _, level, title = item
            if level == 1:
                current = [f" = {title} = "]
                result.append(current)
            elif current is not None:
                current.append(f" {'= ' * 2}{title} {'= ' * 2}".replace("  ", " "))
        elif current is not None and _keep_paragraph(item[1]):
            current.append(" " + CROSSREF_RE.sub(r"\1", item[1]) + " ")
    # Drop headings-only and one-line stub entries ("See foo.").
    return [a for a in result if sum(len(line.split()) for line in a[1:]) >= 20]


def render(article: list[str]) -> str:
    """WikiText raw layout: a blank (' ') line before and after every block."""
    return "".join(f" \n{line}\n" for line in article)


def split(arts: list[list[str]], valid_every: int, train_bytes: int, valid_bytes: int) -> tuple[str, str]:
    train, valid = [], []
    n_train = n_valid = 0
    for i, art in enumerate(arts):
        text = render(art)
        size = len(text.encode("utf-8"))
        if i % valid_every == valid_every - 1:
            if n_valid + size <= valid_bytes:
                valid.append(text)
                n_valid += size
        elif n_train + size <= train_bytes:
            train.append(text)
            n_train += size
    return "".join(train), "".join(valid)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="jargon.txt or jargon.txt.gz")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--valid_every", type=int, default=11, help="every N-th article goes to validation")
    parser.add_argument("--train_bytes", type=int, default=1_000_000)
    parser.add_argument("--valid_bytes", type=int, default=100_000)
    args = parser.parse_args(argv)

    train, valid = split(articles(_read_lines(args.source)), args.valid_every, args.train_bytes, args.valid_bytes)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in (("wiki.train.raw", train), ("wiki.valid.raw", valid)):
        path = args.out / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        print(f"{path}: {len(text.encode('utf-8'))} bytes, sha256 {digest}")


if __name__ == "__main__":
    main()
