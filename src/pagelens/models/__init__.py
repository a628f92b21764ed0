"""Model loading over colpali-engine: family registry, checkpoint resolution, the Embedder."""

from pagelens.models.embedder import Embedder, EmbedderInfo, Prepared
from pagelens.models.families import FAMILIES, Family, detect_family, get_family, supported_families

__all__ = [
    "FAMILIES",
    "Embedder",
    "EmbedderInfo",
    "Family",
    "Prepared",
    "detect_family",
    "get_family",
    "supported_families",
]
