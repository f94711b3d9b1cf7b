"""Batches that fit: a token budget per batch, and split-in-halves retry when a batch runs out of memory.

Rows are length-sorted, so a batch pads little; with a token budget, rows × padded width stays
under `max_tokens`, so long rows travel in small batches and short rows in large ones. A batch
that still hits torch.cuda.OutOfMemoryError (fragmentation, a misjudged budget) is retried as
two halves, recursively, down to one row; a single row that does not fit is a user error naming
the fix, not a traceback that kills every rank. Results are scattered back by row index, and
each row's result does not depend on its batch-mates (per-example gradients), so splitting
changes nothing but the last bits.

Imports torch inside functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

BatchFn = Callable[[list[int]], np.ndarray]  # row indices -> [len(indices), dim]


def row_groups(lengths: Sequence[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """Length-sorted row groups: at most batch_size rows, and rows × width ≤ max_tokens if given."""
    from tselect.featurize.plan import token_batches

    if max_tokens:
        return token_batches(list(lengths), max_tokens, max_rows=batch_size)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError)


def _free_cached() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_split(fn: BatchFn, idx: list[int], out: np.ndarray, advance: Callable[[int], None] | None = None,
              on_split: Callable[[int], None] | None = None) -> None:
    """out[idx] = fn(idx); on CUDA OOM retry the two halves (recursively), then one row fails."""
    try:
        result = fn(idx)
    except Exception as e:  # noqa: BLE001 - only OOM is handled; everything else re-raises
        if not _is_oom(e):
            raise
        del e  # drop the traceback's frames (and their tensors) before retrying
        _free_cached()
        if len(idx) == 1:
            from tselect.errors import UserError

            raise UserError(f"one row (index {idx[0]}) runs out of device memory on its own; lower --max-length "
                            "or use a device with more memory (see `tselect featurize --dry-run`)") from None
        if on_split is not None:
            on_split(len(idx))
        half = len(idx) // 2
        run_split(fn, idx[:half], out, advance, on_split)
        run_split(fn, idx[half:], out, advance, on_split)
        return
    out[idx] = result
    if advance is not None:
        advance(len(idx))
