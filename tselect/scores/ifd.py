"""`ifd`: Instruction-Following Difficulty, IFD(x) = L(A | Q) / L(A), highest first.

A is the final assistant turn, Q everything before it; L is the token-mean cross-entropy of
A's tokens. L(A | Q) renders the conversation up to and including A. L(A) renders A after an
EMPTY user turn through the same chat template: both renderings then share every piece of
template scaffolding (BOS, a template's default system prompt, role headers, end-of-turn
tokens) and differ only in the instruction text, so the ratio isolates how much Q helps
predict A. (Rendering A with no user turn at all is refused by templates that require
alternating roles, and would also change the scaffolding.) Both losses cover the same answer
tokens: when truncation shortens one rendering, both are cut to the common prefix of A.

IFD ≥ 1 means the instruction did not make the answer easier, so those rows are dropped
(NaN), as are rows whose answer fell entirely outside max_length. Scoring with a small model
(the embedded SmolLM2-135M by default) is Superfiltering.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tselect.data.types import Dataset
from tselect.scores.common import Result, align, answer_row, last_answer, load, mean_losses, n_tokens


def conditioned(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation up to and including its final assistant turn."""
    return list(messages[: last_answer(messages) + 1])


def answer_alone(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The final assistant turn after an empty user turn (no system message: it is part of Q)."""
    return [{"role": "user", "content": ""}, dict(messages[last_answer(messages)])]


def ifd_ratio(loss_cond: np.ndarray, loss_alone: np.ndarray) -> np.ndarray:
    """float64 [N]: L(A|Q) / L(A); NaN where a loss is undefined, L(A) ≤ 0, or the ratio ≥ 1."""
    ratio = raw_ratio(loss_cond, loss_alone)
    ratio[~(ratio < 1)] = np.nan  # `~(<)` also catches NaN
    return ratio


def raw_ratio(loss_cond: np.ndarray, loss_alone: np.ndarray) -> np.ndarray:
    """float64 [N]: the ratio before dropping (kept in details.json to show what was filtered)."""
    loss_cond = np.asarray(loss_cond, dtype=np.float64)
    loss_alone = np.asarray(loss_alone, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(loss_alone > 0, loss_cond / loss_alone, np.nan)


def score(cfg, pool: Dataset, ref, features) -> Result:
    model, tok = load(ref)
    cond, alone, counts = [], [], []
    for ex in pool.examples:
        a, b, n = align(answer_row(tok, conditioned(ex.messages), cfg.max_length),
                        answer_row(tok, answer_alone(ex.messages), cfg.max_length))
        cond.append(a)
        alone.append(b)
        counts.append(n)
    loss_cond = mean_losses(model, tok, cond, cfg.batch_size, "ifd L(A|Q)")  # [N]
    loss_alone = mean_losses(model, tok, alone, cfg.batch_size, "ifd L(A)")  # [N]
    ratio = ifd_ratio(loss_cond, loss_alone)
    columns = {"loss_answer_given_instruction": loss_cond, "loss_answer_alone": loss_alone,
               "ifd_raw": raw_ratio(loss_cond, loss_alone), "answer_tokens": np.asarray(counts, dtype=np.int64)}
    return Result(scores=ratio, columns=columns, tokens=n_tokens(cond) + n_tokens(alone))

