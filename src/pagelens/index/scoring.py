"""Pure late-interaction (MaxSim) scoring, no storage involved.

For a query `Q` of shape (q, d) and a page `P` of shape (p, d), MaxSim is
sum over query vectors of the best dot product with any page vector: `sum_i max_j Q[i] . P[j]`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def maxsim(query: np.ndarray, page: np.ndarray) -> float:
    """MaxSim of one query `(q, d)` against one page `(p, d)`, computed in float32."""
    if query.ndim != 2 or page.ndim != 2 or query.shape[1] != page.shape[1]:
        raise ValueError(f"need (q, d) and (p, d) arrays with the same d, got {query.shape} and {page.shape}")
    similarities = query.astype(np.float32) @ page.astype(np.float32).T
    return float(similarities.max(axis=1).sum())


def maxsim_scores(query: np.ndarray, pages: Sequence[np.ndarray]) -> np.ndarray:
    """MaxSim of one query against each page: float32 array of shape (len(pages),)."""
    return np.array([maxsim(query, page) for page in pages], dtype=np.float32)
