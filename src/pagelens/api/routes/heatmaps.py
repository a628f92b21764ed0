"""Similarity heatmaps of stored pages: `POST /collections/{c}/documents/{id}/pages/{n}/heatmap`.
The work is pagelens.service.heatmaps' (maps from the stored vectors, nothing re-embedded but the query)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request, Response

from pagelens.api.openapi import BINARY, BODY_ERRORS, error_responses
from pagelens.api.protocol import HeatmapRequest, HeatmapResponse
from pagelens.api.routes.common import get_runtime, request_timings
from pagelens.service import HeatmapService

router = APIRouter(prefix="/collections", tags=["collections"], responses=error_responses())


@router.post(
    "/{name}/documents/{document_id}/pages/{page}/heatmap",
    response_model=None,
    responses={
        200: {
            "model": HeatmapResponse,
            "content": {"image/png": BINARY},
            "description": "The maps as JSON, or with `format=png` the page with a map blended over it",
        },
        **error_responses(400, 404, 409, *BODY_ERRORS, 429, 503),
    },
)
async def heatmap(
    name: str,
    document_id: str,
    page: int,
    body: HeatmapRequest,
    request: Request,
    format: Literal["json", "png"] = "json",
    token: int | None = Query(
        default=None,
        description="With format=png: the token's map (an index into `tokens`) instead of the combined one",
    ),
):
    """How much each patch of the page answers each token of `query`: colpali-engine's similarity maps
    from the page's stored vectors. JSON (HeatmapResponse): `maps[t][y][x]` per token, raw dot
    products. `format=png`: the page image with the combined map (or `token`'s) blended over it in red.
    409 `no_similarity_map` for pages without maps (single-vector or pooled collections, pages stored
    before patch grids were recorded: re-ingest them); 404 for an unknown collection, document or page."""
    heatmaps = HeatmapService(get_runtime(request).collections)
    if format == "png":
        png = await heatmaps.overlay_png(name, document_id, page, body.query, token=token)
        return Response(png, media_type="image/png")
    return await heatmaps.heatmap(name, document_id, page, body.query, timings=request_timings(request))
