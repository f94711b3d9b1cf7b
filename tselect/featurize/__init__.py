"""The featurize stage: pool and query examples → a feature store of unit rows per checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tselect import artifacts, progress, store
from tselect.data import load_dataset
from tselect.errors import UserError
from tselect.featurize import embed, less, rds, vectors
from tselect.featurize.common import SHARD
from tselect.featurize.config import FeaturizeConfig


@dataclass(frozen=True)
class Representation:
    identity: Callable[[FeaturizeConfig], dict[str, str]]  # model fingerprints for the id
    run: Callable  # (cfg, pool, query, group_path) -> attrs (dim, checkpoints, weights, ...)
    summary: str
    shape: Callable[[FeaturizeConfig], tuple[int, int]]  # (dim, checkpoints) before any work


def _config_width(path: Path, key: str = "hidden_size") -> int:
    import json

    return int(json.loads((Path(path) / "config.json").read_text()).get(key, 1024))


def _embed_shape(cfg: FeaturizeConfig) -> tuple[int, int]:
    from tselect.models import embedder_path

    return _config_width(embedder_path(cfg.model)), 1


def _rds_shape(cfg: FeaturizeConfig) -> tuple[int, int]:
    from tselect.models import resolve_model

    return _config_width(resolve_model(cfg.model).path), 1


def _vectors_shape(cfg: FeaturizeConfig) -> tuple[int, int]:
    import numpy as np

    try:
        return int(np.load(cfg.pool_vectors, mmap_mode="r").shape[-1]), 1
    except (OSError, ValueError):
        return 1, 1  # vectors.run reports the unreadable file properly


def _less_shape(cfg: FeaturizeConfig) -> tuple[int, int]:
    from tselect.featurize.warmup import WARMUP_PRESETS

    lc = less.less_config(cfg)
    return lc.dim, WARMUP_PRESETS[lc.warmup].epochs


REPRESENTATIONS: dict[str, Representation] = {
    "embed": Representation(embed.identity, embed.run, "sentence embeddings (all-MiniLM-L6-v2 by default)",
                            _embed_shape),
    "rds": Representation(rds.identity, rds.run, "RDS+: position-weighted mean of last hidden states", _rds_shape),
    "vectors": Representation(vectors.identity, vectors.run, "bring your own .npy vectors", _vectors_shape),
    "less": Representation(less.identity, less.run,
                           "LESS: Adam-preconditioned, projected LoRA gradients over warmup checkpoints",
                           _less_shape),
}


DATA_OPTIONS = ("split", "query_split", "columns", "query_columns", "dedup")


def _hashed_config(cfg: FeaturizeConfig) -> dict:
    # Data enter the id through their content hashes, so the same files under other paths
    # (or on another host), read with any split/column options that give the same rows, give
    # the same id. A hub model enters by its files' fingerprint (inputs), never by its name.
    from tselect.data.hub import looks_like_hub_id

    hashed = artifacts.config_dict(cfg)
    for key in ("pool", "query", "pool_vectors", "query_vectors", *DATA_OPTIONS):
        hashed.pop(key)
    if cfg.model and looks_like_hub_id(cfg.model):
        hashed["model"] = None
    return hashed


def _where(spec: str) -> str:
    """Builtin names and hub ids as they are; files as absolute paths so later stages find them from any cwd."""
    from tselect.data.hub import looks_like_hub_id

    return spec if spec.startswith("builtin:") or looks_like_hub_id(spec) else str(Path(spec).resolve())


def load_data(cfg: FeaturizeConfig):
    """(pool, query) read with the config's format, split, column and dedup options."""
    pool = load_dataset(cfg.pool, cfg.fmt, split=cfg.split, columns=cfg.columns, dedup=cfg.dedup, flag="--pool")
    query = load_dataset(cfg.query, cfg.fmt, split=cfg.query_split, columns=cfg.query_columns, dedup=cfg.dedup,
                         flag="--query")
    return pool, query


