"""`POST /embed`: the /embed format of Hugging Face-style embedding servers (`images`, `texts`,
`normalize`; seed 004's)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Request

from pagelens.api.json_body import json_body, openapi_body
from pagelens.api.openapi import EMBEDDING_ERRORS, error_responses
from pagelens.api.protocol import Seed004EmbedRequest, Seed004EmbedResponse
from pagelens.api.routes.common import Service, request_timings, timing_encode
from pagelens.codecs.outputs import to_nested_lists

router = APIRouter(tags=["/embed format"], responses=error_responses(*EMBEDDING_ERRORS))


def _unit_rows(array: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    return array / np.maximum(norms, 1e-12)


@router.post(
    "/embed",
    response_model=None,
    responses={200: {"model": Seed004EmbedResponse}},
    openapi_extra=openapi_body(Seed004EmbedRequest),
)
async def embed(
    body: Annotated[Seed004EmbedRequest, json_body(Seed004EmbedRequest)], request: Request, service: Service
):
    """Embeddings of `images` (base64) then `texts` (queries), in that order.

    The models already L2-normalize every vector; `normalize: true` re-applies it (a no-op up to
    rounding), `false` returns the model output as is.
    """
    timings = request_timings(request)
    service.check_input_count(len(body.images) + len(body.texts))  # images and texts share the limit
    images = await service.embed_images(body.images, timings=timings, release_inputs=True) if body.images else []
    texts = await service.embed_queries(body.texts, timings=timings) if body.texts else []
    with timing_encode(timings):
        arrays = [*images, *texts]
        if body.normalize:
            arrays = [_unit_rows(array) for array in arrays]
        return {
            "embeddings": [to_nested_lists(array) for array in arrays],
            "dimension": service.info.dim,
            "multi_vector": service.info.multi_vector,
            "image_count": len(images),
            "text_count": len(texts),
            "shapes": [list(array.shape) for array in arrays],
            "normalized": body.normalize,
            "model": service.info.model,
        }
