"""Documents: ingestion by upload (bumps the corpus version), listing and deletion.

A file's id is its name as uploaded, relative path included (`a/notes.md`), so files of one
name in different folders stay apart; a JSONL file's rows carry their own ids. An upload naming
one id twice is refused whole (422, the ids named), before anything is written.

Each tenant has its own collections: what a tenant ingests only it retrieves, and another
tenant's document answers 404 like a missing one. Both actions are audited with the tenant.
"""

import asyncio
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Query, Request, Response, UploadFile, status

from api import audit
from api.deps import KeelDep, TenantDep
from api.errors import UnsupportedFileType
from api.schemas import DocumentInfo, DocumentPage, IngestResult
from corpus import Document, check_unique
from graph.errors import InvalidInput, NotFound
from integrations.loaders import SUPPORTED_SUFFIXES, load_file, relative_name

router = APIRouter(prefix="/v1/documents", tags=["documents"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def ingest(
    files: Annotated[list[UploadFile], File(description="txt, md, html, pdf or jsonl files")],
    keel: KeelDep,
    tenant: TenantDep,
    request: Request,
) -> IngestResult:
    """Chunks, embeds and indexes the uploaded files. Re-uploading a file (same name, same
    relative path) replaces it; `outcomes` says what happened to each document."""
    docs: list[Document] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, upload in enumerate(files):
            name = relative_name(upload.filename or "") or f"upload-{n}"
            if Path(name).suffix.lower() not in SUPPORTED_SUFFIXES:
                raise UnsupportedFileType(
                    f"{name}: unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}"
                )
            path = Path(tmp) / f"{n}{Path(name).suffix}"
            path.write_bytes(await upload.read())
            docs += list(load_file(path, name))
    if not docs:
        raise InvalidInput("no documents in the upload")
    check_unique(docs)
    report = await asyncio.to_thread(keel.deps.corpora.get(tenant).ingest, docs)
    result = IngestResult(**vars(report))
    audit.action(
        request,
        "documents_ingested",
        doc_ids=result.doc_ids[:100],
        documents=result.documents,
        chunks_added=result.chunks_added,
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
