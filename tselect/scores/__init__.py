"""The scores stage: one number per pool example from a general-purpose strategy.

Artifact `scores-<hash>`: `scores.npy` (float64 [N], higher = select first, NaN = dropped),
`details.json` (example ids and the raw per-example components, NaN as null) and a cost
record (wall_s, n, tokens). Inputs: the pool's content hash (what `select --scores` checks
against the features), the scoring model's fingerprint, and for miwv the feature artifact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from tselect import artifacts, catalog, identity, progress, store
from tselect.data import load_dataset
from tselect.data.tokenize import MAX_LENGTH
from tselect.data.types import Dataset
from tselect.errors import UserError
from tselect.lineage import data_location
from tselect.scores import ifd, judge, length, miwv
from tselect.scores.common import column


@dataclass(frozen=True)
class ScoreConfig:
    strategy: str
    """A key of STRATEGIES: length, ifd, miwv, judge."""
    pool: str = "builtin:pool"
    """Pool data: builtin:pool, builtin:pool-small, a JSONL file or an HF save_to_disk dir."""
    model: str | None = None
    """Scoring LM (tokenizer only for length): a local HF causal-LM dir; None = embedded SmolLM2."""
    fmt: str | None = None
    """Force the row format of a pool file (chat, sharegpt, alpaca, prompt, text); None = auto-detect."""
    features: str | None = None
    """miwv only: feature artifact id of the same pool, whose cosine picks each demonstration."""
    max_length: int = MAX_LENGTH
    """Token budget of a rendered example (miwv's one-shot gets twice; judge clips texts to half)."""
    batch_size: int = 8
    """Sequences per forward pass."""
    split: str | None = None
    """Split of a DatasetDict dir or hub dataset pool (the rows enter the id by content)."""
    columns: tuple[tuple[str, str], ...] = ()
    """Column mapping (field, column) of the pool."""
    dedup: bool = False
    """Drop repeated conversations (keep the first) instead of failing."""

    NOT_HASHED: ClassVar[dict[str, str]] = {
        "pool": "enters the id by content hash (inputs)", "model": "enters the id by content fingerprint (inputs)",
        "fmt": "only parses the pool, whose content hash is an input", "features": "artifact id in the inputs (miwv)",
        "split": "the rows it picks enter the id by content hash", "columns": "the rows it picks enter the id by content hash", "dedup": "the rows it picks enter the id by content hash"}

    def __post_init__(self):
        if self.max_length < 8:
            raise ValueError(f"--max-length must be >= 8, got {self.max_length}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.strategy == "miwv" and not self.features:
            raise ValueError("--strategy miwv needs --features ID (a featurize artifact of the same --pool) "
                             "to find each example's nearest neighbour")
        if self.features and self.strategy != "miwv":
            raise ValueError(f"--features is used only by --strategy miwv; drop it for --strategy {self.strategy}")


@dataclass(frozen=True)
class Strategy:
    fn: Callable  # (cfg, pool, model_ref, features | None) -> common.Result
    ignores: tuple[str, ...]  # hashed config fields that cannot change this strategy's scores (left out of its id)
    needs_features: bool
    summary: str


# Forward-pass strategies hash max_length and batch_size (batch_size too: float sums differ slightly);
# length counts untruncated response tokens, so neither can change its scores.
STRATEGIES: dict[str, Strategy] = {
    "length": Strategy(length.score, ("max_length", "batch_size"), False,
                       "response tokens under the model's tokenizer, longest first"),
    "ifd": Strategy(ifd.score, (), False, "IFD = L(answer | instruction) / L(answer), ≥ 1 dropped"),
    "miwv": Strategy(miwv.score, (), True, "loss with nearest neighbour as 1-shot demo − zero-shot loss"),
    "judge": Strategy(judge.score, (), False, "expected 1–5 rating of the response by the scoring LM"),
}



def _features(cfg: ScoreConfig, root: Path, pool: Dataset):
    """(feature artifact, opened features), refused unless they describe this very pool."""
    art = catalog.resolve(root, cfg.features, stage="featurize")
    if art.inputs.get("pool") != pool.content_hash:
        raise UserError(f"--features {art.id} was computed on another pool than --pool {cfg.pool}; "
                        f"featurize that pool (`tselect featurize --pool {cfg.pool} ...`) and pass its id")
    feats = catalog.open_features(art)
    if feats.n_pool != len(pool):
        raise UserError(f"--features {art.id} holds {feats.n_pool} pool rows but --pool has {len(pool)}; "
                        "re-run featurize on this pool")
    return art, feats


def run(cfg: ScoreConfig, root: Path) -> str:
    if cfg.strategy not in STRATEGIES:
        raise UserError(f"unknown strategy '{cfg.strategy}'; choose one of {', '.join(STRATEGIES)}")
    from tselect.models import DEFAULT_MODEL, resolve_model

    strat = STRATEGIES[cfg.strategy]
    pool = load_dataset(cfg.pool, cfg.fmt, split=cfg.split, columns=cfg.columns, dedup=cfg.dedup)
    ref = resolve_model(cfg.model)
    inputs = {"pool": pool.content_hash, "model": ref.fingerprint}
    feats = None
    if strat.needs_features:
        art, feats = _features(cfg, root, pool)
        inputs["features"] = art.id
    hashed = identity.hashed(cfg, also_excluded=strat.ignores)

    def write(build: artifacts.Build) -> None:
        started = time.time()
        result = strat.fn(cfg, pool, ref, feats)
        scores = np.asarray(result.scores, dtype=np.float64)
        assert scores.shape == (len(pool),), (scores.shape, len(pool))
        store.write_array(build.path / "scores.npy", scores)
        store.write_json(build.path / "details.json", {
            "strategy": cfg.strategy, "ids": [ex.id for ex in pool.examples],
            "columns": {name: column(values) for name, values in result.columns.items()}})
        build.record(wall_s=round(time.time() - started, 3), n=len(pool), tokens=int(result.tokens),
                     n_dropped=int(np.isnan(scores).sum()), strategy=cfg.strategy,
                     model=cfg.model or DEFAULT_MODEL, pool=data_location(cfg.pool))

    aid = artifacts.produce(root, "scores", hashed, inputs, write)
    progress.note(f"score {cfg.strategy}: {len(pool)} pool examples → {aid}")
    return aid
