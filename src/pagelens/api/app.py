"""The FastAPI app factory: routers, error handlers, middleware, and the model's lifecycle."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse

from pagelens import __version__
from pagelens.api.errors import install_error_handlers
from pagelens.api.metrics import Metrics
from pagelens.api.middleware import ApiKeyAuth, BodyLimit, Observe
from pagelens.api.routes import collections, morphik, openai, score, seed004, system
from pagelens.serving import EmbeddingService
from pagelens.settings import Settings

log = logging.getLogger(__name__)


def load_embedder(settings: Settings):
    """Load the model the settings name (device, dtype, attention, family, threads, pooling, variants)."""
    from pagelens.models import Embedder

    return Embedder.load(
        settings.model,
        device=settings.device,
        dtype=settings.dtype,
        attn=settings.attn,
        revision=settings.revision,
        family=settings.family,
        threads=settings.threads,
        pool_factor=settings.pool_factor,
        quantize=settings.quantize,
        compile=settings.compile,
    )


def start_service(settings: Settings, embedder) -> EmbeddingService:
    """Start an engine over a loaded embedder, with the settings' batching and limits."""
    from pagelens.engine import Engine, EngineConfig

    config = EngineConfig.for_device(embedder.device.type, **settings.engine_overrides())
    engine = Engine(embedder, config).start()
    return EmbeddingService(engine, embedder.info, max_inputs_per_request=settings.max_inputs_per_request)


def load_service(settings: Settings) -> EmbeddingService:
    """Load the model and start its engine, as the settings say."""
    return start_service(settings, load_embedder(settings))


def create_app(settings: Settings | None = None, *, service: EmbeddingService | None = None) -> FastAPI:
    """The pagelens ASGI app. With `service`, it serves that (tests, embedding in another app);
    without, it loads the model from `settings` at start-up and stops the engine at shutdown."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = None
        if app.state.service is None:
            loaded = await asyncio.to_thread(load_service, settings)
            app.state.service = loaded
            log.info("serving %s", loaded.info)
        try:
            yield
        finally:
            if loaded is not None:
                loaded.engine.close()
            if getattr(app.state, "collections", None) is not None:
                app.state.collections.close()

    app = FastAPI(
        title="pagelens",
        version=__version__,
        description="ColPali-family embeddings: morphik-core, seed 004 and OpenAI-style routes.",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
        swagger_ui_parameters={"syntaxHighlight": False},  # huge embedding payloads freeze highlighting
    )
    app.state.service = service
    app.state.settings = settings
    app.state.collections = None  # opened on first use, under settings.data_dir
    metrics = Metrics(lambda: app.state.service.engine if app.state.service is not None else None)
    app.state.metrics = metrics
    install_error_handlers(app, on_error=metrics.on_error)
    for module in (morphik, seed004, openai, score, collections, system):
        app.include_router(module.router)
    # added last = outermost: observe -> auth -> body limit -> routes
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, on_error=metrics.on_error)
    if settings.api_key:
        app.add_middleware(ApiKeyAuth, api_key=settings.api_key, on_error=metrics.on_error)
    app.add_middleware(Observe, on_request=metrics.on_request)
    return app
