"""Documents: ingestion by upload (bumps the corpus version), listing and deletion.

A file's id is its name as uploaded, relative path included (`a/notes.md`), so files of one
name in different folders stay apart; a JSONL file's rows carry their own ids. An upload naming
one id twice is refused whole (422, the ids named), before anything is written. A file without
text is skipped and named in the result's `skipped`; the others are ingested.

Each tenant has its own collections: what a tenant ingests only it retrieves, and another
tenant's document answers 404 like a missing one. Both actions are audited with the tenant.
"""

import asyncio
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from api import audit
from api.deps import KeelDep, TenantDep
from api.errors import NothingIngested, TooManyFiles, UnsupportedFileType
from api.schemas import DocumentInfo, DocumentPage, IngestResult, SkippedFile
from corpus.ingest import Skipped, ingest_batches, load_batches
from corpus.loaders import SUPPORTED_SUFFIXES, SourceFile, check_unique_sources, relative_name
from graph.errors import InvalidInput, NotFound

router = APIRouter(prefix="/v1/documents", tags=["documents"])

# Files per upload: Starlette's default, kept (bytes are bounded by KEEL_MAX_BODY_BYTES);
# `keel ingest --url` sends 500 at most per request.
MAX_UPLOAD_FILES = 1000
UNSUPPORTED = f"unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}"
# The multipart body FastAPI would declare for `files: list[UploadFile]`; the form is parsed
# in the route so that too many files get keel's error, not Starlette's.
UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["files"],
                "properties": {
                    "files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "txt, md, html, pdf or jsonl files",
                    }
                },
            }
        }
    },
}


@router.post("", status_code=status.HTTP_201_CREATED, openapi_extra={"requestBody": UPLOAD_BODY})
async def ingest(keel: KeelDep, tenant: TenantDep, request: Request) -> IngestResult:
    """Chunks, embeds and indexes the uploaded files (`files` fields), in batches. Re-uploading
    a file (same name, same relative path) replaces it; `outcomes` says what happened to each
    document, `skipped` names each file without text (or unreadable) and why. 422 only when
    nothing in the upload could be ingested (415 when every file has an unsupported type), 413
    `too_many_files` over 1,000 files."""
    try:
        form = await request.form(max_files=MAX_UPLOAD_FILES, max_fields=MAX_UPLOAD_FILES)
    except HTTPException as exc:  # Starlette's multipart limits
        if "Too many files" in str(exc.detail):
            raise TooManyFiles(
                f"an upload holds at most {MAX_UPLOAD_FILES} files; send them in several "
                "requests (`keel ingest --url` sends 500 at a time)"
            ) from exc
        raise InvalidInput(f"malformed multipart body: {exc.detail}") from exc
    try:
        uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        if not uploads:
            raise InvalidInput("no files in the upload (multipart/form-data `files` fields)")
        with tempfile.TemporaryDirectory() as tmp:
            sources, names, unsupported = [], {}, []
            for n, upload in enumerate(uploads):
                name = relative_name(upload.filename or "") or f"upload-{n}"
                if Path(name).suffix.lower() not in SUPPORTED_SUFFIXES:
                    unsupported.append(Skipped(name, UNSUPPORTED))
                    continue
                path = Path(tmp) / f"{n}{Path(name).suffix}"
                path.write_bytes(await upload.read())
                sources.append(SourceFile(path, name))
                names[str(path)] = name
            check_unique_sources(sources, lambda src: names[str(src.path)])
            corpus = keel.deps.corpora.get(tenant)
            batches = load_batches(sources)
            report, skipped = await asyncio.to_thread(ingest_batches, corpus, batches)
    finally:
        await form.close()
    skipped = unsupported + [Skipped(names[s.path], s.reason) for s in skipped]
    if not report.documents:
        if len(unsupported) == len(uploads):
            raise UnsupportedFileType("; ".join(f"{s.path}: {s.reason}" for s in skipped[:20]))
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:20])
        raise NothingIngested(f"nothing in the upload could be ingested: {reasons}")
    result = IngestResult(**vars(report), skipped=[SkippedFile(**vars(s)) for s in skipped])
    audit.action(
        request,
        "documents_ingested",
        doc_ids=result.doc_ids[:100],
        documents=result.documents,
        chunks_added=result.chunks_added,
        skipped=len(skipped),
        corpus_version=result.corpus_version,
    )
    return result


@router.get("")
async def list_documents(
    keel: KeelDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> DocumentPage:
    """The tenant's documents by id: source, title, chunk count, ingestion time."""
    corpus = keel.deps.corpora.get(tenant)
    page, next_cursor = await asyncio.to_thread(corpus.documents, limit, cursor or "")
    return DocumentPage(
        documents=[DocumentInfo(**vars(info)) for info in page], next_cursor=next_cursor
    )


@router.delete("/{doc_id:path}", status_code=status.HTTP_204_NO_CONTENT)
async def delete(doc_id: str, keel: KeelDep, tenant: TenantDep, request: Request) -> Response:
    """Removes a document's chunks from the vector store and the lexical index."""
    if not await asyncio.to_thread(keel.deps.corpora.get(tenant).delete, doc_id):
        raise NotFound(f"document {doc_id} not found")
    audit.action(request, "document_deleted", doc_id=doc_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
