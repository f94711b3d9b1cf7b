"""Tests of the scores stage; `make_features` builds the feature artifact miwv and select need."""

from __future__ import annotations

import numpy as np


def make_features(root, pool_path, query_path, n: int, seed: int = 0) -> str:
    """A `vectors` feature artifact (random [n, 4] rows) for the pool at pool_path, in-process."""
    from tselect import featurize
    from tselect.featurize.config import FeaturizeConfig

    rng = np.random.default_rng(seed)
    n_query = sum(1 for line in open(query_path) if line.strip())
    np.save(pool_path.parent / "pv.npy", rng.normal(size=(n, 4)))
    np.save(pool_path.parent / "qv.npy", rng.normal(size=(n_query, 4)))
    cfg = FeaturizeConfig(rep="vectors", pool=str(pool_path), query=str(query_path), dtype="float32",
                          pool_vectors=str(pool_path.parent / "pv.npy"), query_vectors=str(pool_path.parent / "qv.npy"))
    return featurize.run(cfg, root)
