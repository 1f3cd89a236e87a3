"""Document loaders: .txt, .md, .html, .pdf and .jsonl into `Document`s with sections.

Ids are checked for repeats across all files before anything is loaded
(`check_unique_sources`); `corpus.ingest` loads and ingests folders in batches.

Headings (Markdown `#`, HTML `<h1>`-`<h6>`, short title lines in PDFs) become section names
carried beside the text, never glued into it. HTML keeps its main content only (no title, nav,
header, footer, aside). PDF lines are joined into paragraphs and lines repeated at the top or
bottom of most pages (running titles, footers, page numbers) are dropped. Text encodings are
detected with charset-normalizer when a file is not UTF-8.
"""

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path, PurePosixPath

import charset_normalizer
import lxml.html
from pypdf import PdfReader

from corpus import Document, Section
from graph.errors import DuplicateDocuments, InvalidInput

SUPPORTED_SUFFIXES = (".txt", ".md", ".html", ".htm", ".pdf", ".jsonl")
# Joins nested heading names in a section path ("Operations > Readiness").
SECTION_SEPARATOR = " > "

_WESTERN = {"cp1252", "latin_1", "iso8859_15"}
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_DROPPED = {
    "script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form",
    "button", "svg", "head", "title", "iframe", "select",
}  # fmt: skip
_DROPPED_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search"}
# Pages built from plain <div>s name their chrome in ids and classes.
_CHROME = re.compile(
    r"^(nav|navbar|navigation|menu|site-?header|site-?footer|footer|sidebar|breadcrumbs?|"
    r"cookie.*|skip-?link|social|share)$",
    re.IGNORECASE,
)
_HTML_PARSER = lxml.html.HTMLParser(encoding="utf-8")
_BLOCKS = {
    "p", "div", "section", "article", "main", "li", "ul", "ol", "pre", "blockquote", "table",
    "tr", "td", "th", "dl", "dt", "dd", "figure", "figcaption", "br", "hr", "body",
}  # fmt: skip


def relative_name(name: str) -> str:
    """`name` as a relative POSIX path, without `.`, `..` or a leading `/` (uploads may send
    names like `../a\\notes.md`)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return "/".join(part for part in parts if part not in ("", ".", "..", "/"))


def doc_id_for(name: str) -> str:
    """A stable id from a relative path: `a/notes.md` and `b/notes.md` stay apart, and
    re-ingesting the same path replaces its document."""
    parts = [
        re.sub(r"[^A-Za-z0-9._-]+", "-", part).strip("-") for part in relative_name(name).split("/")
    ]
    return "/".join(p for p in parts if p) or "document"


@dataclass(frozen=True)
class SourceFile:
    """A file to ingest and the relative name its id comes from."""

    path: Path
    name: str


def iter_paths(paths: list[Path], root: Path | None = None) -> Iterator[SourceFile]:
    """Supported files under the given paths (directories walked, sorted), each named by its
    path relative to `root` (default: the current directory), or, outside it, relative to the
    argument's parent."""
    # Absolute, not resolved: a file symlinked into the folder is named by its place there.
    root = Path(os.path.abspath(root or Path.cwd()))
    for path in paths:
        if not path.exists():
            raise InvalidInput(f"{path}: no such file or directory")
        files = (
            sorted(p for p in path.rglob("*") if p.is_file() and _supported(p.name))
            if path.is_dir()
            else [path]
        )
        base = Path(os.path.abspath(path)).parent
        for file in files:
            absolute = Path(os.path.abspath(file))
            relative = (
                absolute.relative_to(root)
                if absolute.is_relative_to(root)
                else absolute.relative_to(base)
            )
            yield SourceFile(file, relative.as_posix())


def _supported(name: str) -> bool:
    return Path(name).suffix.lower() in SUPPORTED_SUFFIXES


