"""pagelens: serve ColPali-family embedding models.

import pagelens
with pagelens.load("vidore/colqwen2.5-v0.2") as model:   # a started pagelens.service.Runtime
    pages = model.embed_images([image, ...])            # [(n_tokens, 128) float32, ...]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pagelens.service import Runtime

__version__ = "0.1.0"


def load(model: str, **settings: Any) -> Runtime:
    """Load `model` (hub id or directory) and start its engine; keyword arguments are settings
    (device, dtype, pool_factor, ...). See `pagelens.service.load`."""
    from pagelens.service import load as load_runtime

    return load_runtime(model, **settings)
