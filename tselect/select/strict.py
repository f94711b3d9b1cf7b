"""Strict random ("Chasing Random", §3.2): a random order over the pool rows that none of the
given selections chose, so the baseline shares nothing with any strategy's picks.
"""

from __future__ import annotations

import numpy as np

from tselect.select.basic import random_order
from tselect.select.inputs import SelectInputs


def complement(n: int, exclude: np.ndarray) -> np.ndarray:
    """Sorted pool rows not in `exclude` → int64[n − |exclude|]."""
    exclude = np.unique(np.asarray(exclude, dtype=np.int64))
    if exclude.size and (exclude[0] < 0 or exclude[-1] >= n):
        raise ValueError(f"excluded index {exclude[0] if exclude[0] < 0 else exclude[-1]} is outside "
                         f"the pool 0..{n - 1}; exclude selections made on this pool")
    keep = np.ones(n, dtype=bool)
    keep[exclude] = False
    return np.flatnonzero(keep).astype(np.int64)


def select_strict_random(inp: SelectInputs, budget: int, params, seed: int) -> np.ndarray:
    """A seeded permutation of the complement (the same draw as `random` on a smaller pool)."""
    keep = complement(inp.n_pool, inp.exclude)
    if budget > keep.size:
        raise ValueError(f"budget {budget} exceeds the {keep.size} pool examples left after "
                         f"excluding {inp.n_pool - keep.size}; lower --budget or exclude fewer selections")
    return keep[random_order(keep.size, seed)][:budget]
