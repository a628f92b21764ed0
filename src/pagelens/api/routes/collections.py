"""Collections: create, list, delete; upload PDFs/images; page images; MaxSim search."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile

from pagelens.api.protocol import CreateCollectionRequest, SearchRequest
from pagelens.api.routes.common import Service, request_timings
from pagelens.errors import InvalidInput
from pagelens.index.collections import Collection, Collections

router = APIRouter(prefix="/collections", tags=["collections"])


def _collections(request: Request) -> Collections:
    collections = getattr(request.app.state, "collections", None)
    if collections is None:
        collections = request.app.state.collections = Collections.from_settings(request.app.state.settings)
    return collections


def _summary(collection: Collection) -> dict:
    return {"name": collection.name, "documents": len(collection.documents()), "pages": collection.store.page_count()}


def _require_multi_vector(service) -> None:
    if not service.info.multi_vector:
        raise InvalidInput(f"collections need a multi-vector model; {service.info.model} gives one vector per input")


@router.post("", status_code=201)
async def create_collection(body: CreateCollectionRequest, request: Request, service: Service):
    _require_multi_vector(service)
    collection = await asyncio.to_thread(_collections(request).create, body.name)
    return _summary(collection)


@router.get("")
async def list_collections(request: Request):
    collections = _collections(request)
    return {"collections": [_summary(collections.get(name)) for name in collections.names()]}


@router.get("/{name}")
async def get_collection(name: str, request: Request):
    return _summary(_collections(request).get(name))


@router.delete("/{name}")
async def delete_collection(name: str, request: Request):
    await asyncio.to_thread(_collections(request).delete, name)
    return {"deleted": name}


@router.post("/{name}/documents")
async def add_document(
    name: str,
    request: Request,
    service: Service,
    file: Annotated[UploadFile, File()],
    metadata: Annotated[str | None, Form()] = None,
):
    """Upload a PDF or an image (multipart `file`, optional `metadata` JSON object); idempotent by content."""
    _require_multi_vector(service)
    collection = _collections(request).get(name)
    try:
        meta = json.loads(metadata) if metadata else {}
    except ValueError as error:
        raise InvalidInput(f"metadata is not valid JSON: {error}") from None
    if not isinstance(meta, dict):
        raise InvalidInput("metadata must be a JSON object")
    data = await file.read()
    request_timings(request)
    record = await asyncio.to_thread(
        collection.add, data, name=file.filename or "", metadata=meta, embed=service.engine.embed_images,
        dpi=request.app.state.settings.pdf_dpi,
    )  # fmt: skip
    return {"id": record["id"], "pages": record["pages"], "created": record["created"]}


@router.get("/{name}/documents")
async def list_documents(name: str, request: Request):
    return {"documents": _collections(request).get(name).documents()}


@router.delete("/{name}/documents/{document_id}")
async def delete_document(name: str, document_id: str, request: Request):
    await asyncio.to_thread(_collections(request).get(name).delete, document_id)
    return {"deleted": document_id}


@router.get("/{name}/documents/{document_id}/pages/{page}", response_class=Response)
async def page_image(name: str, document_id: str, page: int, request: Request) -> Response:
    image = await asyncio.to_thread(_collections(request).get(name).page_image, document_id, page)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return Response(buffer.getvalue(), media_type="image/png")


@router.post("/{name}/search")
async def search(name: str, body: SearchRequest, request: Request, service: Service):
    _require_multi_vector(service)
    collection = _collections(request).get(name)
    (query,) = await service.embed_queries([body.query], timings=request_timings(request))
    hits = await asyncio.to_thread(
        collection.search, query, k=body.k, mode=body.mode, prefetch=body.prefetch, filter=body.filter
    )
    return {
        "results": [
            {"document_id": h.document_id, "page": h.page, "score": h.score, "name": h.name, "metadata": h.metadata}
            for h in hits
        ]
    }