def load_file(path: Path, name: str | None = None, doc_id: str | None = None) -> Iterator[Document]:
    """Yields the documents in one file. `name` (default: the file name) is the relative name
    its id and source come from; `doc_id` overrides the id (not for .jsonl, whose rows carry
    theirs)."""
    name = name or path.name
    suffix = Path(name).suffix.lower()
    if suffix == ".jsonl":
        yield from _load_jsonl(path, name)
        return
    if not _supported(name):
        raise InvalidInput(
            f"{name}: unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    try:
        data = path.read_bytes()
        if suffix == ".pdf":
            title, sections = load_pdf(path)
        elif suffix in (".html", ".htm"):
            title, sections = parse_html(decode(data))
        elif suffix == ".md":
            title, sections = parse_markdown(decode(data))
        else:
            title, sections = "", [Section("", decode(data).strip())]
    except InvalidInput:
        raise
    except Exception as exc:
        raise InvalidInput(f"{name}: cannot be read as {suffix}: {exc}") from exc
    sections = [s for s in sections if s.text.strip()]
    if not sections:
        raise InvalidInput(f"{name}: no text found")
    yield Document(
        id=doc_id or doc_id_for(name),
        text="\n\n".join(s.text for s in sections),
        title=title,
        source=name,
        sections=tuple(sections),
    )


def decode(data: bytes) -> str:
    """Text from bytes: UTF-8 when valid, else the encoding charset-normalizer finds."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        matches = list(charset_normalizer.from_bytes(data))
        if not matches:
            raise InvalidInput("not a text file (no text encoding fits)") from None
        # Short texts often fit several code pages equally well: prefer the most common one.
        tied = [
            m for m in matches if (m.chaos, m.coherence) == (matches[0].chaos, matches[0].coherence)
        ]
        western = [m for m in tied if _WESTERN & set(m.could_be_from_charset)]
        return str((western or matches)[0])


def _normalize(text: str) -> str:
    return re.sub(r"[ \t\r\f\v]+", " ", text).strip()


class _Sections:
    """Collects paragraphs under the current heading path."""

    def __init__(self) -> None:
        self.path: list[tuple[int, str]] = []
        self.out: list[Section] = []
        self.paragraphs: list[str] = []

    def heading(self, level: int, text: str) -> None:
        self.flush()
        self.path = [(lv, t) for lv, t in self.path if lv < level] + [(level, text)]

    def paragraph(self, text: str) -> None:
        if text := _normalize(text):
            self.paragraphs.append(text)

    def flush(self) -> None:
        if self.paragraphs:
            name = SECTION_SEPARATOR.join(t for _, t in self.path)
            self.out.append(Section(name, "\n\n".join(self.paragraphs)))
            self.paragraphs = []


# A table's delimiter row under its header row: `| --- | :-: |` (pipes at the ends optional).
_TABLE_DELIMITER = re.compile(r"\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?")


def table_row(header: Sequence[str], cells: Sequence[str]) -> str:
    """A table row as a sentence of its own, each cell named by its column: "Item: Baguette;
    Temperature: 250 °C." (the row read as a whole line of pipes answers nothing)."""
    named = [f"{h}: {c}" if h else c for h, c in zip_longest(header, cells, fillvalue="") if c]
    return "; ".join(named) + "." if named else ""


def _markdown_cells(row: str) -> list[str]:
    return [_inline_markdown(cell.strip()) for cell in row.strip().strip("|").split("|")]


def parse_markdown(text: str) -> tuple[str, list[Section]]:
    """The first level-1 heading as title, and the sections under each heading path. ATX and
    setext headings count, except inside fenced code (kept as its own paragraph); list items
    are paragraphs; each table row is a paragraph (`table_row`); links and emphasis keep their
    text only; YAML front matter is skipped."""
    sections = _Sections()
    title = ""
    lines: list[str] = []
    header: list[str] | None = None  # inside a table: its column names
    body = text.splitlines()
    if body and body[0].strip() == "---" and "---" in (rest := [b.strip() for b in body[1:]]):
        body = body[rest.index("---") + 2 :]

    def end_paragraph(code: bool = False) -> None:
        sections.paragraph("\n".join(lines) if code else _inline_markdown(" ".join(lines)))
        lines.clear()

    def heading(level: int, name: str) -> None:
        nonlocal title
        name = _inline_markdown(name)
        title = title or (name if level == 1 else "")
        sections.heading(level, name)

    fence = ""
    for line in body:
        stripped = line.strip()
        marker = re.match(r"(```|~~~)", stripped)
        if header is not None and not fence and "|" in stripped:
            sections.paragraph(table_row(header, _markdown_cells(stripped)))
            continue
        header = None
        if fence:
            if marker and stripped.startswith(fence):
                end_paragraph(code=True)
                fence = ""
            else:
                lines.append(line)
        elif marker:
            end_paragraph()
            fence = marker.group(1)
        elif atx := re.match(r"(#{1,6})\s+(.*?)(\s+#+)?\s*$", stripped):
            end_paragraph()
            heading(len(atx.group(1)), atx.group(2))
        elif (
            lines and "|" in lines[-1] and "|" in stripped and _TABLE_DELIMITER.fullmatch(stripped)
        ):
            header = _markdown_cells(lines.pop())
            end_paragraph()
        elif re.fullmatch(r"=+|-+", stripped) and len(lines) == 1:
            name = lines.pop()
            heading(1 if stripped[0] == "=" else 2, name)
        elif not stripped or re.fullmatch(r"(\*\s*){3,}|(-\s*){3,}|(_\s*){3,}", stripped):
            end_paragraph()
        elif item := re.match(r"([-*+]|\d+[.)])\s+(.*)", stripped):
            end_paragraph()
            lines.append(item.group(2))
        else:
            lines.append(stripped)
    end_paragraph(code=bool(fence))
    sections.flush()
    return title, sections.out


def _inline_markdown(text: str) -> str:
    """Text without Markdown's inline markup: images dropped, links and emphasis unwrapped."""
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text)
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"(\*\*|__)(.+?)\1", r"\2", text)
    text = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"\1", text)
    return re.sub(r"`([^`]+)`", r"\1", text)


