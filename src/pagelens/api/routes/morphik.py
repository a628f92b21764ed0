"""`POST /embeddings`: the wire format of morphik-core's ColpaliApiEmbeddingModel (and seed 001).

The default body is an .npz (`count`, `input_type`, `emb_0..`), since morphik's client sends
`Accept: */*` and parses npz; a client asking for application/json gets `{"embeddings": [...]}`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Request, Response

from pagelens.api.json_body import json_body, openapi_body
from pagelens.api.openapi import BINARY, EMBEDDING_ERRORS, error_responses
from pagelens.api.protocol import MorphikEmbeddingsJSON, MorphikEmbeddingsRequest
from pagelens.api.routes.common import Service, request_timings, timing_encode
from pagelens.codecs.outputs import JSON_MEDIA, NPZ_MEDIA, encode_npz, to_nested_lists, wants_json

router = APIRouter(tags=["morphik-core"], responses=error_responses(*EMBEDDING_ERRORS))


@router.post(
    "/embeddings",
    response_class=Response,
    responses={
        200: {
            "model": MorphikEmbeddingsJSON,
            "content": {NPZ_MEDIA: BINARY},
            "description": "npz (`count`, `input_type`, `emb_0..`) by default; JSON with `Accept: application/json`",
        }
    },
    openapi_extra=openapi_body(MorphikEmbeddingsRequest),
)
async def morphik_embeddings(
    body: Annotated[MorphikEmbeddingsRequest, json_body(MorphikEmbeddingsRequest)],
    request: Request,
    service: Service,
    dtype: Literal["float32", "float16"] = "float32",
) -> Response:
    """Embed base64 page images (`input_type: image`) or queries (`input_type: text`), in order."""
    timings = request_timings(request)
    if body.input_type == "image":
        # the body's strings are dropped as they are decoded (the route reads no input afterwards)
        arrays = await service.embed_images(body.inputs, dtype=dtype, timings=timings, release_inputs=True)
    else:
        arrays = await service.embed_queries(body.inputs, dtype=dtype, timings=timings)
    with timing_encode(timings):
        if wants_json(request.headers.get("accept")):
            content = orjson.dumps({"embeddings": [to_nested_lists(array, index=i) for i, array in enumerate(arrays)]})
            return Response(content, media_type=JSON_MEDIA)
        return Response(encode_npz(arrays, input_type=body.input_type), media_type=NPZ_MEDIA)
