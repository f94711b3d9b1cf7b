"""uot's candidate mode reads the pool once: the column cache against a brute-force union."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tselect.select import uot
from tselect.select.distance import subset_similarity
from tselect.select.inputs import SelectInputs
from tselect.select.uot import ColumnCache, UOTParams, candidate_block, select_uot, uot_scores
from tselect.similarity import ArraySimilarity
from tests.select.helpers import random_inputs


class CountingSimilarity(ArraySimilarity):
    """ArraySimilarity that counts full passes (calls of chunks())."""

    passes = 0

    def chunks(self):
        self.passes += 1
        yield from super().chunks()


def brute_union(sim: np.ndarray, width: int, max_cells: int) -> np.ndarray:
    """The candidate union written out: halve width until M·|U| ≤ max_cells."""
    idx = np.lexsort((np.broadcast_to(np.arange(sim.shape[1]), sim.shape), -sim), axis=1)  # ties: lower index
    while True:
        cols = np.unique(idx[:, :width])
        if sim.shape[0] * cols.size <= max_cells or width <= 1:
            return cols
        width //= 2


def quantized(seed: int, m: int, n: int, levels: int) -> np.ndarray:
    """S [M, N] with many exact ties (values on a grid of `levels`)."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, levels, size=(m, n)) / levels).astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("chunk_rows", [1, 7, 64])
@pytest.mark.parametrize("levels", [5, 1000])
def test_cache_holds_every_row_of_the_final_top_width_union(seed, chunk_rows, levels):
    sim = quantized(seed, 6, 200, levels)
    for width in (1, 3, 10):
        cache = ColumnCache(6, width, cells=10**9)
        for start, block in ArraySimilarity(sim, chunk_rows=chunk_rows).chunks():
            cache.push(start, block)
        cols = brute_union(sim, width, 10**9)
        np.testing.assert_array_equal(cache.gather(cols), sim[:, cols])
        assert np.all(np.diff(cache.idx[0]) > 0)  # sorted, no repeats


def test_cache_halves_its_width_to_stay_within_its_cells_and_gives_up_at_zero():
    sim = quantized(1, 4, 500, 1000)
    cache = ColumnCache(4, 64, cells=4 * 2 * 40)  # room for 40 rows after a prune
    for start, block in ArraySimilarity(sim, chunk_rows=50).chunks():
        cache.push(start, block)
        assert 4 * cache.size <= 4 * 2 * 40  # pruned (and narrowed) as soon as it overflows
    assert 1 <= cache.width < 64
    cols = brute_union(sim, cache.width, 10**9)
    np.testing.assert_array_equal(cache.gather(cols), sim[:, cols])
    tiny = ColumnCache(4, 8, cells=1)
    tiny.push(0, sim[:, :10])
    assert tiny.width == 0 and tiny.size == 0


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("chunk_rows", [16, 100, 1000])
def test_candidate_block_is_one_pass_and_equals_the_gathered_union(seed, chunk_rows):
    sim = random_inputs(n=400, m=5, seed=seed).sim.sim
    counted = CountingSimilarity(sim, chunk_rows=chunk_rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cols, block = candidate_block(counted, 40, 5 * 60)
    assert counted.passes == 1
    np.testing.assert_array_equal(cols, brute_union(sim, 40, 5 * 60))
    np.testing.assert_array_equal(block, sim[:, cols])


def test_candidate_block_falls_back_to_a_second_pass_with_the_same_block(monkeypatch):
    sim = random_inputs(n=400, m=5, seed=2).sim.sim
    monkeypatch.setattr(uot, "CACHE_FACTOR", 0)  # no room: the cache gives up at once
    counted = CountingSimilarity(sim, chunk_rows=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cols, block = candidate_block(counted, 40, 5 * 60)
    assert counted.passes == 2
    np.testing.assert_array_equal(block, subset_similarity(ArraySimilarity(sim), cols))


def test_candidate_mode_head_is_pot_on_the_union_then_max_similarity():
    sim = random_inputs(n=300, m=4, seed=5).sim.sim
    params = UOTParams(candidates=30, max_cells=4 * 70)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        order = select_uot(SelectInputs(n_pool=300, sim=ArraySimilarity(sim, chunk_rows=32)), 300, params, 0)
    cols = brute_union(sim, 30, 4 * 70)
    score = uot_scores((1.0 - sim[:, cols].astype(np.float64)) / 2.0, 1 / 300, params)
    head = cols[np.lexsort((cols, -score))]
    rest = np.setdiff1d(np.arange(300), head)
    tail = rest[np.lexsort((rest, -sim.max(axis=0)[rest]))]
    assert order.tolist() == np.concatenate([head, tail]).tolist()


def test_candidate_mode_is_deterministic_and_independent_of_the_chunk_size():
    sim = random_inputs(n=500, m=6, seed=3).sim.sim
    params = UOTParams(candidates=64, max_cells=6 * 100)
    outs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for chunk_rows in (13, 13, 128, 500):
            inp = SelectInputs(n_pool=500, sim=ArraySimilarity(sim, chunk_rows=chunk_rows))
            outs.append(select_uot(inp, 200, params, 0).tobytes())
    assert len(set(outs)) == 1
