"""The featurize stage: pool and query examples → a feature store of unit rows per checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tselect import artifacts, catalog, identity, progress, store
from tselect.data import load_dataset
from tselect.errors import UserError
from tselect.featurize import embed, finish, less, rds, vectors
from tselect.featurize.common import SHARD, Checkpoint, copy_rows, write_unit_rows
from tselect.featurize.config import FeaturizeConfig
from tselect.lineage import data_location


@dataclass(frozen=True)
class Representation:
    """A registry entry: everything the stage, the experiment runner and the CLI know of a representation."""

    identity: Callable[[FeaturizeConfig], dict[str, str]]  # content identities for the id (model fingerprints, ...)
    rows: Callable  # (cfg, pool, query, **nested) -> (attrs, iterable of common.Checkpoint); writes nothing
    summary: str
    shape: Callable[[FeaturizeConfig], tuple[int, int]]  # (dim, checkpoints) before any work
    uses_lm: bool = False  # runs the base LM: an experiment's [experiment] model is its default --model
    cost: float = 0.0  # rough CPU seconds per row, for `tselect run --dry-run` ([estimate] overrides it)
    params: Callable[[FeaturizeConfig], object] | None = None  # parses cfg.params (UserError); None = takes none
    extra_bytes: int = 0  # disk beyond the feature rows (LESS: warmup checkpoints), for the space check
    shares_pool: bool = False  # pool rows are computed once per pool and copied for further query sets
    warmup: Callable[[FeaturizeConfig], object] | None = None  # recipe of a nested warmup artifact, if one is needed
    pool_key: Callable | None = None  # (cfg, pool, warmup_id) -> key: equal keys = byte-identical pool rows


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
        return 1, 1  # vectors.rows reports the unreadable file properly


def _less_shape(cfg: FeaturizeConfig) -> tuple[int, int]:
    from tselect.warmup import WARMUP_PRESETS

    lc = less.less_config(cfg)
    return lc.dim, WARMUP_PRESETS[lc.warmup].train.epochs


REPRESENTATIONS: dict[str, Representation] = {
    "embed": Representation(embed.identity, embed.rows, "sentence embeddings (all-MiniLM-L6-v2 by default)",
                            _embed_shape, cost=0.01),
    "rds": Representation(rds.identity, rds.rows, "RDS+: position-weighted mean of last hidden states", _rds_shape,
                          uses_lm=True, cost=0.2),
    "vectors": Representation(vectors.identity, vectors.rows, "bring your own .npy vectors", _vectors_shape),
    "less": Representation(less.identity, less.rows,
                           "LESS: Adam-preconditioned, projected LoRA gradients over warmup checkpoints",
                           _less_shape, uses_lm=True, cost=2.4, params=less.less_config, extra_bytes=64 << 20,
                           shares_pool=True, warmup=less.warmup_recipe, pool_key=less.pool_key_for),
}


def _hashed_config(cfg: FeaturizeConfig) -> dict:
    # Data and models enter the id by content, so the same files under other paths (or on
    # another host) give the same id.
    return identity.hashed(cfg)


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
    if cfg.params and rep.params is None:
        raise UserError(f"--rep {cfg.rep} takes no --param options (got {cfg.params[0][0]}); drop them")
    if rep.params is not None:
        rep.params(cfg)  # bad options fail before any data is read
    pool, query = load_data(cfg)
    inputs = {"pool": pool.content_hash, "query": query.content_hash, **rep.identity(cfg)}
    target = artifacts.compute_id("featurize", _hashed_config(cfg), inputs)
    if not artifacts.exists(root, target):
        _check_space(root, cfg, rep, len(pool) + len(query), target)  # a finished artifact needs no space

    def write(build: artifacts.Build) -> None:
        group = build.path / store.FEATURES
        if shard != (0, 1) and not finish.start_shard(root, build.id, group, shard):
            return  # another shard finished the artifact meanwhile: nothing of ours is missing
        with store.group_lock(group):
            store.open_group(group)  # create the root group before arrays
        token = SHARD.set(shard)
        try:
            nested = _prerequisites(root, rep, cfg, pool)
            donor = nested.pop("donor", None)
            attrs, checkpoints = rep.rows(cfg, pool, query, **nested)
            if "compute" in attrs:  # rows whose bits depend on the hardware: shards must agree
                from tselect.featurize.compute import claim_setup

                claim_setup(group, attrs["compute"])
            for ck in checkpoints:
                write_checkpoint(group, ck, (len(query), len(pool)), cfg.dtype, f"{cfg.rep} {ck.name}", donor)
        finally:
            SHARD.reset(token)
        with store.group_lock(group):  # shards' attrs writes are serialized
            store.write_json(build.path / "pool_ids.json", [ex.id for ex in pool.examples])  # export maps rows by id
            finish.record_shard(group, shard, {"representation": cfg.rep, "model": cfg.model, "n_pool": len(pool),
                                               "n_query": len(query), **attrs})
            if shard == (0, 1):  # one process: it holds the artifact lock, nobody else writes
                finish.merge_attrs(group)
        build.record(pool=data_location(cfg.pool), query=data_location(cfg.query), n_pool=len(pool), n_query=len(query),
                     query_subtasks=[ex.meta.get("subtask") for ex in query.examples],
                     pool_read={"fmt": cfg.fmt, "split": cfg.split, "columns": [list(c) for c in cfg.columns],
                                "dedup": cfg.dedup, **pool.meta.get("origin", {})})

    if shard == (0, 1):
        aid = artifacts.produce(root, "featurize", _hashed_config(cfg), inputs, write, resume=True)
    else:
        aid, done = artifacts.produce_shard(root, "featurize", _hashed_config(cfg), inputs, write, finish.complete)
        if not done:
            progress.note(f"featurize shard {shard[0]}/{shard[1]} done; {aid} completes when every shard has finished")
            return aid
    progress.note(f"featurize {cfg.rep}: {len(pool)} pool × {len(query)} query examples → {aid}")
    return aid


def write_checkpoint(group: Path, ck: Checkpoint, n: tuple[int, int], dtype: str, label: str,
                     donor: Path | None = None) -> None:
    """Write one checkpoint's query [n_query, dim] and pool [n_pool, dim] unit rows under group/name.

    With a donor feature group (same pool_key), its stored pool rows are copied as they are.
    """
    out = group / ck.name
    write_unit_rows(out, "query", n[0], ck.dim, dtype, ck.query, f"{label} query")
    if donor is not None:
        rows = store.CheckedRows(store.open_group(donor, mode="r")[f"{ck.name}/pool"], donor.parent, f"{ck.name}/pool")
        copy_rows(out, "pool", rows, f"{label} pool (copied)")  # a missing donor chunk fails, never copies zeros
    else:
        write_unit_rows(out, "pool", n[1], ck.dim, dtype, ck.pool, f"{label} pool")


def _prerequisites(root: Path, rep: Representation, cfg: FeaturizeConfig, pool) -> dict:
    """Nested artifacts and store discovery are the stage's: a representation never sees the store.

    A representation with a `warmup` recipe gets the finished, verified warmup (id, dir); one with
    a `pool_key` also gets `donor`, a finished feature group of the same key to copy pool rows from.
    """
    if rep.warmup is None:
        return {}
    from tselect.warmup import produce_warmup, verify_warmup

    wid = produce_warmup(root, cfg.model, pool, rep.warmup(cfg))
    verify_warmup(root, wid)
    out = {"warmup": (wid, Path(root) / "warmup" / wid)}
    if rep.pool_key is not None:
        out["donor"] = _pool_donor(root, rep.pool_key(cfg, pool, wid))
    return out


def _pool_donor(root: Path, key: str) -> Path | None:
    """A finished feature group in the store with the same pool rows (another query set), if any.

    Pool gradients cost N x checkpoints backward passes and do not depend on the queries, so
    featurizing a second target against the same pool and warmup copies them instead.
    """
    for final in sorted((Path(root) / "featurize").glob("featurize-*")):
        if final.suffix == ".part" or not artifacts.exists(root, final.name):
            continue
        try:
            if store.open_group(final / store.FEATURES, mode="r").attrs.get("pool_key") == key:
                catalog.resolve(root, final.name, stage="featurize")  # manifest checked; pinned against rm
                return final / store.FEATURES
        except (OSError, ValueError, KeyError, UserError):
            continue  # unreadable artifacts are `tselect verify`'s business, not a donor
    return None


def _check_space(root: Path, cfg: FeaturizeConfig, rep: Representation, n_rows: int, aid: str) -> None:
    """Fail before hours of work when the store's disk cannot hold the features."""
    import shutil

    dim, ckpts = rep.shape(cfg)
    need = int(n_rows * dim * (2 if cfg.dtype == "float16" else 4) * ckpts * 1.05)
    need += rep.extra_bytes  # e.g. LESS warmup checkpoints: adapters and Adam moments
    written = _bytes_written(root, aid)  # a rerun after a full disk needs only what is not written yet
    need = max(0, need - written) + (1 << 20 if written else 8 << 20)  # + metadata slack
    probe = Path(root).resolve()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        raise UserError(f"store {root} has {free / 1e6:.1f} MB free but these features need about {need / 1e6:.1f} MB "
                        f"({n_rows} rows x {dim} dims x {ckpts} checkpoints); free space or pass --store on a larger disk")


def _bytes_written(root: Path, aid: str) -> int:
    """Bytes an interrupted run of this exact artifact already wrote into its .part (kept on resume)."""
    part = artifacts.final_dir(root, aid).with_suffix(".part")
    if not part.is_dir() or part.is_symlink():
        return 0
    return sum(p.stat().st_size for p in part.rglob("*") if p.is_file() and not p.is_symlink())


def merge(root: Path, aid: str) -> None:
    """Finish a sharded feature artifact whose shards all finished (e.g. the last one's rename failed).

    A shard that died after its chunks but before its attrs is rerun instead (it recomputes nothing)."""
    if artifacts.exists(root, aid):
        return
    part = artifacts.final_dir(root, aid).with_suffix(".part")
    if not part.is_dir():
        raise UserError(f"no unfinished artifact {aid} in {root}; check the id with `tselect ls`")
    if not artifacts.finish_if_complete(root, aid, finish.complete):
        raise UserError(f"{aid} still has chunks or attrs no shard has written; rerun the missing --shard i/N commands "
                        "(finished chunks are kept), then merge")