def parse_html(html: str) -> tuple[str, list[Section]]:
    """The page title, and the sections of its main content: `<main>`, else `<article>`, else
    the body, without navigation, header, footer, sidebars, scripts and forms."""
    if not html.strip():
        return "", []
    # As bytes with the encoding named: lxml refuses text that still declares one (XHTML).
    page = lxml.html.document_fromstring(html.encode(), parser=_HTML_PARSER)
    title_node = page.find(".//title")
    title = _normalize(_text(title_node)) if title_node is not None else ""
    root = page.find(".//main")
    root = root if root is not None else page.find(".//*[@role='main']")
    root = root if root is not None else page.find(".//article")
    root = root if root is not None else page.find("body")
    root = root if root is not None else page
    sections = _Sections()
    buffer: list[str] = []

    def end_block() -> None:
        sections.paragraph("".join(buffer))
        buffer.clear()

    def walk(node: lxml.html.HtmlElement) -> None:
        if node.text:
            buffer.append(node.text)
        for child in node:
            if isinstance(child.tag, str) and _kept(child):  # not comments, instructions
                if child.tag == "table":
                    end_block()
                    for row in _html_table_rows(child):
                        sections.paragraph(row)
                elif child.tag in _HEADINGS:
                    end_block()
                    sections.heading(_HEADINGS[child.tag], _normalize(_text(child)))
                elif child.tag in _BLOCKS:
                    end_block()
                    walk(child)
                    end_block()
                else:
                    walk(child)
            if child.tail:  # the text after an element belongs to its parent, kept or not
                buffer.append(child.tail)

    walk(root)
    end_block()
    sections.flush()
    if not title:
        first = page.find(".//h1")
        title = _normalize(_text(first)) if first is not None else ""
    return title, sections.out


def _html_table_rows(table: lxml.html.HtmlElement) -> list[str]:
    """Each row of a table as a sentence (`table_row`), its cells named by the header row's
    when the first row is all `<th>`."""
    rows = [
        [c for c in tr if isinstance(c.tag, str) and c.tag in ("td", "th")]
        for tr in table.iter("tr")
    ]
    rows = [r for r in rows if r]
    if not rows:
        return []
    header: list[str] = []
    if all(c.tag == "th" for c in rows[0]):
        header = [_normalize(_text(c)) for c in rows.pop(0)]
    texts = (table_row(header, [_normalize(_text(c)) for c in row]) for row in rows)
    return [t for t in texts if t]


def _kept(node: lxml.html.HtmlElement) -> bool:
    if node.tag in _DROPPED or node.get("role") in _DROPPED_ROLES:
        return False
    if node.get("hidden") is not None or node.get("aria-hidden") == "true":
        return False
    names = [node.get("id") or "", *(node.get("class") or "").split()]
    return not any(_CHROME.match(name) for name in names if name)


def _text(node: lxml.html.HtmlElement) -> str:
    """An element's text, its parts joined by spaces (comments left out), as for a heading."""
    return " ".join(_strings(node))


def _strings(node: lxml.html.HtmlElement) -> Iterator[str]:
    if node.text and isinstance(node.tag, str):
        yield node.text
    for child in node:
        if isinstance(child.tag, str):
            yield from _strings(child)
        if child.tail:
            yield child.tail


