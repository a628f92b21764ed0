"""Collections: create, list, delete; upload PDFs/images; page images; search. The work is the
collection service's (pagelens.service.collections); these routes parse and shape JSON."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile

from pagelens.api.protocol import CreateCollectionRequest, SearchRequest
from pagelens.api.routes.common import CollectionsService, request_timings
from pagelens.errors import InvalidInput

router = APIRouter(prefix="/collections", tags=["collections"])


@router.post("", status_code=201)
async def create_collection(body: CreateCollectionRequest, collections: CollectionsService):
    """Create a collection bound to the model this server runs; 409 if the name is taken."""
    return await collections.create(body.name)


@router.get("")
async def list_collections(collections: CollectionsService):
    """Every collection with its model binding; `compatible` false where this server's model cannot use it."""
    return {"collections": await collections.list()}


@router.get("/{name}")
async def get_collection(name: str, collections: CollectionsService):
    return await collections.info(name)


@router.delete("/{name}")
async def delete_collection(name: str, collections: CollectionsService):
    await collections.delete(name)
    return {"deleted": name}


@router.post("/{name}/documents")
async def add_document(
    name: str,
    request: Request,
    collections: CollectionsService,
    file: Annotated[UploadFile, File()],
    metadata: Annotated[str | None, Form()] = None,
):
    """Upload a PDF or an image (multipart `file`, optional `metadata` JSON object); idempotent by content."""
    try:
        meta = json.loads(metadata) if metadata else {}
    except ValueError as error:
        raise InvalidInput(f"metadata is not valid JSON: {error}") from None
    if not isinstance(meta, dict):
        raise InvalidInput("metadata must be a JSON object")
    data = await file.read()
    request_timings(request)
    return await collections.add_document(name, data, filename=file.filename or "", metadata=meta)


@router.get("/{name}/documents")
async def list_documents(name: str, collections: CollectionsService):
    return {"documents": await collections.documents(name)}


@router.delete("/{name}/documents/{document_id}")
async def delete_document(name: str, document_id: str, collections: CollectionsService):
    await collections.delete_document(name, document_id)
    return {"deleted": document_id}


@router.get("/{name}/documents/{document_id}/pages/{page}", response_class=Response)
async def page_image(
    name: str, document_id: str, page: int, collections: CollectionsService, full: bool = False
) -> Response:
    """The page as PNG; pages over 4 megapixels are served downscaled (aspect kept) unless `full=true`."""
    return Response(await collections.page_png(name, document_id, page, full=full), media_type="image/png")


@router.post("/{name}/search")
async def search(name: str, body: SearchRequest, request: Request, collections: CollectionsService):
    hits = await collections.search(
        name, body.query, k=body.k, mode=body.mode, prefetch=body.prefetch, filter=body.filter,
        timings=request_timings(request),
    )  # fmt: skip
    return {
        "results": [
            {"document_id": h.document_id, "page": h.page, "score": h.score, "name": h.name, "metadata": h.metadata}
            for h in hits
        ]
    }
