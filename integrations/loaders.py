"""Document loaders: .txt, .md, .html, .pdf through langchain-community, JSONL line by line."""

import json
import re
from collections.abc import Iterator
from pathlib import Path

from langchain_community.document_loaders import BSHTMLLoader, PyPDFLoader, TextLoader
from langchain_core.document_loaders import BaseLoader

from graph.errors import InvalidInput
from integrations.corpus import Document

SUPPORTED_SUFFIXES = (".txt", ".md", ".html", ".htm", ".pdf", ".jsonl")


def doc_id_for(name: str) -> str:
    """A stable id for a file, from its name: re-ingesting the same file replaces it."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).name).strip("-") or "document"


def load_file(path: Path, name: str | None = None) -> Iterator[Document]:
    """Yields the documents in one file; `name` overrides the file name used for ids/sources."""
    name = name or path.name
    suffix = Path(name).suffix.lower()
    if suffix == ".jsonl":
        yield from _load_jsonl(path, name)
        return
    loader: BaseLoader
    if suffix in (".txt", ".md"):
        loader = TextLoader(str(path), encoding="utf-8", autodetect_encoding=True)
    elif suffix in (".html", ".htm"):
        loader = BSHTMLLoader(
            str(path), open_encoding="utf-8", bs_kwargs={"features": "html.parser"}
        )
    elif suffix == ".pdf":
        loader = PyPDFLoader(str(path))
    else:
        raise InvalidInput(
            f"{name}: unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    try:
        pages = loader.load()
    except Exception as exc:
        raise InvalidInput(f"{name}: cannot be read as {suffix}: {exc}") from exc
    text = "\n\n".join(page.page_content for page in pages).strip()
    if not text:
        raise InvalidInput(f"{name}: no text found")
    title = str(pages[0].metadata.get("title") or "") if pages else ""
    yield Document(id=doc_id_for(name), text=text, title=title, source=name)


def _load_jsonl(path: Path, name: str) -> Iterator[Document]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
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
            yield Document(
                id=doc_id,
                text=text,
                title=str(row.get("title") or ""),
                source=str(row.get("source") or name),
            )


def iter_paths(paths: list[Path]) -> Iterator[Path]:
    """Files under the given paths (directories walked), supported types only, sorted."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix.lower() in SUPPORTED_SUFFIXES)
        elif path.exists():
            yield path
        else:
            raise InvalidInput(f"{path}: no such file or directory")
