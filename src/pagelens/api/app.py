"""The FastAPI app factory: routers, error handlers, middleware, the OpenAPI document and docs page,
and the runtime's lifecycle."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse

from pagelens import __version__
from pagelens.api.docs import ASSET_PATHS, install_docs
from pagelens.api.errors import install_error_handlers
from pagelens.api.metrics import Metrics
from pagelens.api.middleware import ApiKeyAuth, BodyLimit, Observe
from pagelens.api.openapi import install_openapi
from pagelens.api.routes import ask, chat, collections, heatmaps, jobs, morphik, openai, score, seed004, system
from pagelens.api.security import OPENAPI_PATH, check_auth, open_paths
from pagelens.api.ui import UI_PATHS, install_ui
from pagelens.service import Runtime
from pagelens.settings import Settings


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """The pagelens ASGI app. With `runtime`, it serves that one (tests, Modal, embedding in another
    app; its owner closes it); without, it builds one from `settings`, loads the model at start-up
    and closes it at shutdown. Settings with no API key are refused (`AuthNotConfigured`) unless
    `no_auth` is set."""
    settings = runtime.settings if runtime is not None else (settings or Settings())
    check_auth(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        owned = None
        if runtime is None:
            owned = app.state.runtime
            jobs = owned.jobs  # before any collection opens: interrupted jobs keep their pages
            await asyncio.to_thread(owned.start)
            jobs.start()  # resume them, now that the model runs
        try:
            yield
        finally:
            if owned is not None:
                await asyncio.to_thread(owned.close)

    app = FastAPI(
        title="pagelens",
        version=__version__,
        description=(
            "ColPali-family embeddings in morphik-core's format, the /embed format and OpenAI-style; "
            "MaxSim scoring; collections of documents, search and ingest jobs."
        ),
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
        openapi_url=OPENAPI_PATH,
        docs_url=None,  # served by api/docs.py from packaged assets, not a CDN
        redoc_url=None,
    )
    app.state.runtime = runtime if runtime is not None else Runtime(settings)
    app.state.settings = settings
    caches = {
        "answer": ("Answers", lambda: app.state.runtime.asks.cache),
        "query": ("Query embeddings", lambda: app.state.runtime.collections.query_cache),
    }
    metrics = Metrics(
        lambda: app.state.runtime.engine, caches, recall_getter=lambda: app.state.runtime.collections.recall_report()
    )
    app.state.metrics = metrics
    install_error_handlers(app, on_error=metrics.on_error)
    for module in (morphik, seed004, openai, chat, score, collections, ask, heatmaps, jobs, system):
        app.include_router(module.router)
    install_docs(app)
    install_ui(app)
    unauthenticated = open_paths(settings, ASSET_PATHS)
    install_openapi(app, settings, unauthenticated)
    unauthenticated |= UI_PATHS  # the web page holds no data: it asks for the key
    # added last = outermost: observe -> auth -> body limit -> routes
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_body_bytes, timeout_seconds=settings.body_timeout_seconds,
        on_error=metrics.on_error, max_document_bytes=settings.max_document_bytes,
        max_score_bytes=settings.max_score_bytes,
    )  # fmt: skip
    if settings.api_key:
        app.add_middleware(
            ApiKeyAuth, api_key=settings.api_key, open_paths=unauthenticated, on_error=metrics.on_error,
            html_paths=frozenset({"/"}),
        )  # fmt: skip
    app.add_middleware(Observe, on_request=metrics.on_request)
    return app
