"""`GET /health` (no auth), `GET /` (server and model info), `GET /metrics` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import ORJSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from pagelens import __version__
from pagelens.api.openapi import error_responses
from pagelens.api.protocol import Health, HealthUnavailable, ServerInfo
from pagelens.api.routes.common import get_runtime
from pagelens.api.ui import prefers_html, root_page

router = APIRouter(tags=["system"], responses=error_responses())
ROUTES = [
    "/embeddings",
    "/embed",
    "/v1/embeddings",
    "/v1/chat/completions",
    "/v1/models",
    "/score",
    "/collections",
    "/jobs",
    "/health",
    "/metrics",
    "/docs",
    "/ui",
]


@router.get(
    "/health",
    response_model=None,
    responses={200: {"model": Health}, 503: {"model": HealthUnavailable, "description": "model not loaded"}},
)
async def health(request: Request):
    """200 when the model is loaded and the engine alive, else 503."""
    runtime = get_runtime(request)
    if not runtime.ready:
        return ORJSONResponse({"status": "unavailable", "model_loaded": runtime.info is not None}, status_code=503)
    return {"status": "ok", "model": runtime.info.model, "queue_depth": runtime.engine.queue_depth}


@router.get("/", response_model=None, responses={200: {"model": ServerInfo}})
async def server_info(request: Request):
    """Server and model info; a browser (Accept: text/html) gets a page linking to the web page (/ui)."""
    if prefers_html(request.headers.get("accept")):
        return root_page(request.scope.get("root_path", ""))
    runtime = get_runtime(request)
    return {
        "name": "pagelens",
        "version": __version__,
        "ready": runtime.ready,
        "model": runtime.info.as_dict() if runtime.info is not None else None,
        "routes": ROUTES,
    }


@router.get(
    "/metrics",
    response_class=Response,  # a text/plain response class would declare the error bodies as text/plain too
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
