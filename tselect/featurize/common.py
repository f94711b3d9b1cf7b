"""Shared featurization plumbing: chunked, resumable writing of unit rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tselect import progress
from tselect.select.similarity import l2_normalize
from tselect.store import RowWriter


def write_unit_rows(group: Path, name: str, n: int, dim: int, dtype: str,
                    rows_fn: Callable[[int, int], np.ndarray], label: str) -> None:
    """Fill `<group>/<name>` [n, dim] with L2-normalized rows_fn(start, stop), chunk by chunk.

    Finished chunks survive an interruption; a rerun computes only the pending ones.
    """
    writer = RowWriter(group, name, n, dim, dtype)
    pending = writer.pending()
    for c in progress.track(pending, len(pending), label):
        start, stop = writer.bounds(c)
        writer.write(c, l2_normalize(rows_fn(start, stop)))


def batched(fn: Callable[[list[int]], np.ndarray], batch_size: int) -> Callable[[int, int], np.ndarray]:
    """Turn a per-batch featurizer fn(indices) -> [b, d] into rows_fn(start, stop)."""

    def rows(start: int, stop: int) -> np.ndarray:
        parts = [fn(list(range(s, min(s + batch_size, stop)))) for s in range(start, stop, batch_size)]
        return np.concatenate(parts, axis=0)

    return rows
