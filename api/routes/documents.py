"""Documents: ingestion by upload (bumps the corpus version) and deletion."""

import asyncio
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Response, UploadFile, status

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
    report = await asyncio.to_thread(keel.deps.corpus.ingest, docs)
    return IngestResult(**vars(report))


@router.delete("/{doc_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete(doc_id: str, keel: KeelDep, tenant: TenantDep) -> Response:
    """Removes a document's chunks from the vector store and the lexical index."""
    if not await asyncio.to_thread(keel.deps.corpus.delete, doc_id):
        raise NotFound(f"document {doc_id} not found")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
