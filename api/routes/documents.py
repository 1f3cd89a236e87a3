"""Documents: ingestion by upload (bumps the corpus version) and deletion.

Each tenant has its own collections: what a tenant ingests only it retrieves, and another
tenant's document answers 404 like a missing one. Both actions are audited with the tenant.
"""

import asyncio
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Request, Response, UploadFile, status

from api import audit
from api.deps import KeelDep, TenantDep
from api.errors import UnsupportedFileType
from api.schemas import IngestResult
from graph.errors import InvalidInput, NotFound
from integrations.corpus import Document
from integrations.loaders import SUPPORTED_SUFFIXES, load_file

router = APIRouter(prefix="/v1/documents", tags=["documents"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def ingest(
    files: Annotated[list[UploadFile], File(description="txt, md, html, pdf or jsonl files")],
    keel: KeelDep,
    tenant: TenantDep,
    request: Request,
) -> IngestResult:
    """Chunks, embeds and indexes the uploaded files. Re-uploading a file replaces it."""
    docs: list[Document] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, upload in enumerate(files):
            name = Path(upload.filename or f"upload-{n}").name
            if Path(name).suffix.lower() not in SUPPORTED_SUFFIXES:
                raise UnsupportedFileType(
                    f"{name}: unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}"
                )
            path = Path(tmp) / f"{n}-{name}"
            path.write_bytes(await upload.read())
            docs += list(load_file(path, name))
    if not docs:
        raise InvalidInput("no documents in the upload")
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


@router.delete("/{doc_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete(doc_id: str, keel: KeelDep, tenant: TenantDep, request: Request) -> Response:
    """Removes a document's chunks from the vector store and the lexical index."""
    if not await asyncio.to_thread(keel.deps.corpora.get(tenant).delete, doc_id):
        raise NotFound(f"document {doc_id} not found")
    audit.action(request, "document_deleted", doc_id=doc_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
