"""Streaming similarity: chunked results equal the dense computation exactly."""

from __future__ import annotations

import numpy as np
import pytest

from tselect.select.similarity import ArraySimilarity, FeatureSimilarity, column_max, cosine, l2_normalize, topk_per_query


def test_cosine_exact_small():
    q = np.array([[1.0, 0.0], [0.0, 2.0]])
    p = np.array([[3.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    s = cosine(q, p)
    np.testing.assert_allclose(s, [[1.0, 2 ** -0.5, 0.0], [0.0, 2 ** -0.5, 0.0]], atol=1e-7)


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_weighted_checkpoints_match_dense(chunk):
    rng = np.random.default_rng(0)
    pools = [l2_normalize(rng.normal(size=(20, d))) for d in (5, 3)]
    queries = [l2_normalize(rng.normal(size=(4, d))) for d in (5, 3)]
    w = [0.7, 0.3]
    sim = FeatureSimilarity(pools, queries, w, chunk_rows=chunk)
    want = 0.7 * queries[0] @ pools[0].T + 0.3 * queries[1] @ pools[1].T
    np.testing.assert_allclose(sim.dense(), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(column_max(sim), want.max(0), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("chunk", [2, 5, 100])
def test_topk_matches_full_sort_with_ties_to_lower_index(chunk):
    rng = np.random.default_rng(1)
    s = rng.integers(0, 4, size=(5, 40)).astype(np.float32)  # many ties
    vals, idx = topk_per_query(ArraySimilarity(s, chunk_rows=chunk), 9)
    for r in range(5):
        want = np.lexsort((np.arange(40), -s[r]))[:9]
        assert idx[r].tolist() == want.tolist()
        assert vals[r].tolist() == s[r, want].tolist()


def test_zero_rows_stay_zero():
    assert np.all(l2_normalize(np.zeros((2, 3))) == 0)
