"""Collections: create, list, delete; upload PDFs/images; read, change and download documents; page
images; search; export and import whole collections as snapshot archives. The work is the
collection service's (pagelens.service.collections); these routes parse and shape JSON."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse

from pagelens.api.openapi import BINARY, BODY_ERRORS, error_responses
from pagelens.api.protocol import (
    CollectionInfo,
    CollectionList,
    CreateCollectionRequest,
    Deleted,
    DocumentAdded,
    DocumentInfo,
    DocumentList,
    JobAccepted,
    PatchDocumentRequest,
    SearchRequest,
    SearchResponse,
)
from pagelens.api.routes.common import CollectionsService, Jobs, request_timings
from pagelens.codecs.metadata import parse_metadata
from pagelens.errors import PagelensError
from pagelens.service import JobService, raise_job_error, thumbnails

router = APIRouter(prefix="/collections", tags=["collections"], responses=error_responses())
# a route on a named collection: 400 a bad name, 404 unknown, 409 open in another process or bound to another model
NAMED = (400, 404, 409)

ARCHIVE_MEDIA_TYPE = "application/x-tar"
FILE_MEDIA_TYPES = ("application/pdf", "image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "image/tiff")
DISCONNECT_POLL_SECONDS = 0.25  # how soon an upload whose client left stops its ingest
CLIENT_CLOSED_REQUEST = 499  # nginx's status for it: logged, never read (nobody is listening)


def declared(model: type | None = None, *statuses: int, status: int = 200) -> dict:
    """The `responses=` of a route: its body's model and its error statuses."""
    body = {status: {"model": model}} if model is not None else {}
    return {**body, **error_responses(*statuses)}


@router.post(
    "", status_code=201, response_model=None, responses=declared(CollectionInfo, 400, 409, *BODY_ERRORS, status=201)
)
async def create_collection(body: CreateCollectionRequest, collections: CollectionsService):
    """Create a collection bound to the model this server runs; 409 if the name is taken."""
    return await collections.create(body.name)


@router.post(
    "/import",
    status_code=201,
    response_model=None,
    responses=declared(CollectionInfo, 400, 409, *BODY_ERRORS, 422, status=201),
    openapi_extra={
        "requestBody": {"required": True, "content": {ARCHIVE_MEDIA_TYPE: BINARY}, "description": "A snapshot archive"}
    },
)
async def import_collection(
    request: Request,
    collections: CollectionsService,
    name: Annotated[str | None, Query(description="The new collection's name (default: the archive's)")] = None,
):
    """Create a collection from a snapshot archive (what `GET /collections/{name}/export` gives), sent
    as the request body: its documents, files, vectors and model binding. The body may be as large as
    an upload (PAGELENS_MAX_DOCUMENT_BYTES). 409 when the name is taken, 422 naming what is wrong with
    the archive; either way, and on any failure, no collection is created. Needs no model loaded."""
    return await collections.import_(request.stream(), name)


@router.get("", response_model=None, responses=declared(CollectionList))
async def list_collections(collections: CollectionsService):
    """Every collection with its model binding; `compatible` false where this server's model cannot use it."""
    return {"collections": await collections.list()}


@router.get("/{name}", response_model=None, responses=declared(CollectionInfo, *NAMED))
async def get_collection(name: str, collections: CollectionsService):
    return await collections.info(name)


@router.delete("/{name}", response_model=None, responses=declared(Deleted, *NAMED))
async def delete_collection(name: str, collections: CollectionsService):
    await collections.delete(name)
    return {"deleted": name}


@router.get(
    "/{name}/export",
    response_class=StreamingResponse,
    responses={
        200: {"content": {ARCHIVE_MEDIA_TYPE: BINARY}, "description": "The collection's snapshot archive (a tar)"},
        **error_responses(*NAMED),
    },
)
async def export_collection(name: str, collections: CollectionsService) -> StreamingResponse:
    """The whole collection as one archive, streamed as it is written: a manifest (model binding,
    page schema, counts), then each document's record, file and stored vectors (float16). Needs no
    model loaded. An archive cut short (a failure mid-way) is refused by the import."""
    chunks = await collections.export_stream(name)
    disposition = f"attachment; filename*=UTF-8''{quote(name, safe='')}.tar"
    return StreamingResponse(chunks, media_type=ARCHIVE_MEDIA_TYPE, headers={"Content-Disposition": disposition})


