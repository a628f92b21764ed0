"""The one runtime every entry point builds from `Settings`: the loaded model, its engine, the
collections, and the answer model (the generator).

    runtime = Runtime(settings)     # nothing loaded yet; collections open on first use
    runtime.load_model()            # the Embedder, every model setting applied, and the generator
                                    # (rag/factory.py; None when none is configured) (Modal snapshots here)
    runtime.start()                 # the engine's threads; loads the model first if needed
    ...                             # runtime.embeddings, runtime.collections, runtime.asks, runtime.generator
    runtime.close()                 # closes the generator too

`pagelens serve`, the embedded CLI (`pagelens embed`, `index add`, `search`, `demo`) and the Modal
app all go through here, so a setting means the same thing wherever it is given.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pagelens.errors import ModelNotReady
from pagelens.service.ask import AskService
from pagelens.service.collections import CollectionService
from pagelens.service.embeddings import EmbeddingService, OutputDtype
from pagelens.settings import Settings

if TYPE_CHECKING:
    from pagelens.engine import Engine, EngineConfig
    from pagelens.index.collections import Collections
    from pagelens.models.embedder import EmbedderInfo
    from pagelens.rag.generator import Generator
    from pagelens.service.jobs import JobService

log = logging.getLogger(__name__)


def load_embedder(settings: Settings):
    """Load the model the settings name, with every model setting (device, dtype, attention,
    revision, family, threads, pooling, int8, compile, hub token)."""
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
        token=settings.hf_token,
    )


def fetch_model(settings: Settings) -> None:
    """Download the settings' model (and an adapter's base model) into the hub cache, without loading it."""
    from pagelens.models.checkpoints import resolve_checkpoint

    resolve_checkpoint(settings.model, settings.revision, token=settings.hf_token)


class Runtime:
    """Settings -> model + engine + collections, with one lifecycle.

    `collections` (an index `Collections`) replaces the ones the settings describe (tests, or an
    application that opens its own); `generator` the answer model the settings describe (the
    runtime closes it all the same)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        collections: Collections | None = None,
        generator: Generator | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.embedder: Any = None
        self.engine: Engine | None = None
        self.embeddings: EmbeddingService | None = None
        self.collections = CollectionService(self.settings, self.ready_embeddings, collections=collections)
        self.generator: Generator | None = generator
        self._generator_built = generator is not None
        self.asks = AskService(self.settings, self.collections, lambda: self.generator)
        self._jobs: JobService | None = None

    @property
    def jobs(self) -> JobService:
        """The ingest jobs (service/jobs.py), set up on first use: before any collection opens, so
        that the pages of interrupted jobs are kept for them to resume."""
        if self._jobs is None:
            from pagelens.service.jobs import JobService

            self._jobs = JobService(self.settings, self.collections)
        return self._jobs

    # ------------------------------------------------------------------ lifecycle
    def load_model(self) -> Any:
        """Load the model and build the generator (once each); no threads start, so a process snapshot
        may be taken after this."""
        if self.embedder is None:
            self.embedder = load_embedder(self.settings)
        self.load_generator()
        return self.embedder

    def load_generator(self) -> Generator | None:
        """The answer model: one given (or set as `runtime.generator`) first, else the settings' (rag/factory.py),
        built once; None when none is configured."""
        if self.generator is None and not self._generator_built:
            from pagelens.rag.factory import build_generator

            self.generator = build_generator(self.settings)
            if self.generator is not None:
                log.info("answering with %s", self.generator.model or self.settings.llm_url)
        self._generator_built = True
        return self.generator

    def start(self, embedder: Any = None, *, engine_config: EngineConfig | None = None) -> Runtime:
        """Start the engine over `embedder` (anything with the engine's Backend methods plus `info`
        and `device`; default: the settings' model, loaded now if it is not yet)."""
        from pagelens.engine import Engine, EngineConfig

        if self.engine is not None:
            return self
        if embedder is not None:
            self.embedder = embedder
        embedder = self.load_model()  # the generator too
        config = engine_config or EngineConfig.for_backend(embedder, **self.settings.engine_overrides())
        self.engine = Engine(embedder, config).start()
        self.embeddings = EmbeddingService(
            self.engine, embedder.info, max_inputs_per_request=self.settings.max_inputs_per_request
        )
        log.info("serving %s", embedder.info)
        return self

    def close(self) -> None:
        """Suspend the ingest jobs, stop the engine, close the generator and the collections (idempotent).
        Call it from a thread with no running event loop (the server's lifespan runs it in a worker thread)."""
        if self._jobs is not None:
            self._jobs.close()
        if self.engine is not None:
            self.engine.close()
        generator, self.generator = self.generator, None
        if generator is not None:
            try:
                asyncio.run(generator.aclose())
            except Exception:  # closing must not stop the rest of the shutdown
                log.exception("the answer model did not close cleanly")
        self.collections.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ state
    @property
    def info(self) -> EmbedderInfo | None:
        """The loaded model's info (None before `load_model`)."""
        return None if self.embedder is None else self.embedder.info

    @property
    def ready(self) -> bool:
        return self.embeddings is not None and self.embeddings.ready

    def ready_embeddings(self) -> EmbeddingService:
        """The embedding service; `ModelNotReady` while the model is not loaded or the engine is down."""
        if self.embeddings is None or not self.embeddings.ready:
            raise ModelNotReady("the model is not loaded or the engine has stopped")
        return self.embeddings

    # ------------------------------------------------------------------ library use (blocking)
    def embed_images(self, images: Sequence[Any], *, dtype: OutputDtype = "float32") -> list[np.ndarray]:
        """Embed PIL images or encoded image bytes, in order: `(n_tokens, dim)` (single-vector:
        `(dim,)`) arrays of `dtype`. `InvalidInput.index` names a bad input."""
        return self._engine().embed_images(images, dtype=dtype)

    def embed_queries(self, queries: Sequence[str], *, dtype: OutputDtype = "float32") -> list[np.ndarray]:
        """Embed query texts, in order, like `embed_images`."""
        return self._engine().embed_queries(queries, dtype=dtype)

    def _engine(self) -> Engine:
        self.ready_embeddings()
        assert self.engine is not None
        return self.engine


def load(model: str, **settings: Any) -> Runtime:
    """A started runtime for `model` (hub id or directory): `embed_images` / `embed_queries` ready.
    Keyword arguments are `Settings` fields (device, dtype, pool_factor, ...); `PAGELENS_*`
    variables fill the rest. Close it (or use it as a context manager) to stop its threads."""
    return Runtime(Settings(model=model, **settings)).start()
