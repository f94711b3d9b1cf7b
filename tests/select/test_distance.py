"""Subset–query distances: exact small cases, the Sinkhorn fallback, and streamed gathering."""

from __future__ import annotations

import numpy as np
import pytest

from tselect.select.distance import subset_query_distances, subset_similarity
from tselect.similarity import ArraySimilarity


def test_hand_computed_transport_coverage_and_chamfer():
    # cost = (1 − S)/2 = [[0, 0, .5], [.5, .5, 0]], masses 1/2 per query and 1/3 per row:
    # q0 fills rows 0, 1 at cost 0; q1 takes row 2 (1/3 at 0) and 1/6 more at .5 → 1/12.
    out = subset_query_distances(np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    assert out["ot_solver"] == "emd"
    assert out["ot"] == pytest.approx(1 / 12)
    assert out["coverage"] == 1.0 and out["chamfer"] == 1.0


def test_coverage_and_chamfer_are_the_two_directions_of_nearest_similarity():
    sim = np.array([[0.5, 0.25], [0.0, 1.0], [0.75, 0.0]])
    out = subset_query_distances(sim)
    assert out["coverage"] == pytest.approx((0.5 + 1.0 + 0.75) / 3)  # per query, best row
    assert out["chamfer"] == pytest.approx((0.75 + 1.0) / 2)  # per row, best query


def test_subset_on_the_queries_has_zero_transport_cost():
    assert subset_query_distances(np.eye(3))["ot"] == pytest.approx(0.0, abs=1e-12)


def test_sinkhorn_fallback_is_close_to_the_exact_cost():
    rng = np.random.default_rng(0)
    sim = rng.uniform(-1, 1, size=(12, 20))
    exact = subset_query_distances(sim)
    approx = subset_query_distances(sim, exact_max_cells=0)
    assert approx["ot_solver"] == "sinkhorn"
    assert exact["ot"] <= approx["ot"] + 1e-9 and approx["ot"] == pytest.approx(exact["ot"], abs=0.02)


def test_empty_subset_is_an_error():
    with pytest.raises(ValueError, match="non-empty subset"):
        subset_query_distances(np.zeros((3, 0)))


def test_subset_similarity_streams_columns_in_the_given_order():
    rng = np.random.default_rng(1)
    sim = rng.standard_normal((4, 23)).astype(np.float32)
    idx = np.array([22, 0, 7, 8, 3, 15])
    got = subset_similarity(ArraySimilarity(sim, chunk_rows=5), idx)
    np.testing.assert_array_equal(got, sim[:, idx])
    assert subset_similarity(ArraySimilarity(sim), np.array([], dtype=np.int64)).shape == (4, 0)
