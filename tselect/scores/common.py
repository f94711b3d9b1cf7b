"""Plumbing the loss-based strategies share: answer-only label rows and batched mean losses.

An "answer row" is a rendered conversation whose labels cover only its final assistant turn
(encode_example labels every assistant turn; the strategies score one answer). Two renderings
of the same answer (with and without an instruction, with and without a demonstration) are
`align`ed to score the same answer tokens, so truncation never makes a ratio or a difference
compare different token sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tselect import progress
from tselect.data.tokenize import EncodedRow, batches, encode_example, length_sorted
from tselect.data.types import Example
from tselect.tokens import IGNORE, label_ce, logits_at

UNTRUNCATED = 1 << 30  # a max_length no conversation reaches


@dataclass
class Result:
    """What a strategy returns: float64 [N] scores (NaN = dropped), raw per-example columns
    (each N values, list or array, NaN where undefined) and the number of tokens processed."""

    scores: np.ndarray
    columns: dict[str, Sequence] = field(default_factory=dict)
    tokens: int = 0


def last_answer(messages: Sequence[dict[str, str]]) -> int:
    """Index of the final assistant message (loaders guarantee there is one)."""
    return max(k for k, m in enumerate(messages) if m["role"] == "assistant")


def answer_row(tokenizer, messages: Sequence[dict[str, str]], max_length: int) -> EncodedRow:
    """Encode `messages` (ending with the scored assistant turn) with labels on that turn only,
    then truncate to max_length (a turn cut off entirely leaves a row without labels)."""
    row = encode_example(Example.make(list(messages)), tokenizer, UNTRUNCATED)
    labels = list(row.labels)
    # Labels form runs of non-IGNORE tokens, one per assistant turn (non-assistant tokens sit
    # between them); keep the last run, which is the final turn. Found before truncating, so
    # a cut never passes an earlier turn's run off as the final one.
    end = len(labels)
    while end > 0 and labels[end - 1] == IGNORE:
        end -= 1
    start = end
    while start > 0 and labels[start - 1] != IGNORE:
        start -= 1
    labels = [IGNORE] * start + labels[start:end] + [IGNORE] * (len(labels) - end)
    return EncodedRow(row.input_ids[:max_length], labels[:max_length])


def n_labels(row: EncodedRow) -> int:
    return sum(1 for t in row.labels if t != IGNORE)


def clip(row: EncodedRow, n: int) -> EncodedRow:
    """Keep the first `n` label tokens; drop what follows the last one (it cannot affect them)."""
    kept, labels, stop = 0, [], 0
    for t, lab in enumerate(row.labels):
        if lab != IGNORE and kept < n:
            kept += 1
            labels.append(lab)
            stop = t + 1
        else:
            labels.append(IGNORE)
    stop = stop or len(row.input_ids)  # n == 0: a row with no label tokens scores NaN
    return EncodedRow(row.input_ids[:stop], labels[:stop])


def align(a: EncodedRow, b: EncodedRow) -> tuple[EncodedRow, EncodedRow, int]:
    """Both rows clipped to the same number of answer tokens, min of the two (and that count)."""
    n = min(n_labels(a), n_labels(b))
    return clip(a, n), clip(b, n), n


def load(ref):
    """(model, tokenizer) for scoring; honours TSELECT_THREADS on CPU."""
    from tselect.models import load_model, set_threads

    set_threads()
    return load_model(ref)


def label_losses(model, input_ids, attention_mask, labels):
    """float64 [B]: token-mean CE over label tokens of a right-padded batch (NaN: no labels).

    Token t+1 is predicted at position t. Only positions that predict a label token in some
    row are projected onto the vocabulary (`logits_to_keep`): scored answers are short next
    to their prompts, and the [*, V] projection is a fifth of a small model's FLOPs.
    A model that ignores `logits_to_keep` returns all T positions; those are then indexed.
    """
    import torch

    device = next(model.parameters()).device
    ids, mask = input_ids.to(device), attention_mask.to(device)
    target = labels.to(device).masked_fill(mask == 0, IGNORE)[:, 1:]  # [B, T-1]
    keep = (target != IGNORE).any(dim=0).nonzero().squeeze(1)  # [K] positions, sorted
    with torch.inference_mode():
        logits = logits_at(model, ids, mask, keep)  # [B, K, V]
        tgt = target[:, keep]  # [B, K]
        ce = label_ce(logits, tgt)  # [B, K]
        n = (tgt != IGNORE).sum(dim=1)  # [B]
        mean = ce.double().sum(dim=1) / n.clamp(min=1)
        return torch.where(n > 0, mean, torch.full_like(mean, float("nan"))).cpu()


def mean_losses(model, tokenizer, rows: Sequence[EncodedRow], batch_size: int, label: str) -> np.ndarray:
    """float64 [len(rows)]: token-mean CE over each row's label tokens (NaN for a row without any).

    Rows are batched by length (little padding) with right padding; results are scattered
    back by index, so the output is in `rows` order and independent of the batch size.
    """
    out = np.full(len(rows), np.nan)
    order = length_sorted(rows)
    n_batches = -(-len(rows) // batch_size)
    for idx, ids, mask, labels in progress.track(batches(rows, batch_size, tokenizer.pad_token_id, order),
                                                 n_batches, label):
        out[idx] = label_losses(model, ids, mask, labels).numpy()
    return out


def n_tokens(rows: Sequence[EncodedRow]) -> int:
    return sum(len(r.input_ids) for r in rows)


def column(values) -> list:
    """A JSON-able column: floats with NaN as None, ints as ints."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iub":
        return [int(v) for v in arr]
    return [None if np.isnan(v) else float(v) for v in arr.astype(np.float64)]
