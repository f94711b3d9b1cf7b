"""LESS matching: score_j = max over query subtasks of the mean similarity to that subtask.

LESS averages the influence over each subtask's validation examples and keeps the best
subtask, so one large subtask cannot drown out the others (unlike a mean over all queries)
and one outlier query cannot dominate (unlike a max over queries). Queries are grouped by
their label, wherever they sit in the file and however many each subtask has (LESS itself
needs equal, contiguous groups). Without labels all queries form one subtask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tselect.select.basic import order_by_score
from tselect.select.inputs import SelectInputs
from tselect.similarity import Similarity


def subtask_average(subtasks: Sequence[str] | None, m: int) -> np.ndarray:
    """[G, M] averaging matrix: row g holds 1/|g| on the queries of subtask g (sorted labels)."""
    if subtasks is None:
        return np.full((1, m), 1.0 / m)
    labels = np.asarray(list(subtasks))
    if labels.shape != (m,):
        raise ValueError(f"got {labels.size} query subtask labels for {m} queries; give one per query")
    _, group = np.unique(labels, return_inverse=True)
    avg = np.zeros((int(group.max()) + 1, m))
    avg[group, np.arange(m)] = 1.0
    return avg / avg.sum(axis=1, keepdims=True)


def less_scores(sim: Similarity, subtasks: Sequence[str] | None) -> np.ndarray:
    """max_g mean_{i∈g} S[i, j] for every pool row → [N] float64, streamed over S."""
    avg = subtask_average(subtasks, sim.n_query)  # [G, M]
    out = np.empty(sim.n_pool, dtype=np.float64)
    for start, block in sim.chunks():
        out[start:start + block.shape[1]] = (avg @ block.astype(np.float64)).max(axis=0)  # [G, n]→[n]
    return out


def select_less_task(inp: SelectInputs, budget: int, params, seed: int) -> np.ndarray:
    return order_by_score(less_scores(inp.sim, inp.query_subtasks))[:budget]
