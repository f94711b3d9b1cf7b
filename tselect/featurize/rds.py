"""RDS+: position-weighted mean of the LM's last hidden states, L2-normalized.

Token t (1-based, over non-padding tokens) gets weight t / Σ_s s, so later tokens, which have
seen more of the conversation, count more. The text is the full chat rendering, response
included, truncated to max_length.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tselect.data.tokenize import EncodedRow, batches, encode_example
from tselect.data.types import Dataset
from tselect.featurize.common import batched, write_unit_rows
from tselect.featurize.config import FeaturizeConfig


def identity(cfg: FeaturizeConfig) -> dict[str, str]:
    from tselect.models import resolve_model

    return {"model": resolve_model(cfg.model).fingerprint}


def position_weighted_mean(hidden, mask):
    """hidden [B, T, H], mask [B, T] (1 = token) → [B, H], weights ∝ position among real tokens."""
    pos = mask.cumsum(dim=1) * mask  # [B, T]: 1..len on real tokens, 0 on padding
    w = pos / pos.sum(dim=1, keepdim=True).clamp_min(1)
    return (hidden * w.unsqueeze(-1).to(hidden.dtype)).sum(dim=1)


def run(cfg: FeaturizeConfig, pool: Dataset, query: Dataset, group: Path) -> dict:
    import torch

    from tselect.models import load_model, resolve_model

    model, tok = load_model(resolve_model(cfg.model))
    dim = int(model.config.hidden_size)
    device = next(model.parameters()).device

    def embed(rows: list[EncodedRow]) -> np.ndarray:  # [b, H]
        _, ids, mask, _ = next(batches(rows, len(rows), tok.pad_token_id))
        with torch.no_grad():
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
        return position_weighted_mean(out.hidden_states[-1].float(), mask.to(device).float()).cpu().numpy()

    for name, data in (("query", query), ("pool", pool)):
        rows = [encode_example(ex, tok, cfg.max_length) for ex in data.examples]
        fn = batched(lambda idx, r=rows: embed([r[i] for i in idx]), cfg.batch_size)
        write_unit_rows(group / "0", name, len(data), dim, cfg.dtype, fn, f"rds {name}")
    return {"dim": dim, "checkpoints": ["0"], "weights": [1.0]}
