"""RDS+: position-weighted mean of the LM's last hidden states, L2-normalized.

Token t (1-based, over non-padding tokens) gets weight t / Σ_s s, so later tokens, which have
seen more of the conversation, count more. The text is the full chat rendering, response
included, truncated to max_length. Only the decoder runs (no LM head: it would cost a
[T, vocab] matmul per example for logits nobody reads), and each chunk is batched in length
order so padding stays small.
"""

from __future__ import annotations


import numpy as np

from tselect.data.tokenize import EncodedRow, batches, encode_example, length_sorted
from tselect.data.types import Dataset
from tselect.featurize.common import Checkpoint
from tselect.featurize.config import FeaturizeConfig


def identity(cfg: FeaturizeConfig) -> dict[str, str]:
    from tselect.models import resolve_model

    return {"model": resolve_model(cfg.model).fingerprint}


def position_weighted_mean(hidden, mask):
    """hidden [B, T, H], mask [B, T] (1 = token) → [B, H], weights ∝ position among real tokens."""
    pos = mask.cumsum(dim=1) * mask  # [B, T]: 1..len on real tokens, 0 on padding
    w = pos / pos.sum(dim=1, keepdim=True).clamp_min(1)
    return (hidden * w.unsqueeze(-1).to(hidden.dtype)).sum(dim=1)


def _embedder(model, pad_id: int, batch_size: int):
    import torch

    decoder = model.get_decoder()
    device = next(model.parameters()).device

    def embed(rows: list[EncodedRow], advance) -> np.ndarray:  # → [len(rows), H]
        out = np.zeros((len(rows), model.config.hidden_size), dtype=np.float32)
        for idx, ids, mask, _ in batches(rows, batch_size, pad_id, order=length_sorted(rows)):
            with torch.no_grad():
                h = decoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
            out[idx] = position_weighted_mean(h.float(), mask.to(device).float()).cpu().numpy()
            advance(len(idx))
        return out

    return embed


def rows(cfg: FeaturizeConfig, pool: Dataset, query: Dataset) -> tuple[dict, list[Checkpoint]]:
    from tselect.models import load_model, resolve_model

    model, tok = load_model(resolve_model(cfg.model))
    embed = _embedder(model, tok.pad_token_id, cfg.batch_size)
    dim, fns = int(model.config.hidden_size), {}
    for name, data in (("query", query), ("pool", pool)):
        encoded = [encode_example(ex, tok, cfg.max_length) for ex in data.examples]
        fns[name] = lambda a, b, advance, r=encoded: embed(r[a:b], advance)
    return {"dim": dim, "checkpoints": ["0"], "weights": [1.0]}, [Checkpoint("0", dim, fns["query"], fns["pool"])]
