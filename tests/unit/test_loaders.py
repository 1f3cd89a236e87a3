"""Structure-aware loaders on real files: Markdown and HTML headings become sections (never text),
HTML keeps its main content, PDFs lose running headers/footers and get their lines joined,
non-UTF-8 text is decoded, and ids come from relative paths."""

from pathlib import Path

import pytest
from fpdf import FPDF

from corpus.loaders import iter_paths, load_file, load_paths
from graph.errors import DuplicateDocuments
from graph.state import Passage
from integrations.text import split_sentences
from nodes.generate import build_prompt

HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Harbor guide | Example Port Authority</title>
<style>body { font-family: serif }</style><script>var tracking = "analytics-id";</script></head>
<body>
<header><a href="/">Example Port Authority</a> <a href="/login">Sign in</a></header>
<nav><ul><li><a href="/">Home</a></li><li><a href="/ships">Ships</a></li>
<li><a href="/contact">Contact us</a></li></ul></nav>
<main>
  <article>
    <h1>Harbor</h1>
    <p>The Harbor lighthouse was built in 1874 and still guides ships at night.</p>
    <h2>Opening hours</h2>
    <p>Visitors may climb the tower <em>from April to October</em>, every day but Monday.</p>
    <ul><li>Tickets cost four euros.</li><li>Children under six enter free.</li></ul>
    <!-- an editor's comment that must not leak -->
  </article>
  <aside>Related: <a href="/fog">Fog horns of the coast</a></aside>
</main>
<footer><p>Copyright 2026 Example Port Authority. All rights reserved.</p>
<a href="/privacy">Privacy policy</a></footer>
</body></html>
"""

MARKDOWN = """---
layout: page
---
# Harbor

The Harbor lighthouse was built in **1874** and still guides ships at night.

## Opening hours

Visitors may climb the tower from April to October,
every day but Monday.

```sh
# not a heading: a shell comment
keel ingest harbor.md
```

### Tickets

