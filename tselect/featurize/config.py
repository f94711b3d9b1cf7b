"""The featurize stage's configuration (hashed into the artifact id)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tselect.data.tokenize import MAX_LENGTH


@dataclass(frozen=True)
class FeaturizeConfig:
    rep: str
    """Representation: a key of REPRESENTATIONS (embed, rds, vectors, less)."""
    pool: str
    """Pool data: builtin:pool, builtin:pool-small, a JSONL file or an HF save_to_disk dir."""
    query: str
    """Query data: builtin:<target> or a file, same formats as the pool."""
    model: str | None = None
    """LM (rds, less) or sentence embedder (embed); None = the embedded default."""
    fmt: str | None = None
    """Force the row format of pool/query files (chat, sharegpt, alpaca, prompt, text); None = auto-detect."""
    max_length: int = MAX_LENGTH
    """Truncate tokenized conversations to this many tokens."""
    batch_size: int = 16
    """Examples per forward pass."""
    dtype: str = "float16"
    """Storage dtype of feature rows (float16 halves disk; similarity accumulates in fp32)."""
    pool_vectors: str | None = None
    """vectors only: .npy file with one row per pool example."""
    query_vectors: str | None = None
    """vectors only: .npy file with one row per query example."""
    params: tuple[tuple[str, str], ...] = ()
    """Representation options as (name, value) pairs, e.g. (("dim", "8192"),) for less."""
    split: str | None = None
    """Pool split of a DatasetDict dir or hub dataset (data enter the id by content, not by this)."""
    query_split: str | None = None
    """Query split, likewise."""
    columns: tuple[tuple[str, str], ...] = ()
    """Pool column mapping (field, column), e.g. (("prompt", "question"),)."""
    query_columns: tuple[tuple[str, str], ...] = ()
    """Query column mapping, likewise."""
    dedup: bool = False
    """Drop repeated conversations (keep the first) instead of failing."""

    NOT_HASHED: ClassVar[dict[str, str]] = {
        "pool": "enters the id by content hash (inputs)", "query": "enters the id by content hash (inputs)",
        "pool_vectors": "enters the id by file sha256 (vectors identity)",
        "query_vectors": "enters the id by file sha256 (vectors identity)",
        "model": "enters the id by content fingerprint (the representation's identity), never by path",
        "split": "the rows it picks enter the id by content hash", "query_split": "the rows it picks enter the id by content hash", "columns": "the rows it picks enter the id by content hash",
        "query_columns": "the rows it picks enter the id by content hash", "dedup": "the rows it picks enter the id by content hash"}

    def __post_init__(self):
        if self.max_length < 8:
            raise ValueError(f"--max-length must be >= 8, got {self.max_length}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"--dtype must be float16 or float32, got {self.dtype}")
        if self.rep == "vectors" and not (self.pool_vectors and self.query_vectors):
            raise ValueError("--rep vectors needs --pool-vectors P.npy and --query-vectors Q.npy")
