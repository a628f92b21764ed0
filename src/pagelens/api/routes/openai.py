"""`POST /v1/embeddings`: OpenAI-style embeddings; data-URI images and query strings may mix.

Multi-vector outputs keep their shape: with `encoding_format: base64` each item is the raw
little-endian buffer plus `shape` and `dtype`; with `float` a nested list plus `shape`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Request

from pagelens.api.json_body import json_body, openapi_body
from pagelens.api.openapi import EMBEDDING_ERRORS, error_responses
from pagelens.api.protocol import OpenAIEmbeddingsRequest, OpenAIEmbeddingsResponse
from pagelens.api.routes.common import Service, request_timings, timing_encode
from pagelens.codecs.outputs import encode_base64_array, to_nested_lists
from pagelens.codecs.payloads import is_image_data_uri
from pagelens.errors import InvalidInput, PagelensError

router = APIRouter(tags=["OpenAI-style"], responses=error_responses(*EMBEDDING_ERRORS))


async def _embed_subset(coroutine, positions: list[int]):
    """Run one kind's embedding; an error's index is mapped back to the position in `input`."""
    try:
        return await coroutine
    except PagelensError as error:
        if error.index is not None and error.index < len(positions):
            raise error.with_index(positions[error.index]) from None
        raise


@router.post(
    "/v1/embeddings",
    response_model=None,
    responses={200: {"model": OpenAIEmbeddingsResponse}},
    openapi_extra=openapi_body(OpenAIEmbeddingsRequest),
)
async def openai_embeddings(
    body: Annotated[OpenAIEmbeddingsRequest, json_body(OpenAIEmbeddingsRequest)], request: Request, service: Service
):
    timings = request_timings(request)
    inputs = [body.input] if isinstance(body.input, str) else body.input
    if not inputs:
        raise InvalidInput("input is empty")
    service.check_input_count(len(inputs))  # images and queries share the limit
    image_positions = [i for i, value in enumerate(inputs) if is_image_data_uri(value)]
    text_positions = [i for i, value in enumerate(inputs) if not is_image_data_uri(value)]
    dtype = body.embed_dtype
    images_b64 = [inputs[i] for i in image_positions]
    for i in image_positions:
        inputs[i] = None  # the service drops each base64 string once decoded; keep no other reference
    image_job = service.embed_images(images_b64, dtype=dtype, timings=timings, release_inputs=True)
    text_job = service.embed_queries([inputs[i] for i in text_positions], dtype=dtype, timings=timings)
    images, texts = await asyncio.gather(
        _embed_subset(image_job, image_positions), _embed_subset(text_job, text_positions)
    )
    arrays: list = [None] * len(inputs)
    for position, array in zip(image_positions, images, strict=True):
        arrays[position] = array
    for position, array in zip(text_positions, texts, strict=True):
        arrays[position] = array
    with timing_encode(timings):
        data = []
        for index, array in enumerate(arrays):
            if body.encoding_format == "base64":
                item = encode_base64_array(array)
                embedding = item["data"]
            else:
                embedding = to_nested_lists(array, index=index)
            data.append(
                {"object": "embedding", "index": index, "embedding": embedding,
                 "shape": list(array.shape), "dtype": str(array.dtype)}
            )  # fmt: skip
        vectors = sum(array.shape[0] if array.ndim == 2 else 1 for array in arrays)
        return {
            "object": "list",
            "data": data,
            "model": body.model or service.info.model,
            "usage": {"prompt_tokens": vectors, "total_tokens": vectors},
        }
