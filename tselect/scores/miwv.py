"""`miwv`: Model Instruction Weakness Value, MIWV(x) = L_one-shot(x) − L_zero-shot(x), highest first.

Both losses are the token-mean cross-entropy of x's final answer. Zero-shot renders x's
conversation as it is. One-shot puts a demonstration first: the conversation of x's nearest
pool neighbour y ≠ x (by cosine under a feature artifact of the same pool), its system
message dropped, after x's own system message if x has one and before x's other turns. A
positive value means the closest example in the pool, shown in context, made x's answer
HARDER to predict: the model cannot learn x's skill from its neighbour, so x teaches it
something. The one-shot rendering gets 2 × max_length tokens (the demonstration has its own
budget), and both losses cover the same answer tokens (the common prefix when truncated).

Neighbours are found by streaming: queries in row chunks against pool blocks, keeping a
running best per query, so memory is O(chunk × block), never [N, N].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tselect.data.types import Dataset
from tselect.scores.common import Result, align, answer_row, last_answer, load, mean_losses, n_tokens
from tselect.scores.ifd import conditioned

CHUNK_ROWS = 2048  # rows per query chunk and per pool block: [2048, 2048] float32 = 16 MiB


def _rows(pools: Sequence, weights: Sequence[float], start: int, stop: int) -> list[np.ndarray]:
    """Rows start:stop of every checkpoint, float32 [b, d_t], pre-scaled by sqrt(w_t) so a
    plain dot product of two concatenations is the weighted cosine Σ_t w_t⟨x_t, y_t⟩."""
    return [np.sqrt(np.float32(w)) * np.asarray(p[start:stop], dtype=np.float32) for p, w in zip(pools, weights)]


def nearest_neighbours(pools: Sequence, weights: Sequence[float],
                       chunk_rows: int = CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """(neighbour int64 [N], similarity float64 [N]): for each row the most similar OTHER row
    under Σ_t w_t⟨x_t, y_t⟩, ties to the lower index; (-1, NaN) when N = 1.

    pools: per checkpoint an [N, d_t] array-like of unit rows (zarr or numpy).
    """
    n = int(pools[0].shape[0])
    best = np.full(n, -np.inf, dtype=np.float64)
    nbr = np.full(n, -1, dtype=np.int64)
    for qs in range(0, n, chunk_rows):
        q = np.concatenate(_rows(pools, weights, qs, min(n, qs + chunk_rows)), axis=1)  # [c, Σd]
        rows = np.arange(qs, qs + q.shape[0])
        for ps in range(0, n, chunk_rows):
            p = np.concatenate(_rows(pools, weights, ps, min(n, ps + chunk_rows)), axis=1)  # [b, Σd]
            sim = (q @ p.T).astype(np.float64)  # [c, b]
            own = rows - ps  # column of each query itself within this block
            inside = (own >= 0) & (own < p.shape[0])
            sim[np.flatnonzero(inside), own[inside]] = -np.inf  # never your own neighbour
            j = sim.argmax(axis=1)  # first maximum: ties to the lower index within the block
            s = sim[np.arange(q.shape[0]), j]
            better = s > best[rows]  # strict: an earlier block keeps ties
            best[rows[better]] = s[better]
            nbr[rows[better]] = ps + j[better]
    best[nbr < 0] = np.nan
    return nbr, best


def one_shot(messages: Sequence[dict[str, str]], demo: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """x's conversation (up to its final answer) with the demonstration's turns in front of its
    non-system turns; the demonstration's own system message is dropped."""
    x = conditioned(messages)
    system = [m for m in x[:1] if m["role"] == "system"]
    shown = [dict(m) for m in demo[: last_answer(demo) + 1] if m["role"] != "system"] if demo else []
    return system + shown + x[len(system):]


def score(cfg, pool: Dataset, ref, features) -> Result:
    assert features is not None and features.n_pool == len(pool), "the stage checks the pool first"
    nbr, sim = nearest_neighbours(features.pools, features.weights)
    model, tok = load(ref)
    zero, one, counts = [], [], []
    for i, ex in enumerate(pool.examples):
        demo = pool.examples[nbr[i]].messages if nbr[i] >= 0 else ()
        a, b, n = align(answer_row(tok, conditioned(ex.messages), cfg.max_length),
                        answer_row(tok, one_shot(ex.messages, demo), 2 * cfg.max_length))
        zero.append(a)
        one.append(b)
        counts.append(n if nbr[i] >= 0 else 0)
    loss_zero = mean_losses(model, tok, zero, cfg.batch_size, "miwv zero-shot")  # [N]
    loss_one = mean_losses(model, tok, one, cfg.batch_size, "miwv one-shot")  # [N]
    value = loss_one - loss_zero  # NaN propagates from either loss
    value[nbr < 0] = np.nan  # a one-row pool has no demonstration
    columns = {"loss_zero_shot": loss_zero, "loss_one_shot": loss_one, "neighbour": nbr,
               "neighbour_similarity": sim, "answer_tokens": np.asarray(counts, dtype=np.int64)}
    return Result(scores=value, columns=columns, tokens=n_tokens(zero) + n_tokens(one))
