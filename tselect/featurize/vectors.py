"""Bring your own vectors: row i of each .npy file is example i."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tselect.data.types import Dataset
from tselect.errors import UserError
from tselect.files import sha256_file
from tselect.featurize.common import Checkpoint
from tselect.featurize.config import FeaturizeConfig


def _load(path: str, flag: str, n_rows: int) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{flag} {path} does not exist; pass a .npy file with one row per example")
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise UserError(f"{flag} {path} is not a readable .npy array ({e}); save it with numpy.save") from None
    if arr.ndim != 2:
        raise UserError(f"{flag} {path} has shape {arr.shape}; it must be 2-D [examples, dim]")
    if arr.shape[0] != n_rows:
        raise UserError(f"{flag} {path} has {arr.shape[0]} rows but the data has {n_rows} examples; row i must be example i")
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise UserError(f"{flag} {path} contains non-finite or non-numeric values; replace NaN/inf rows")
    return arr


def identity(cfg: FeaturizeConfig) -> dict[str, str]:
    def digest(path: str | None) -> str:
        if not path or not Path(path).is_file():
            raise UserError("--rep vectors needs existing --pool-vectors and --query-vectors .npy files")
        return sha256_file(Path(path))[:16]

    return {"pool_vectors": digest(cfg.pool_vectors), "query_vectors": digest(cfg.query_vectors)}


def rows(cfg: FeaturizeConfig, pool: Dataset, query: Dataset) -> tuple[dict, list[Checkpoint]]:
    p = _load(cfg.pool_vectors, "--pool-vectors", len(pool))
    q = _load(cfg.query_vectors, "--query-vectors", len(query))
    if p.shape[1] != q.shape[1]:
        raise UserError(f"--pool-vectors width {p.shape[1]} != --query-vectors width {q.shape[1]}; both must use the same dim")
    fns = {name: (lambda s, e, advance, a=arr: np.asarray(a[s:e], dtype=np.float32)) for name, arr in (("query", q), ("pool", p))}
    dim = int(p.shape[1])
    return {"dim": dim, "checkpoints": ["0"], "weights": [1.0]}, [Checkpoint("0", dim, fns["query"], fns["pool"])]
