"""Shared featurization plumbing: chunked, resumable, shardable writing of unit rows.

Sharding: chunk c of every array belongs to shard c mod N, so writers never share a chunk.
The featurize stage sets `SHARD` around a representation's run; representations need not know.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tselect import progress
from tselect.similarity import l2_normalize
from tselect.store import RowWriter, chunk_rows_for


SHARD: ContextVar[tuple[int, int]] = ContextVar("tselect_shard", default=(0, 1))  # (index, count)


def owned_chunks(n_chunks: int) -> list[int]:
    index, count = SHARD.get()
    return [c for c in range(n_chunks) if c % count == index]


def owned_rows(n: int, dim: int, dtype: str) -> list[int]:
    """Indices of the rows in this shard's chunks of an [n, dim] array written by write_unit_rows
    (the same chunking), so a representation prepares (e.g. tokenizes) only the rows it computes."""
    size = resumable_chunk_rows(dim, dtype)
    return [i for c in owned_chunks(max(1, -(-n // size))) for i in range(c * size, min(n, (c + 1) * size))]


def write_unit_rows(group: Path, name: str, n: int, dim: int, dtype: str,
                    rows_fn: "RowsFn", label: str) -> None:
    """Fill `<group>/<name>` [n, dim] with L2-normalized rows_fn(start, stop), chunk by chunk.

    Finished chunks survive an interruption; a rerun computes only the pending ones.
    """
    writer = RowWriter(group, name, n, dim, dtype, chunk_rows=resumable_chunk_rows(dim, dtype))
    pending = writer.pending(owned_chunks(writer.n_chunks))
    todo = sum(writer.bounds(c)[1] - writer.bounds(c)[0] for c in pending)
    with progress.bar(todo, label) as bar:
        for c in pending:
            start, stop = writer.bounds(c)
            writer.write(c, l2_normalize(rows_fn(start, stop, bar.advance)))


def copy_rows(group: Path, name: str, source, label: str) -> None:
    """Fill `<group>/<name>` with the rows of `source` ([n, dim] zarr/numpy), stored values as they are.

    Rows are not renormalized, so a copy is byte-identical to the rows it copies.
    """
    n, dim = source.shape
    writer = RowWriter(group, name, n, dim, str(source.dtype), chunk_rows=resumable_chunk_rows(dim, str(source.dtype)))
    pending = writer.pending(owned_chunks(writer.n_chunks))
    with progress.bar(len(pending), label) as bar:
        for c in pending:
            start, stop = writer.bounds(c)
            writer.write(c, np.asarray(source[start:stop]))
            bar.advance(1)


def resumable_chunk_rows(dim: int, dtype: str) -> int:
    """Rows per chunk: a few MiB, but at most 1024 rows so an interruption loses little work."""
    return min(1024, chunk_rows_for(dim, np.dtype(dtype).itemsize))


RowsFn = Callable[[int, int, Callable[[int], None]], np.ndarray]


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint's rows, not computed yet; the featurize stage writes them (normalized, chunked).

    query / pool: rows_fn(start, stop, advance) -> float32 [stop - start, dim].
    """

    name: str
    dim: int
    query: RowsFn
    pool: RowsFn


def batched(fn: Callable[[list[int]], np.ndarray], batch_size: int) -> RowsFn:
    """Turn a per-batch featurizer fn(indices) -> [b, d] into rows_fn(start, stop, advance)."""

    def rows(start: int, stop: int, advance: Callable[[int], None]) -> np.ndarray:
        parts = []
        for s in range(start, stop, batch_size):
            parts.append(fn(list(range(s, min(s + batch_size, stop)))))
            advance(parts[-1].shape[0])
        return np.concatenate(parts, axis=0)

    return rows