- Tickets cost *four* euros.
- See [the price list](https://example.org/prices) for groups.

History
-------

The lamp was electrified in 1921.
"""


def test_markdown_headings_are_sections_not_text(tmp_path: Path):
    path = tmp_path / "harbor.md"
    path.write_text(MARKDOWN)
    (doc,) = load_file(path)
    assert doc.title == "Harbor"
    sections = {s.heading: s.text for s in doc.sections}
    assert list(sections) == [
        "Harbor",
        "Harbor > Opening hours",
        "Harbor > Opening hours > Tickets",
        "Harbor > History",
    ]
    assert sections["Harbor"] == (
        "The Harbor lighthouse was built in 1874 and still guides ships at night."
    )
    # Wrapped lines joined into one paragraph; fenced code is its own paragraph, its
    # "# comment" no heading; list items are paragraphs; links and emphasis keep their text.
    assert sections["Harbor > Opening hours"] == (
        "Visitors may climb the tower from April to October, every day but Monday.\n\n"
        "# not a heading: a shell comment\nkeel ingest harbor.md"
    )
    assert sections["Harbor > Opening hours > Tickets"] == (
        "Tickets cost four euros.\n\nSee the price list for groups."
    )
    assert sections["Harbor > History"] == "The lamp was electrified in 1921."
    assert "layout" not in doc.text and "Harbor The Harbor" not in doc.text


def test_html_keeps_main_content_with_sections(tmp_path: Path):
    path = tmp_path / "harbor.html"
    path.write_text(HTML)
    (doc,) = load_file(path)
    assert doc.title == "Harbor guide | Example Port Authority"
    assert [s.heading for s in doc.sections] == ["Harbor", "Harbor > Opening hours"]
    assert doc.sections[0].text == (
        "The Harbor lighthouse was built in 1874 and still guides ships at night."
    )
    assert doc.sections[1].text == (
        "Visitors may climb the tower from April to October, every day but Monday.\n\n"
        "Tickets cost four euros.\n\nChildren under six enter free."
    )
    for noise in ("Sign in", "Ships", "Contact us", "Copyright", "Privacy", "Fog horns",
                  "analytics", "font-family", "editor's comment", "Example Port Authority"):  # fmt: skip
        assert noise not in doc.text, noise


def test_html_without_main_uses_body_minus_chrome(tmp_path: Path):
    path = tmp_path / "plain.htm"
    path.write_text(
        "<html><body><nav>Home | About</nav><div id='menu'>Products Pricing</div>"
        "<div class='content'>First block of text.<div>Nested <b>bold</b> words.</div></div>"
        "<div class='breadcrumb main-crumbs'>Docs / Guide</div>"
        "<footer>Footer text</footer><div id='footer'>Imprint</div></body></html>"
    )
    (doc,) = load_file(path)
    assert doc.title == ""
    assert doc.text == "First block of text.\n\nNested bold words."


def _write_pdf(path: Path) -> None:
    """A three-page PDF with a running title, page-number footers and wrapped paragraphs."""
    pdf = FPDF()
    pdf.set_auto_page_break(auto=True, margin=25)
    pdf.set_title("Operations handbook")

    def header() -> None:
        pdf.set_font("Helvetica", size=9)
        pdf.cell(0, 8, "Keel Operations Handbook - internal", new_x="LMARGIN", new_y="NEXT")

    def footer() -> None:
        pdf.set_y(-15)
        pdf.set_font("Helvetica", size=9)
        pdf.cell(0, 8, f"Page {pdf.page_no()} of 3", align="C")

    pdf.header = header  # type: ignore[method-assign]
    pdf.footer = footer  # type: ignore[method-assign]
    paragraphs = {
        1: "Replicas share a Postgres database for checkpoints and a Redis server for the "
        "answer cache, so that any replica can resume any thread after a crash or a deploy.",
        2: "The readiness endpoint checks the checkpoint database, the vector store and the "
        "cache, and answers 503 when one of them is down, so that a load balancer stops "
        "sending traffic to that replica until it recovers.",
        3: "Background embedding of sentence vectors runs only while the replica is idle, a "
        "few chunks at a time, because on two cores it would otherwise double the latency "
        "of live runs.",
    }
    for page, text in paragraphs.items():
        pdf.add_page()
        pdf.set_font("Helvetica", size=16)
        # Chapter numbers are not page numbers: a numbered title is no running header.
        pdf.cell(0, 10, f"Chapter {page + 1}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=11)
        pdf.multi_cell(0, 6, text)
    pdf.output(str(path))


def test_pdf_joins_lines_and_drops_running_headers_and_footers(tmp_path: Path):
    path = tmp_path / "handbook.pdf"
    _write_pdf(path)
    (doc,) = load_file(path)
    assert doc.title == "Operations handbook"
    assert [s.heading for s in doc.sections] == ["Chapter 2", "Chapter 3", "Chapter 4"]
    assert doc.sections[0].text == (
        "Replicas share a Postgres database for checkpoints and a Redis server for the answer "
        "cache, so that any replica can resume any thread after a crash or a deploy."
    )
    assert doc.sections[1].text.endswith("stops sending traffic to that replica until it recovers.")
    assert "Handbook - internal" not in doc.text and "Page" not in doc.text
    assert "\n" not in doc.sections[2].text


def test_latin1_text_is_decoded(tmp_path: Path):
    path = tmp_path / "notes.txt"
    text = "Le café de la gare ouvre à sept heures. Déjeuner servi à midi, crème brûlée incluse."
    path.write_bytes(text.encode("latin-1"))
    (doc,) = load_file(path)
    assert doc.text == text


def test_ids_are_relative_paths_and_duplicates_are_refused(tmp_path: Path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "notes.md").write_text(f"# Notes\n\nNotes of {folder}.")
    docs = load_paths([tmp_path], root=tmp_path)
    assert [(d.id, d.source) for d in docs] == [
        ("a/notes.md", "a/notes.md"),
        ("b/notes.md", "b/notes.md"),
    ]
    # Outside the root, a folder argument names its files from the folder itself.
    names = [s.name for s in iter_paths([tmp_path / "a"], root=tmp_path / "b")]
    assert names == ["a/notes.md"]
    # Two folder arguments whose files would both be "notes.md": refused, naming both.
    with pytest.raises(
        DuplicateDocuments, match=r"notes\.md \(from \S+/a/notes\.md, \S+/b/notes\.md\)"
    ):
        load_paths([tmp_path / "a" / "notes.md", tmp_path / "b" / "notes.md"], root=tmp_path / "x")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        '{"id": "1", "text": "One."}\n{"id": "2", "text": "Two."}\n{"id": "1", "text": "Again."}\n'
    )
    with pytest.raises(DuplicateDocuments, match=r"1 \(lines 1 and 3\)"):
        list(load_file(rows))


def test_a_section_reaches_the_llm_prompt(tmp_path: Path):
    path = tmp_path / "harbor.md"
    path.write_text(MARKDOWN)
    (doc,) = load_file(path)
    section = doc.sections[1]
    passage = Passage(
        id="harbor.md#1",
        doc_id=doc.id,
        source=doc.source,
        title=doc.title,
        section=section.heading,
        text=section.text,
        score=1.0,
        dense_rank=1,
        lexical_rank=None,
    )
    prompt = build_prompt("When can I climb the tower?", [passage], [])
    assert "[1] (harbor.md — Harbor — Harbor > Opening hours)\nVisitors may" in prompt[-1].text


def test_files_linked_into_a_folder_are_named_by_their_place_there(tmp_path: Path):
    elsewhere = tmp_path / "usr" / "share" / "doc" / "manual.html"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_text("<html><body><p>The manual.</p></body></html>")
    farm = tmp_path / "farm" / "pkg"
    farm.mkdir(parents=True)
    (farm / "manual.html").symlink_to(elsewhere)
    names = [s.name for s in iter_paths([tmp_path / "farm"], root=tmp_path / "farm")]
    assert names == ["pkg/manual.html"]


def test_table_rows_become_sentences_with_their_column_names(tmp_path: Path):
    (tmp_path / "oven.md").write_text(
        "# Oven\n\nTimes below.\n\n| Item | Temperature |\n| --- | :-: |\n"
        "| Baguette | 250 °C |\n| **Brioche** | 180 °C |\nAfter the table.\n\na | b is no table\n"
    )
    (tmp_path / "oven.html").write_text(
        "<html><body><main><h1>Oven</h1><table><tr><th>Item</th><th>Temperature</th></tr>"
        "<tr><td>Baguette</td><td>250 °C</td></tr><tr><td>Brioche</td><td>180 °C</td></tr>"
        "</table><table><tr><td>no</td><td>header</td></tr></table></main></body></html>"
    )
    rows = ["Item: Baguette; Temperature: 250 °C.", "Item: Brioche; Temperature: 180 °C."]
    by_name = {d.source: d for d in load_paths([tmp_path], root=tmp_path)}
    markdown = split_sentences(by_name["oven.md"].sections[0].text)
    assert markdown == ["Times below.", *rows, "After the table.", "a | b is no table"]
    html = split_sentences(by_name["oven.html"].sections[0].text)
    assert html == [*rows, "no; header."]
    assert not any("|" in s for s in markdown[:-1] + html)
