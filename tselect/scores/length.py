"""`length`: response length in tokens, longest first.

The count is the number of label tokens of the full conversation under the scoring model's
tokenizer and chat rendering (every assistant turn, including the end-of-turn token the
template closes each turn with), untruncated: exactly the tokens fine-tuning would learn from.
No forward pass and no weights are needed, only the tokenizer.
"""

from __future__ import annotations

import numpy as np

from tselect import progress
from tselect.data.tokenize import encode_example
from tselect.tokens import IGNORE
from tselect.data.types import Dataset
from tselect.scores.common import UNTRUNCATED, Result


def token_counts(example, tokenizer) -> tuple[int, int]:
    """(assistant label tokens, all tokens) of the untruncated rendering."""
    row = encode_example(example, tokenizer, UNTRUNCATED)
    return sum(1 for t in row.labels if t != IGNORE), len(row.input_ids)


def score(cfg, pool: Dataset, ref, features) -> Result:
    from tselect.models import load_tokenizer

    tok = load_tokenizer(ref)
    counts = np.array([token_counts(ex, tok) for ex in progress.track(pool.examples, len(pool), "length")],
                      dtype=np.int64).reshape(-1, 2)  # [N, 2]
    return Result(scores=counts[:, 0].astype(np.float64), columns={"response_tokens": counts[:, 0].tolist()},
                  tokens=int(counts[:, 1].sum()))
