"""A toy representation — vowel and consonant counts — to show what adding one takes: this
module plus one line in REPRESENTATIONS. The contract tests then cover it like the real ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tselect.featurize import Representation
from tselect.featurize.common import write_unit_rows


def _counts(texts: list[str]) -> np.ndarray:
    """float32 [len(texts), 4]: vowels, consonants, digits, 1 (never a zero row)."""
    return np.asarray([[sum(c in "aeiou" for c in t.lower()), sum(c.isalpha() and c.lower() not in "aeiou" for c in t),
                        sum(c.isdigit() for c in t), 1.0] for t in texts], dtype=np.float32)


def identity(cfg) -> dict[str, str]:
    return {"toy": "counts-v1"}  # no model: the rows depend on the data alone


def shape(cfg) -> tuple[int, int]:
    return 4, 1


def run(cfg, pool, query, group: Path) -> dict:
    for name, data in (("query", query), ("pool", pool)):
        texts = [ex.text for ex in data.examples]
        write_unit_rows(group / "0", name, len(texts), 4, cfg.dtype,
                        lambda s, e, advance, t=texts: _counts(t[s:e]), f"toy {name}")
    return {"dim": 4, "checkpoints": ["0"], "weights": [1.0]}


TOY = Representation(identity, run, "vowel/consonant/digit counts (a test plugin)", shape, uses_lm=False, cost=0.0)
