"""A toy representation — vowel and consonant counts — to show what adding one takes: this
module plus one line in REPRESENTATIONS. The contract tests then cover it like the real ones."""

from __future__ import annotations

import numpy as np

from tselect.featurize import Representation
from tselect.featurize.common import Checkpoint


def _counts(texts: list[str]) -> np.ndarray:
    """float32 [len(texts), 4]: vowels, consonants, digits, 1 (never a zero row)."""
    return np.asarray([[sum(c in "aeiou" for c in t.lower()), sum(c.isalpha() and c.lower() not in "aeiou" for c in t),
                        sum(c.isdigit() for c in t), 1.0] for t in texts], dtype=np.float32)


def identity(cfg) -> dict[str, str]:
    return {"toy": "counts-v1"}  # no model: the rows depend on the data alone


def shape(cfg) -> tuple[int, int]:
    return 4, 1


def rows(cfg, pool, query) -> tuple[dict, list[Checkpoint]]:
    fns = {name: (lambda s, e, advance, t=[ex.text for ex in data.examples]: _counts(t[s:e]))
           for name, data in (("query", query), ("pool", pool))}
    return {"dim": 4, "checkpoints": ["0"], "weights": [1.0]}, [Checkpoint("0", 4, fns["query"], fns["pool"])]


TOY = Representation(identity, rows, "vowel/consonant/digit counts (a test plugin)", shape, uses_lm=False, cost=0.0)
