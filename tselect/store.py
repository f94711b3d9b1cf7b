"""All file formats in one place: JSON, zarr v3 feature stores, index lists, safetensors.

Feature stores are zarr v3 groups, uncompressed (`compressors=None`: zstd buys ~6% on projected
gradients and costs 3–7× throughput), row-chunked so a writer owns whole chunks and a reader
streams them. Layout of `features.zarr`:

    attrs: representation, model, dim, checkpoints [names], weights [w_t, Σ=1], n_pool, n_query, ...
    <ckpt>/pool   [N, d]  unit rows (float16 or float32)
    <ckpt>/query  [M, d]  unit rows
    <ckpt>/pool_done, <ckpt>/query_done   bool [n_chunks]  (set after a chunk's rows are written)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tselect.errors import UserError
from tselect.files import atomic_path, atomic_write, flock

import numpy as np

FEATURES = "features.zarr"
TARGET_CHUNK_BYTES = 8 << 20  # a few MiB per chunk: large sequential I/O, bounded memory


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write (tmp file + rename)."""
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=False, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def chunk_rows_for(dim: int, itemsize: int) -> int:
    return int(max(64, min(65536, TARGET_CHUNK_BYTES // max(1, dim * itemsize))))


_THREAD_LOCK = threading.Lock()  # flock is per open file description; threads also need this


@contextmanager
def group_lock(path: Path) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    with flock(path / ".create.lock"):
        yield


class RowWriter:
    """A resumable [n, d] zarr array written one whole row chunk at a time.

    `pending()` lists chunks not yet marked done; `write(c, rows)` stores chunk c's rows and
    only then marks it done, so a crash between the two recomputes at most that one chunk.
    Reopening an existing array with a different shape/dtype is refused (a stale .part).
    """

    def __init__(self, group_path: Path, name: str, n: int, dim: int, dtype: str = "float16",
                 chunk_rows: int | None = None):
        self.n, self.dim = n, dim
        self.chunk_rows = chunk_rows or chunk_rows_for(dim, np.dtype(dtype).itemsize)
        self.n_chunks = max(1, -(-n // self.chunk_rows))
        self.group_path = Path(group_path)
        with group_lock(self.group_path):  # shards may open the same array at once; one creates it
            self._open_or_create(Path(group_path), name, n, dim, dtype)

    def _open_or_create(self, group_path: Path, name: str, n: int, dim: int, dtype: str) -> None:
        import zarr

        group = zarr.open_group(str(group_path), mode="a")
        if name in group and name + "_done" not in group:
            del group[name]  # killed between creating the array and its done mask: start the array over
        if name in group:
            arr = group[name]
            if arr.shape != (n, dim) or arr.dtype != np.dtype(dtype):
                raise ValueError(f"existing array {name} has shape {arr.shape}/{arr.dtype}, expected {(n, dim)}/{dtype}")
            self.array, self.done = arr, group[name + "_done"]
            # An interrupted run may have used another chunking: resume with the layout on disk.
            self.chunk_rows = int(arr.chunks[0])
            self.n_chunks = int(self.done.shape[0])
        else:
            from zarr.codecs import Crc32cCodec

            # A crc32c per chunk: every later read of a flipped or truncated chunk fails loudly.
            self.array = group.create_array(name, shape=(n, dim), chunks=(self.chunk_rows, dim),
                                            dtype=dtype, compressors=[Crc32cCodec()], fill_value=0)
            self.done = group.create_array(name + "_done", shape=(self.n_chunks,), chunks=(self.n_chunks,),
                                           dtype=bool, compressors=[Crc32cCodec()], fill_value=False)

    def bounds(self, c: int) -> tuple[int, int]:
        return c * self.chunk_rows, min(self.n, (c + 1) * self.chunk_rows)

    def pending(self, owned: Sequence[int] | None = None) -> list[int]:
        done = np.asarray(self.done[:])
        chunks = range(self.n_chunks) if owned is None else owned
        return [c for c in chunks if not done[c]]

    def write(self, c: int, rows: np.ndarray) -> None:
        start, stop = self.bounds(c)
        assert rows.shape == (stop - start, self.dim), (rows.shape, (stop - start, self.dim))
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked right below
            stored = np.asarray(rows).astype(self.array.dtype)
        check_stored_rows(np.asarray(rows), stored, start, f"the {self.array.path} features")
        self.array[start:stop] = stored
        # Only after the rows are on disk. The mask is one zarr chunk that other shards also
        # read-modify-write, so the update is serialized across processes and threads.
        with group_lock(self.group_path), _THREAD_LOCK:
            self.done[c] = True

    def complete(self) -> bool:
        return bool(np.all(self.done[:]))


def check_stored_rows(rows: np.ndarray, stored: np.ndarray, start: int, where: str) -> None:
    """Rows as they will be stored (after the cast to the store's dtype) must be finite, and a row
    that was not all zero must not become all zero.

    Validating before the cast is not enough: 1e200 is finite in float64 and inf in float16/32,
    1e-30 survives float64 and is 0 in float16. (All-zero rows written on purpose, e.g. LESS rows
    without a response token, stay allowed.)
    """
    finite = np.isfinite(stored).all(axis=1)
    nonzero = stored.any(axis=1) | ~np.asarray(rows).any(axis=1)
    bad = np.flatnonzero(~finite | ~nonzero)
    if bad.size:
        i = int(bad[0])
        what = "non-finite" if not finite[i] else "all-zero"
        raise UserError(f"row {start + i} of {where} is {what} once stored as {stored.dtype} ({bad.size} such rows in "
                        f"rows {start}..{start + stored.shape[0] - 1}); rescale or fix the input vectors, or pass "
                        "--dtype float32 if they only overflow float16")


def features_complete(group_path: Path) -> bool:
    """Every array of every checkpoint listed in the attrs has all chunks done."""
    group = open_group(group_path)
    ckpts = group.attrs.get("checkpoints")
    if not ckpts:
        return False
    for c in ckpts:
        for name in ("pool", "query"):
            key = f"{c}/{name}_done"
            if key not in group or not bool(np.all(group[key][:])):
                return False
    return True


def open_group(path: Path, mode: str = "a"):
    import zarr

    return zarr.open_group(str(path), mode=mode)


def set_attrs(path: Path, attrs: dict[str, Any]) -> None:
    open_group(path).attrs.update(json.loads(json.dumps(attrs, default=_json_default)))


@dataclass
class Features:
    """An opened feature store: per checkpoint, pool rows (lazy zarr) and query rows (numpy)."""

    attrs: dict[str, Any]
    checkpoints: list[str]
    weights: list[float]
    pools: list[Any]  # zarr arrays [N, d_t], sliced lazily by row chunks
    queries: list[np.ndarray]  # [M, d_t] float32

    @property
    def n_pool(self) -> int:
        return int(self.pools[0].shape[0])

    @property
    def n_query(self) -> int:
        return int(self.queries[0].shape[0])


class CheckedRows:
    """A stored [N, d] array whose checksum failures become one UserError naming the artifact."""

    def __init__(self, array, artifact_dir: Path, name: str):
        self._array, self._dir, self._name = array, Path(artifact_dir), name

    def __getattr__(self, key: str):  # shape, dtype, chunks, ... as the zarr array has them
        return getattr(self._array, key)

    def __len__(self) -> int:
        return int(self._array.shape[0])

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[:], dtype=dtype)

    def __getitem__(self, key):
        try:
            out = self._array[key]
        except ValueError as e:
            if "checksum" not in str(e):
                raise
            self._corrupt("checksum mismatch in")
        # zarr reads a chunk file that is not there as fill values: after the read (so a file deleted
        # mid-read is caught too) every chunk it covered must still exist.
        for c in self._chunks_of(key):
            key_path = self._array.metadata.encode_chunk_key((c,) + (0,) * (self._array.ndim - 1))
            if not (self._dir / FEATURES / self._array.path / key_path).is_file():
                self._corrupt(f"chunk {c} is missing from")
        if isinstance(out, np.ndarray) and out.dtype.kind == "f" and not np.isfinite(out).all():
            self._corrupt("non-finite values in")  # stored rows are finite unit vectors
        return out

    def _chunks_of(self, key) -> range:
        """Row chunks a read of `key` touches (all of them for anything but an int or a row slice)."""
        n, rows = int(self._array.shape[0]), int(self._array.chunks[0])
        first = key[0] if isinstance(key, tuple) and key else key
        if isinstance(first, (int, np.integer)):
            r = int(first) % max(n, 1)
            return range(r // rows, r // rows + 1)
        if isinstance(first, slice):
            start, stop, _ = first.indices(n)
            return range(start // rows, -(-stop // rows)) if stop > start else range(0)
        return range(-(-n // rows))

    def _corrupt(self, what: str):
        aid = self._dir.name
        raise UserError(f"feature store {self._dir} is corrupt ({what} a {self._name} chunk); "
                        f"check it with `tselect verify {aid}`, remove it with `tselect rm {aid}` "
                        "and featurize again") from None


def open_features(artifact_dir: Path) -> Features:
    group = open_group(Path(artifact_dir) / FEATURES, mode="r")
    attrs = dict(group.attrs)
    ckpts = list(attrs["checkpoints"])
    pools = [CheckedRows(group[f"{c}/pool"], artifact_dir, f"{c}/pool") for c in ckpts]
    queries = [np.asarray(CheckedRows(group[f"{c}/query"], artifact_dir, f"{c}/query")[:], dtype=np.float32)
               for c in ckpts]
    return Features(attrs, ckpts, [float(w) for w in attrs["weights"]], pools, queries)


def write_indices(path: Path, indices: np.ndarray, extra: dict[str, Any] | None = None) -> None:
    write_json(path, {"indices": [int(i) for i in indices], **(extra or {})})


def read_indices(path: Path) -> np.ndarray:
    return np.asarray(read_json(path)["indices"], dtype=np.int64)


def write_array(path: Path, array: np.ndarray) -> None:
    """A small dense array (scores, weights) as .npy, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def read_array(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def save_tensors(path: Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def load_tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))
