"""The ingestion pipeline: files loaded in batches, each batch ingested as it comes.

A file that cannot be read or holds no text is skipped with its reason. A bulk ingestion loads
the next batch in a child process while the current one is embedded and written
(`prefetched_batches`): parsing pages and embedding them then share the two cores.
"""

import multiprocessing
import queue
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from corpus.corpus import Corpus
from corpus.documents import Document, IngestReport
from corpus.loaders import SourceFile, load_file
from graph.errors import DuplicateDocuments, InvalidInput

# One `Corpus.ingest` call takes at most this many documents or text bytes: memory stays bounded
# and an interrupted run keeps the batches it finished.
BATCH_DOCS, BATCH_TEXT_BYTES = 200, 4 * 1024 * 1024
# Batches loaded ahead of the one being ingested.
PREFETCH = 2


@dataclass(frozen=True)
class Skipped:
    """A file ingestion passed over, and why (unreadable, no text, unsupported type)."""

    path: str
    reason: str


@dataclass
class Batch:
    """Documents loaded from consecutive files, the files skipped among them, and how many
    files (and bytes on disk) the batch finished."""

    docs: list[Document] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    text_bytes: int = 0


def load_batches(
    sources: Iterable[SourceFile],
    max_docs: int = BATCH_DOCS,
    max_text_bytes: int = BATCH_TEXT_BYTES,
) -> Iterator[Batch]:
    """The documents of `sources` in batches of at most `max_docs` documents or about
    `max_text_bytes` of text; a file that fails to load is skipped, with its reason."""
    batch = Batch()
    for src in sources:
        try:
            for doc in load_file(src.path, src.name):
                batch.docs.append(doc)
                batch.text_bytes += len(doc.text)
                if len(batch.docs) >= max_docs or batch.text_bytes >= max_text_bytes:
                    yield batch
                    batch = Batch()
        except DuplicateDocuments:
            raise
        except (InvalidInput, OSError) as exc:
            reason = str(exc).removeprefix(f"{src.name}: ")
            batch.skipped.append(Skipped(str(src.path), reason))
        batch.files += 1
        batch.bytes += src.path.stat().st_size if src.path.exists() else 0
    if batch.docs or batch.files:
        yield batch


def _load_ahead(sources: list[SourceFile], out: "multiprocessing.Queue[object]") -> None:
    try:
        for batch in load_batches(sources):
            out.put(batch)
    except BaseException as exc:  # the parent raises it
        out.put(exc)
    out.put(None)


def prefetched_batches(sources: Sequence[SourceFile]) -> Iterator[Batch]:
    """`load_batches` in a child process, `PREFETCH` batches ahead of the caller. The child is
    spawned, not forked: the parent holds ONNX Runtime's threads."""
    context = multiprocessing.get_context("spawn")
    batches: multiprocessing.Queue[object] = context.Queue(maxsize=PREFETCH)
    loader = context.Process(target=_load_ahead, args=(list(sources), batches), daemon=True)
    loader.start()
    try:
        while True:
            try:
                item = batches.get(timeout=1)
            except queue.Empty:
                if not loader.is_alive():
                    raise RuntimeError(
                        f"the loading process died (exit {loader.exitcode})"
                    ) from None
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, Batch)
            yield item
    finally:
        loader.kill()
        loader.join()


def ingest_batches(
    corpus: Corpus,
    batches: Iterable[Batch],
    on_batch: Callable[[Batch, IngestReport], None] | None = None,
    on_chunks: Callable[[int], None] | None = None,
) -> tuple[IngestReport, list[Skipped]]:
    """Ingests batches as they come (from `load_batches` or `prefetched_batches`; check the
    sources' ids with `check_unique_sources` first); returns the merged report and the skipped
    files. `on_batch` follows each finished batch, `on_chunks` the chunks embedded so far in the
    current one."""
    total, skipped = IngestReport(), []
    for batch in batches:
        report = corpus.ingest(batch.docs, on_chunks) if batch.docs else IngestReport()
        merge_report(total, report)
        skipped += batch.skipped
        if on_batch:
            on_batch(batch, report)
    return total, skipped


def merge_report(total: IngestReport, part: IngestReport) -> None:
    """Adds one batch's report to the run's."""
    total.documents += part.documents
    total.chunks_added += part.chunks_added
    total.documents_unchanged += part.documents_unchanged
    total.documents_replaced += part.documents_replaced
    total.corpus_version = max(total.corpus_version, part.corpus_version)
    total.doc_ids += part.doc_ids
    total.outcomes.update(part.outcomes)
