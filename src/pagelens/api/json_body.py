"""JSON request bodies for the embedding routes: one buffer, one orjson parse, off the event loop.

FastAPI's own body parsing keeps the streamed chunks and their join (2 x the body), keeps the
joined bytes cached on the request for the whole request, parses with `json` on the event loop,
then validates there too. A 60 MB body of base64 images cost ~180 MB traced and stalled /health
for the parse. Here the chunks go into one bytearray, which orjson parses in a worker thread and
which is emptied right after, so at any time the request holds the body once (as bytes, then as
Python strings), and the event loop only waits.

`json_body(Model)` is the dependency: `body: Annotated[Model, json_body(Model)]`. Errors are the
`RequestValidationError`s FastAPI raises itself (the app renders them as 400 `invalid_input`), and
the route's OpenAPI entry still shows the model as its JSON request body.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import orjson
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def _validated(model: type[Model], buffer: bytearray) -> Model:
    """`buffer` parsed and validated as `model`; the buffer is emptied either way (its memory freed)."""
    try:
        if not buffer:
            raise RequestValidationError(
                [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
            )
        try:
            data = orjson.loads(buffer)
        except orjson.JSONDecodeError as error:
            raise RequestValidationError(
                [{"type": "json_invalid", "loc": ("body", error.pos), "msg": "JSON decode error",
                  "input": {}, "ctx": {"error": error.msg}}]
            ) from None  # fmt: skip
    finally:
        buffer.clear()
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise RequestValidationError(
            [{**item, "loc": ("body", *item["loc"])} for item in error.errors(include_url=False)]
        ) from None


def json_body(model: type[Model]) -> Any:
    """A dependency reading the request body as JSON into `model` (see the module docstring)."""

    async def parse(request: Request) -> Model:
        buffer = bytearray()
        async for chunk in request.stream():
            buffer += chunk
        return await asyncio.to_thread(_validated, model, buffer)

    return Depends(parse)


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose body `json_body` reads: the model's schema as its JSON body."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", None)
    if definitions:
        raise ValueError(f"{model.__name__} has nested models; list them in the app's components")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
