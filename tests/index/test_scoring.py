"""MaxSim on plain arrays: the definition, and typed 400s naming the page for arrays that do not fit."""

from __future__ import annotations

import numpy as np
import pytest

from pagelens.errors import InvalidInput
from pagelens.index.scoring import maxsim, maxsim_scores

rng = np.random.default_rng(3)
QUERY = rng.standard_normal((5, 8)).astype(np.float32)
PAGES = [rng.standard_normal((n, 8)).astype(np.float16) for n in (1, 4, 9)]


def test_maxsim_is_the_sum_of_each_query_vectors_best_dot_product():
    for page in PAGES:
        best = [max(float(q @ p.astype(np.float32)) for p in page) for q in QUERY]
        assert maxsim(QUERY, page) == pytest.approx(sum(best), rel=1e-5)
    scores = maxsim_scores(QUERY, PAGES)
    assert scores.dtype == np.float32 and scores.shape == (3,)
    np.testing.assert_allclose(scores, [maxsim(QUERY, page) for page in PAGES], rtol=1e-6)


@pytest.mark.parametrize(
    ("page", "fragment"),
    [
        (np.zeros((0, 8), np.float32), "p >= 1"),
        (np.zeros(8, np.float32), "shape \\(8,\\)"),
        (np.zeros((2, 8, 1), np.float32), "needs \\(p, d\\)"),
        (np.zeros((2, 6), np.float32), "dim 6, the query 8"),
    ],
)
def test_a_page_that_does_not_fit_is_invalid_input_naming_its_position(page, fragment):
    with pytest.raises(InvalidInput, match=fragment) as raised:
        maxsim(QUERY, page)
    assert raised.value.index is None and raised.value.http_status == 400
    with pytest.raises(InvalidInput, match=fragment) as raised:
        maxsim_scores(QUERY, [*PAGES, page])
    assert raised.value.index == 3


def test_a_query_that_is_not_a_matrix_is_invalid_input():
    with pytest.raises(InvalidInput, match="query embedding has shape \\(8,\\)") as raised:
        maxsim(QUERY[0], PAGES[0])
    assert raised.value.index is None
