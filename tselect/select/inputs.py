"""What a selector may read. Built by the select stage; selectors stay pure (arrays in, indices out)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tselect.similarity import Similarity


@dataclass
class SelectInputs:
    """Everything a selector can use; fields a selector does not need may be None.

    sim: query–pool similarity [M, N] (streamed).
    pool_features / query_features: per checkpoint, [N, d_t] / [M, d_t] unit rows (array-likes),
        with `weights` w_t summing to 1 (KNN-KDE pool–pool distances, k-center, diversity).
    scores: a per-pool-example score [N] (general-purpose strategies), higher is better
        unless the strategy says otherwise; NaN means "dropped" (e.g. IFD ≥ 1).
    query_subtasks: [M] subtask label per query (LESS aggregation); None when absent.
    exclude: pool indices that must not be chosen (strict random).
    """

    n_pool: int
    sim: Similarity | None = None
    pool_features: Sequence[Any] | None = None
    query_features: Sequence[np.ndarray] | None = None
    weights: Sequence[float] | None = None
    scores: np.ndarray | None = None
    query_subtasks: Sequence[str] | None = None
    exclude: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def check_param(ok: bool, name: str, value, rule: str, hint: str) -> None:
    """A selector parameter rule: ValueError naming the parameter, the rule and a valid --param."""
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value}; pass --param {name}={hint}")
