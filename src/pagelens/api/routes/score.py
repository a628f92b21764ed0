"""`POST /score`: one query against pages, scored on the server (MaxSim for multi-vector models)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request

from pagelens.api.json_body import json_body, openapi_body
from pagelens.api.openapi import EMBEDDING_ERRORS, error_responses
from pagelens.api.protocol import ScoreRequest, ScoreResponse
from pagelens.api.routes.common import Service, request_timings

router = APIRouter(tags=["scoring"], responses=error_responses(*EMBEDDING_ERRORS))


@router.post(
    "/score", response_model=None, responses={200: {"model": ScoreResponse}}, openapi_extra=openapi_body(ScoreRequest)
)
async def score(body: Annotated[ScoreRequest, json_body(ScoreRequest)], request: Request, service: Service):
    """Scores of `query` against `images` (base64 / data URI) or `embeddings`, in input order."""
    timings = request_timings(request)
    scores = await service.score(body.query, images=body.images, embeddings=body.embeddings, timings=timings)
    return {
        "object": "list",
        "model": service.info.model,
        "method": "maxsim" if service.info.multi_vector else "dot",
        "scores": scores,
        "data": [{"object": "score", "index": i, "score": value} for i, value in enumerate(scores)],
    }
