"""Streaming similarity: chunked results equal the dense computation exactly."""

from __future__ import annotations

import numpy as np
import pytest

from tselect.similarity import ArraySimilarity, FeatureSimilarity, column_max, cosine, l2_normalize, topk_per_query


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


def full_sort_topk(s: np.ndarray, k: int, exclude=None):
    """Reference: per row, columns by (value desc, index asc), excluded columns dropped."""
    cols = np.arange(s.shape[1]) if exclude is None else np.flatnonzero(~exclude)
    idx = np.stack([cols[np.lexsort((cols, -row[cols]))][:k] for row in s])
    return np.take_along_axis(s, idx, axis=1), idx


@pytest.mark.parametrize("chunk", [1, 4, 13, 1000])
@pytest.mark.parametrize("k", [1, 5, 30, 200])
def test_topk_with_exclusions_and_adversarial_orders(chunk, k):
    rng = np.random.default_rng(2)
    base = rng.integers(0, 5, size=(6, 200)).astype(np.float32)  # ties everywhere
    rising = np.tile(np.arange(200, dtype=np.float32), (6, 1))  # every column beats the k-th
    exclude = rng.random(200) < 0.2
    for s in (base, rising, -rising):
        for ex in (None, exclude):
            vals, idx = topk_per_query(ArraySimilarity(s, chunk_rows=chunk), k, exclude=ex)
            want_v, want_i = full_sort_topk(s, k, ex)
            assert idx.tolist() == want_i.tolist() and vals.tolist() == want_v.tolist()


def test_topk_edge_sizes():
    s = np.arange(12, dtype=np.float32).reshape(3, 4)
    vals, idx = topk_per_query(ArraySimilarity(s, chunk_rows=3), 0)
    assert vals.shape == idx.shape == (3, 0)
    vals, idx = topk_per_query(ArraySimilarity(s, chunk_rows=3), 10)  # more than the pool
    assert idx.tolist() == [[3, 2, 1, 0]] * 3
    _, idx = topk_per_query(ArraySimilarity(s), 2, exclude=np.array([False, True, True, True]))
    assert idx.tolist() == [[0]] * 3  # only one row left


def test_feature_pass_records_column_max():
    rng = np.random.default_rng(3)
    pool, query = l2_normalize(rng.normal(size=(50, 6))), l2_normalize(rng.normal(size=(5, 6)))
    sim = FeatureSimilarity([pool], [query], [1.0], chunk_rows=8)
    assert sim.cached_column_max() is None
    dense = sim.dense()  # a finished pass
    np.testing.assert_array_equal(sim.cached_column_max(), dense.max(axis=0))
    np.testing.assert_array_equal(column_max(sim), dense.max(axis=0))


def test_abandoned_pass_records_nothing():
    rng = np.random.default_rng(4)
    sim = FeatureSimilarity([l2_normalize(rng.normal(size=(30, 4)))], [l2_normalize(rng.normal(size=(2, 4)))],
                            [1.0], chunk_rows=7)
    for _ in sim.chunks():
        break
    assert sim.cached_column_max() is None


def test_torch_and_numpy_backends_agree(monkeypatch):
    pytest.importorskip("torch")
    from tselect import similarity as simmod

    rng = np.random.default_rng(5)
    pools = [l2_normalize(rng.normal(size=(40, d))) for d in (7, 3)]
    queries = [l2_normalize(rng.normal(size=(6, d))) for d in (7, 3)]
    numpy_dense = FeatureSimilarity(pools, queries, [0.25, 0.75], chunk_rows=9).dense()
    monkeypatch.setattr(simmod, "TORCH_MIN_FLOP", 0.0)
    torch_dense = FeatureSimilarity(pools, queries, [0.25, 0.75], chunk_rows=9).dense()
    np.testing.assert_allclose(torch_dense, numpy_dense, rtol=1e-6, atol=1e-6)


def test_zarr_pool_is_read_in_whole_storage_chunks(tmp_path):
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(6)
    rows = l2_normalize(rng.normal(size=(100, 8))).astype(np.float16)
    arr = zarr.open_group(str(tmp_path / "g"), mode="a").create_array(
        "pool", shape=rows.shape, chunks=(16, 8), dtype="float16", compressors=None)
    arr[:] = rows
    query = l2_normalize(rng.normal(size=(3, 8)))
    sim = FeatureSimilarity([arr], [query], [1.0], chunk_rows=20)
    assert sim.chunk_rows == 32
    np.testing.assert_allclose(sim.dense(), query @ rows.astype(np.float32).T, rtol=1e-6, atol=1e-6)
