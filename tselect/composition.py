"""What a selection is made of: the share of each source task, against the pool's own mix."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def task_shares(labels: Sequence[str], indices: np.ndarray | None = None) -> dict[str, float]:
    """Fraction of each label among labels[indices] (all labels when indices is None)."""
    chosen = labels if indices is None else [labels[i] for i in indices]
    counts = Counter(chosen)
    total = max(1, len(chosen))
    return {k: v / total for k, v in counts.items()}


def mix_table(labels: Sequence[str], selections: dict[str, np.ndarray]) -> tuple[list[str], list[list[float]]]:
    """Rows = source tasks sorted by the first selection's share (desc); columns = pool, then each selection."""
    pool = task_shares(labels)
    shares = {name: task_shares(labels, idx) for name, idx in selections.items()}
    first = next(iter(shares.values()), pool)
    tasks = sorted(pool, key=lambda t: (-first.get(t, 0.0), t))
    rows = [[pool[t]] + [shares[n].get(t, 0.0) for n in selections] for t in tasks]
    return tasks, rows
