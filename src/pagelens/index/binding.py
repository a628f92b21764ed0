"""The model a collection is bound to: recorded when the collection is created, checked whenever
a model embeds pages into it or queries for it.

Vectors from two models live in different spaces, so a query embedded by one model scored against
pages embedded by another gives confident, meaningless scores. The record names the model and
what shapes its vectors take:

    {"model": "vidore/colqwen2.5-v0.2", "revision": null, "family": "colqwen2_5",
     "multi_vector": true, "dim": 128, "pool_factor": null}

On Qdrant Edge it is `<collection>/binding.json`; on a Qdrant server, the collection's metadata
(so every pagelens sharing that server sees it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pagelens.index.pages import PageSchema

BINDING_FILE = "binding.json"
METADATA_KEY = "pagelens_binding"


@dataclass(frozen=True)
class ModelBinding:
    """A model's identity (`model`, `revision`, `family`), its output kind (`multi_vector`, `dim`)
    and the token pooling its pages were stored with (`pool_factor`, None = unpooled)."""

    model: str
    revision: str | None
    family: str
    multi_vector: bool
    dim: int
    pool_factor: int | None = None

    @property
    def schema(self) -> PageSchema:
        return PageSchema(dim=self.dim, multi_vector=self.multi_vector)

    @property
    def output_kind(self) -> str:
        return f"{'multi-vector' if self.multi_vector else 'single-vector'} dim {self.dim}"

    def describe(self) -> str:
        revision = f"@{self.revision}" if self.revision else ""
        pooling = f", pool factor {self.pool_factor}" if self.pool_factor else ""
        return f"{self.model}{revision} ({self.family}, {self.output_kind}{pooling})"

    def space_differences(self, other: ModelBinding) -> list[str]:
        """How `other` embeds into a different vector space than this binding (empty: the same)."""
        fields = ("model", "revision", "family", "multi_vector", "dim")
        return [f"{name} {getattr(self, name)!r} vs {getattr(other, name)!r}" for name in fields
                if getattr(self, name) != getattr(other, name)]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: object) -> ModelBinding:
        """Parse a stored record; `ValueError` saying what is wrong with it."""
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, got {type(value).__name__}")
        try:
            binding = cls(**{name: value[name] for name in ("model", "revision", "family", "multi_vector", "dim")},
                          pool_factor=value.get("pool_factor"))  # fmt: skip
        except (KeyError, TypeError) as error:
            raise ValueError(f"missing or unexpected field: {error}") from None
        if not (isinstance(binding.model, str) and isinstance(binding.dim, int) and binding.dim > 0):
            raise ValueError("model must be a string and dim a positive integer")
        return binding


def model_reference(name: str) -> str:
    """How a binding names a model: hub ids as given, local directories as absolute paths (so
    `./ckpt` and `/srv/ckpt` name the same checkpoint)."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def read_binding_file(path: Path) -> ModelBinding | None:
    """The binding recorded at `path`; None when there is none. `ValueError` when unreadable."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    try:
        return ModelBinding.from_dict(json.loads(text))
    except ValueError as error:
        raise ValueError(f"{path} is not a valid binding record: {error}") from None