def load_pdf(path: Path) -> tuple[str, list[Section]]:
    """The PDF's title (metadata, else its first heading line), and its sections: wrapped lines
    joined, hyphenation undone, running headers and footers dropped."""
    reader = PdfReader(path)
    pages = [
        [_normalize(line) for line in (page.extract_text() or "").splitlines()]
        for page in reader.pages
    ]
    pages = [[line for line in page if line] for page in pages]
    repeated = _repeated_lines(pages)
    lines = [
        line
        for number, page in enumerate(pages, start=1)
        for line in page
        if not repeated & _line_keys(line, number)
    ]
    widths = sorted(len(line) for line in lines) or [0]
    typical = widths[len(widths) * 3 // 4]
    sections = _Sections()
    paragraph: list[str] = []
    title = str((reader.metadata.title if reader.metadata else "") or "").strip()

    def end_paragraph() -> None:
        sections.paragraph(_join_wrapped(paragraph))
        paragraph.clear()

    for line in lines:
        after_sentence = not paragraph or re.search(r"[.!?:]$", paragraph[-1])
        short = len(line) < 0.6 * typical
        if short and after_sentence and not re.search(r"[.!?:;,]$", line) and line[:1].isupper():
            end_paragraph()
            title = title or line
            sections.heading(1, line)  # a PDF shows no heading levels: one flat list
            continue
        paragraph.append(line)
        if re.search(r"[.!?:]$", line) and len(line) < 0.85 * typical:
            end_paragraph()
    end_paragraph()
    sections.flush()
    return title, sections.out


def _line_keys(line: str, page_number: int) -> set[str]:
    """What a line is compared by: its text, and when it shows its page's number ("Page 3 of
    9"), also its text with numbers masked (so "Chapter 3" on page 7 stays apart)."""
    keys = {line.lower()}
    if str(page_number) in re.findall(r"\d+", line):
        keys.add(re.sub(r"\d+", "#", line.lower()))
    return keys


def _repeated_lines(pages: list[list[str]]) -> set[str]:
    """Keys of lines among the first or last two of at least half the pages (two at least)."""
    if len(pages) < 2:
        return set()
    counts: Counter[str] = Counter()
    for number, page in enumerate(pages, start=1):
        counts.update(set().union(*(_line_keys(line, number) for line in page[:2] + page[-2:])))
    return {key for key, n in counts.items() if n >= max(2, (len(pages) + 1) // 2)}


def _join_wrapped(lines: list[str]) -> str:
    text = ""
    for line in lines:
        if text.endswith("-") and line[:1].islower():
            text = text[:-1] + line
        else:
            text = f"{text} {line}" if text else line
    return text


def _load_jsonl(path: Path, name: str) -> Iterator[Document]:
    seen: dict[str, int] = {}
    repeated: list[str] = []
    docs: list[Document] = []
    for number, line in enumerate(decode(path.read_bytes()).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            doc_id = str(row.get("_id", row.get("id", "")))
            text = str(row["text"])
        except (ValueError, KeyError, AttributeError) as exc:
            raise InvalidInput(f"{name}:{number}: expected an object with id and text") from exc
        if not doc_id or not text.strip():
            raise InvalidInput(f"{name}:{number}: empty id or text")
        if doc_id in seen:
            repeated.append(f"{doc_id} (lines {seen[doc_id]} and {number})")
        seen.setdefault(doc_id, number)
        docs.append(
            Document(
                id=doc_id,
                text=text,
                title=str(row.get("title") or ""),
                source=str(row.get("source") or name),
            )
        )
    if repeated:
        raise DuplicateDocuments(f"{name}: repeated document ids: {', '.join(repeated[:20])}")
    yield from docs


def load_sources(sources: Iterable[SourceFile]) -> list[Document]:
    """Every document in `sources`; raises `DuplicateDocuments`, naming the files, when two
    get the same id, and `InvalidInput` for the first file that cannot be loaded."""
    sources = list(sources)
    check_unique_sources(sources)
    return [doc for src in sources for doc in load_file(src.path, src.name)]


def load_paths(paths: list[Path], root: Path | None = None) -> list[Document]:
    """Every document under `paths`, ids relative to `root` (see `iter_paths`)."""
    return load_sources(iter_paths(paths, root))


def check_unique_sources(
    sources: Sequence[SourceFile], label: Callable[[SourceFile], str] = lambda s: str(s.path)
) -> None:
    """Raises `DuplicateDocuments`, naming the files by `label`, when two files (or JSONL rows)
    would get one id; from names and JSONL ids, before a batch is written. Unreadable JSONL
    files are left to loading, which skips them."""
    origins: dict[str, list[str]] = {}
    for src in sources:
        if Path(src.name).suffix.lower() == ".jsonl":
            try:
                ids = [doc.id for doc in _load_jsonl(src.path, src.name)]
            except DuplicateDocuments:
                raise
            except (InvalidInput, OSError):
                continue
        else:
            ids = [doc_id_for(src.name)]
        for doc_id in ids:
            origins.setdefault(doc_id, []).append(label(src))
    repeated = [f"{d} (from {', '.join(paths)})" for d, paths in origins.items() if len(paths) > 1]
    if repeated:
        raise DuplicateDocuments(
            f"the same document id occurs more than once: {'; '.join(repeated[:20])}"
        )
