"""The one token kernel: label convention, right-pad collation, label-token CE, logits at positions.

A shared core used by tokenization (data.tokenize.batches), training (the Trainer's collator),
forward-pass scoring (scoring.token_losses) and the score strategies (scores.common, judge).
torch is imported inside functions.

Conventions: labels are -100 (IGNORE) everywhere but the tokens that carry loss; batches are
right-padded, so with a causal mask padding changes neither positions nor attention of real
tokens; token t+1 is predicted at position t.
"""

from __future__ import annotations

from collections.abc import Sequence

IGNORE = -100  # label of a token that carries no loss (prompt, padding); torch's ignore_index default


def right_pad(rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int):
    """(input_ids, labels) pairs → (input_ids, attention_mask, labels), each int64 [B, T], T = longest."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids_t = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [B, T]
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # [B, T]
    labels_t = torch.full((len(rows), width), IGNORE, dtype=torch.long)  # [B, T]
    for b, (ids, labels) in enumerate(rows):
        n = len(ids)
        ids_t[b, :n] = torch.tensor(list(ids), dtype=torch.long)
        mask[b, :n] = 1
        labels_t[b, :n] = torch.tensor(list(labels), dtype=torch.long)
    return ids_t, mask, labels_t


def label_ce(logits, targets):
    """float32 [B, K]: cross-entropy of logits [B, K, V] against targets [B, K]; 0 where IGNORE.

    The log-softmax runs in float32 even when the model computes in bf16.
    """
    import torch.nn.functional as F

    return F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")


def logits_at(model, input_ids, attention_mask, keep):
    """[B, K, V] logits at positions `keep` (int64 [K], sorted), no gradient.

    Only those positions are projected onto the vocabulary (`logits_to_keep`); a model without
    that argument, or one that ignores it, gives all T positions, which are then indexed.
    """
    import torch

    with torch.inference_mode():
        try:
            logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep).logits
        except TypeError:  # a model without logits_to_keep
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # [B, T, V]
        if logits.shape[1] != keep.numel():  # all T positions came back
            logits = logits[:, keep]
    return logits