@router.post(
    "/{name}/documents",
    response_model=None,
    responses={
        **declared(DocumentAdded, *NAMED, *BODY_ERRORS, 415, 422, 429, 503),
        202: {"model": JobAccepted, "description": "`wait=false`: the ingest job is queued"},
    },
)
async def add_document(
    name: str,
    request: Request,
    jobs: Jobs,
    file: Annotated[UploadFile, File()],
    metadata: Annotated[str | None, Form()] = None,
    wait_field: Annotated[bool | None, Form(alias="wait")] = None,
    wait: Annotated[bool | None, Query(description="false: answer 202 with the ingest job at once")] = None,
    password: Annotated[str | None, Form(description="An encrypted PDF's password; never stored or logged")] = None,
):
    """Upload a PDF, an image (a multi-page TIFF is a page per frame) or an office document (DOCX,
    PPTX, XLSX, ODT, ODP, ODS: converted to PDF when the server has LibreOffice, else 415) as
    multipart `file`, with an optional `metadata` JSON object and, for an encrypted PDF, its
    `password` (422 without it or with a wrong one; ignored for anything else). Idempotent by content.

    Every upload is an ingest job (`/jobs`). By default (`wait=true`, a query parameter or form
    field) the answer comes once the document is stored, and a client that disconnects first
    cancels it; with `wait=false` the answer is 202 with the job at once, and the job survives a
    restart of the server. What cannot be ingested is refused before either (404, 409, 413, 415, 422)."""
    meta = parse_metadata(metadata)  # before the file is read: bad metadata costs nothing
    waiting = wait if wait is not None else wait_field if wait_field is not None else True
    request_timings(request)
    job = await jobs.submit(
        name, file.file, filename=file.filename or "", metadata=meta, durable=not waiting, password=password or None
    )
    if not waiting:
        return JSONResponse({"job_id": job.id, **job.public()}, status_code=202)
    watcher = asyncio.create_task(_cancel_on_disconnect(request, jobs, job.id))
    try:
        job = await jobs.wait(job.id)
    except asyncio.CancelledError:
        jobs.cancel(job.id, reason="the request was cancelled")  # this request's task was cancelled
        raise
    finally:
        watcher.cancel()
    if job.state == "done":
        return {
            "id": job.document_id,
            "pages": job.pages_total,
            "created": job.created,
            "metadata_kept": not job.created,
        }
    if watcher.done() and not watcher.cancelled() and watcher.result():
        return Response(status_code=CLIENT_CLOSED_REQUEST)  # the ingest stopped because the client left
    raise_job_error(job)


async def _cancel_on_disconnect(request: Request, jobs: JobService, job_id: str) -> bool:
    """Cancel the job once the client has disconnected (polled: the ingest runs on a thread); True then."""
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_SECONDS)
    with contextlib.suppress(PagelensError):  # it may have ended meanwhile
        jobs.cancel(job_id, reason="the client disconnected before the document was stored")
    return True


@router.get("/{name}/documents", response_model=None, responses=declared(DocumentList, *NAMED))
async def list_documents(name: str, collections: CollectionsService):
    return {"documents": await collections.documents(name)}


@router.get("/{name}/documents/{document_id}", response_model=None, responses=declared(DocumentInfo, *NAMED))
async def get_document(name: str, document_id: str, collections: CollectionsService):
    """A document: its file's name, size and SHA-256, pages, metadata, kind and when it was stored."""
    return await collections.document(name, document_id)


@router.patch(
    "/{name}/documents/{document_id}", response_model=None, responses=declared(DocumentInfo, *NAMED, *BODY_ERRORS)
)
async def patch_document(name: str, document_id: str, body: PatchDocumentRequest, collections: CollectionsService):
    """Change a document's metadata: `{"metadata": {...}}` merged into what is stored (`null` deletes a
    key), in its record and in every page search filters read; 400 when the result is no valid metadata."""
    return await collections.patch_document(name, document_id, body.metadata)


@router.get(
    "/{name}/documents/{document_id}/file",
    response_class=Response,
    responses={
        200: {"content": {media: BINARY for media in FILE_MEDIA_TYPES}, "description": "The uploaded bytes"},
        **error_responses(*NAMED),
    },
)
async def document_file(name: str, document_id: str, collections: CollectionsService) -> Response:
    """The file as uploaded, with its content type (sniffed from its bytes) and file name."""
    data, media_type, filename = await collections.document_file(name, document_id)
    disposition = f"attachment; filename*=UTF-8''{quote(filename or document_id, safe='')}"
    return Response(data, media_type=media_type, headers={"Content-Disposition": disposition})


@router.delete("/{name}/documents/{document_id}", response_model=None, responses=declared(Deleted, *NAMED))
async def delete_document(name: str, document_id: str, collections: CollectionsService):
    await collections.delete_document(name, document_id)
    return {"deleted": document_id}


@router.get(
    "/{name}/documents/{document_id}/pages/{page}",
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": BINARY, thumbnails.MEDIA_TYPE: BINARY},
            "description": "The page rendered again: PNG, or with `width` a JPEG thumbnail with an ETag",
        },
        304: {"description": "`width` and an If-None-Match naming the thumbnail's ETag: the client's copy is current"},
        **error_responses(*NAMED),
    },
)
async def page_image(
    name: str,
    document_id: str,
    page: int,
    request: Request,
    collections: CollectionsService,
    full: bool = False,
    width: Annotated[
        int | None,
        Query(ge=thumbnails.MIN_WIDTH, le=thumbnails.MAX_WIDTH, description="A JPEG thumbnail this many pixels wide"),
    ] = None,
) -> Response:
    """The page as PNG; pages over 4 megapixels are served downscaled (aspect kept) unless `full=true`.
    With `width` (16..2048): a JPEG that wide (never wider than the page), with `ETag` and
    `Cache-Control`, and 304 when If-None-Match names that ETag."""
    if width is None:
        return Response(await collections.page_png(name, document_id, page, full=full), media_type="image/png")
    thumbnail = await thumbnails.ThumbnailService(collections).thumbnail(
        name, document_id, page, width=width, if_none_match=request.headers.get("if-none-match")
    )
    headers = {"ETag": thumbnail.etag, "Cache-Control": thumbnails.CACHE_CONTROL}
    if thumbnail.data is None:
        return Response(status_code=304, headers=headers)
    return Response(thumbnail.data, media_type=thumbnails.MEDIA_TYPE, headers=headers)


@router.post(
    "/{name}/search",
    response_model=None,
    responses=declared(SearchResponse, *NAMED, *BODY_ERRORS, 429, 503),
)
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
