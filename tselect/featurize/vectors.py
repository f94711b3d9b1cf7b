"""Bring your own vectors: row i of each .npy file is example i."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tselect.data.types import Dataset
from tselect.errors import UserError
from tselect.files import sha256_file
from tselect.featurize.common import Checkpoint
from tselect.featurize.config import FeaturizeConfig
from tselect.similarity import l2_normalize


def _load(path: str, flag: str, n_rows: int) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{flag} {path} does not exist; pass a .npy file with one row per example")
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise UserError(f"{flag} {path} is not a readable .npy array ({e}); save it with numpy.save") from None
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise UserError(f"{flag} {path} has shape {arr.shape}; it must be 2-D [examples, dim] with dim >= 1")
    if arr.shape[0] != n_rows:
        raise UserError(f"{flag} {path} has {arr.shape[0]} rows but the data has {n_rows} examples; row i must be example i")
    if arr.dtype.kind not in "iuf":  # complex, bool, strings, structured records: not a real vector
        raise UserError(f"{flag} {path} has dtype {arr.dtype}; save real-valued (float or int) vectors")
    for start in range(0, arr.shape[0], BLOCK_ROWS):
        _check_rows(np.asarray(arr[start:start + BLOCK_ROWS], dtype=np.float64), start, flag, path)
    return arr


BLOCK_ROWS = 65536  # validated and converted block by block: a memory-mapped file is never read whole


def _check_rows(block: np.ndarray, start: int, flag: str, path: str) -> None:
    finite = np.isfinite(block).all(axis=1)
    zero = ~block.any(axis=1)
    bad = np.flatnonzero(~finite | zero)
    if bad.size:
        i = int(bad[0])
        what = "non-finite (NaN or inf)" if not finite[i] else "all zero (it has no direction)"
        raise UserError(f"{flag} {path}: row {start + i} is {what} ({bad.size} such rows among rows "
                        f"{start}..{start + block.shape[0] - 1}); replace or drop those examples")


def unit_rows(block) -> np.ndarray:
    """[b, d] finite, non-zero rows → float32 unit rows without overflow or underflow.

    Rows whose float32 norm overflows or vanishes (1e30, 1e-30 entries) are first divided by their
    largest |value| in float64, so they keep their direction instead of becoming inf/NaN or zero
    rows; every other row is normalized exactly as before (same bytes, same artifact).
    """
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):  # such rows are redone below
        x32 = np.asarray(block, dtype=np.float32)
        norms = np.linalg.norm(x32, axis=1)
        out = l2_normalize(x32)
    redo = ~(np.isfinite(norms) & (norms > 1e-12))
    if redo.any():
        x = np.asarray(block, dtype=np.float64)[redo]
        x = x / np.abs(x).max(axis=1, keepdims=True)
        out[redo] = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


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
    fns = {name: (lambda s, e, advance, a=arr: unit_rows(a[s:e])) for name, arr in (("query", q), ("pool", p))}
    dim = int(p.shape[1])
    return {"dim": dim, "checkpoints": ["0"], "weights": [1.0]}, [Checkpoint("0", dim, fns["query"], fns["pool"])]