def run(cfg: FeaturizeConfig, root: Path, shard: tuple[int, int] = (0, 1)) -> str:
    """Featurize (or find) the artifact; with shard=(i, N) compute only chunks c ≡ i (mod N)."""
    if cfg.rep not in REPRESENTATIONS:
        raise UserError(f"unknown representation '{cfg.rep}'; choose one of {', '.join(REPRESENTATIONS)}")
    rep = REPRESENTATIONS[cfg.rep]
    if cfg.params and cfg.rep != "less":
        raise UserError(f"--rep {cfg.rep} takes no --param options (got {cfg.params[0][0]}); drop them")
    pool, query = load_data(cfg)
    inputs = {"pool": pool.content_hash, "query": query.content_hash, **rep.identity(cfg)}
    if not artifacts.exists(root, artifacts.compute_id("featurize", _hashed_config(cfg), inputs)):
        _check_space(root, cfg, rep, len(pool) + len(query))  # a finished artifact needs no space

    def write(build: artifacts.Build) -> None:
        group = build.path / store.FEATURES
        with store.group_lock(group):
            store.open_group(group)  # create the root group before arrays
        token = SHARD.set(shard)
        try:
            attrs = rep.run(cfg, pool, query, group)
        finally:
            SHARD.reset(token)
        with store.group_lock(group):  # every shard computes the same attrs; writes are serialized
            store.set_attrs(group, {"representation": cfg.rep, "model": cfg.model, "n_pool": len(pool),
                                    "n_query": len(query), **attrs})
            store.write_json(build.path / "pool_ids.json", [ex.id for ex in pool.examples])  # export maps rows by id
        build.record(pool=_where(cfg.pool), query=_where(cfg.query), n_pool=len(pool), n_query=len(query),
                     query_subtasks=[ex.meta.get("subtask") for ex in query.examples],
                     pool_read={"fmt": cfg.fmt, "split": cfg.split, "columns": [list(c) for c in cfg.columns],
                                "dedup": cfg.dedup, **pool.meta.get("origin", {})})

    if shard == (0, 1):
        aid = artifacts.produce(root, "featurize", _hashed_config(cfg), inputs, write, resume=True)
    else:
        aid, done = artifacts.produce_shard(root, "featurize", _hashed_config(cfg), inputs, write, _complete)
        if not done:
            progress.note(f"featurize shard {shard[0]}/{shard[1]} done; {aid} completes when every shard has finished")
            return aid
    progress.note(f"featurize {cfg.rep}: {len(pool)} pool × {len(query)} query examples → {aid}")
    return aid


def _check_space(root: Path, cfg: FeaturizeConfig, rep: Representation, n_rows: int) -> None:
    """Fail before hours of work when the store's disk cannot hold the features."""
    import shutil

    dim, ckpts = rep.shape(cfg)
    need = int(n_rows * dim * (2 if cfg.dtype == "float16" else 4) * ckpts * 1.05) + (8 << 20)
    if cfg.rep == "less":
        need += 64 << 20  # warmup checkpoints: adapters and Adam moments
    probe = Path(root).resolve()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        raise UserError(f"store {root} has {free / 1e6:.1f} MB free but these features need about {need / 1e6:.1f} MB "
                        f"({n_rows} rows x {dim} dims x {ckpts} checkpoints); free space or pass --store on a larger disk")


def _complete(part: Path) -> bool:
    return store.features_complete(part / store.FEATURES)


def merge(root: Path, aid: str) -> None:
    """Finish a sharded feature artifact whose shards all wrote their chunks (e.g. the last one died)."""
    if artifacts.exists(root, aid):
        return
    part = artifacts.final_dir(root, aid).with_suffix(".part")
    if not part.is_dir():
        raise UserError(f"no unfinished artifact {aid} in {root}; check the id with `tselect ls`")
    if not artifacts.finish_if_complete(root, aid, _complete):
        raise UserError(f"{aid} still has chunks no shard has written; rerun the missing --shard i/N commands, then merge")
