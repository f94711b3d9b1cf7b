"""EMBED: sentence embeddings of each conversation's text (prompt and response)."""

from __future__ import annotations


import numpy as np

from tselect.data.types import Dataset
from tselect.featurize.common import Checkpoint, batched
from tselect.featurize.config import FeaturizeConfig


def identity(cfg: FeaturizeConfig) -> dict[str, str]:
    from tselect.errors import UserError
    from tselect.models import embedder_path, fingerprint

    path = embedder_path(cfg.model)  # the embedded MiniLM, a hub id from the local cache, or a directory
    if not (path / "config.json").is_file():
        raise UserError(f"--model {cfg.model} is not a local sentence-transformers directory (no config.json); "
                        "pass one, or omit --model for the embedded all-MiniLM-L6-v2")
    return {"embedder": fingerprint(path)}


def rows(cfg: FeaturizeConfig, pool: Dataset, query: Dataset) -> tuple[dict, list[Checkpoint]]:
    from tselect.models import load_embedder

    model = load_embedder(cfg.model)
    dim_of = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = int(dim_of())

    def encode(texts: list[str]) -> np.ndarray:  # [b, dim]
        return np.asarray(model.encode(texts, batch_size=len(texts), convert_to_numpy=True,
                                       normalize_embeddings=False, show_progress_bar=False), dtype=np.float32)

    fns = {}
    for name, data in (("query", query), ("pool", pool)):
        texts = [ex.text for ex in data.examples]
        fns[name] = batched(lambda idx, t=texts: encode([t[i] for i in idx]), cfg.batch_size)
    return {"dim": dim, "checkpoints": ["0"], "weights": [1.0]}, [Checkpoint("0", dim, fns["query"], fns["pool"])]
