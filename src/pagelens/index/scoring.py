"""Pure late-interaction (MaxSim) scoring, no storage involved.

For a query `Q` of shape (q, d) and a page `P` of shape (p, d), MaxSim is
sum over query vectors of the best dot product with any page vector: `sum_i max_j Q[i] . P[j]`.
Arrays that do not fit raise `InvalidInput` (a 400), naming the page's position when it is known.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pagelens.errors import InvalidInput


def maxsim(query: np.ndarray, page: np.ndarray, *, index: int | None = None) -> float:
    """MaxSim of one query `(q, d)` against one page `(p, d)`, p >= 1, computed in float32; `index`: the
    page's position, named in errors."""
    if query.ndim != 2:
        raise InvalidInput(f"query embedding has shape {query.shape}; MaxSim needs (q, d)")
    if page.ndim != 2 or page.shape[0] == 0:
        raise InvalidInput(f"page embedding has shape {page.shape}; MaxSim needs (p, d) with p >= 1", index=index)
    if page.shape[1] != query.shape[1]:
        raise InvalidInput(
            f"page embedding has dim {page.shape[1]}, the query {query.shape[1]}; they must match", index=index
        )
    similarities = query.astype(np.float32) @ page.astype(np.float32).T
    return float(similarities.max(axis=1).sum())


def maxsim_scores(query: np.ndarray, pages: Sequence[np.ndarray]) -> np.ndarray:
    """MaxSim of one query against each page: float32 array of shape (len(pages),)."""
    return np.array([maxsim(query, page, index=i) for i, page in enumerate(pages)], dtype=np.float32)
