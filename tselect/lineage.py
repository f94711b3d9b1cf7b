"""Walking artifact inputs back to the data they were made from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tselect import artifacts, catalog, store
from tselect.data import Dataset, load_dataset
from tselect.errors import UserError


def data_location(spec: str) -> str:
    """How a record names data: builtin names and hub ids as they are, files as absolute paths,
    so later stages find them from any working directory."""
    from tselect.data.hub import looks_like_hub_id

    return spec if spec.startswith("builtin:") or looks_like_hub_id(spec) else str(Path(spec).resolve())


def features_of(root: Path, art: artifacts.Artifact) -> artifacts.Artifact:
    """The feature artifact behind a selection (or the artifact itself if it is one)."""
    if art.stage == "featurize":
        return art
    if art.stage == "select":
        return catalog.resolve(root, art.inputs["features"], stage="featurize")
    raise UserError(f"artifact {art.id} is a {art.stage} artifact; a selection or feature artifact is needed")


def _read_pool(feats: artifacts.Artifact, spec: str | None) -> Dataset:
    """The pool read as featurize read it (format, split, columns, dedup), from `spec` or the recorded place."""
    opts = feats.record.get("pool_read") or {}
    if spec is None and opts.get("kind") == "hub":  # the commit featurize read, not wherever main points now
        spec = f"{opts['repo_id']}@{opts['commit']}"
    return load_dataset(spec or feats.record.get("pool"), opts.get("fmt", feats.config.get("fmt")),
                        split=opts.get("split"), columns=tuple(tuple(c) for c in opts.get("columns", ())),
                        dedup=bool(opts.get("dedup")), flag="--pool")


def load_pool(root: Path, art: artifacts.Artifact, spec: str | None = None) -> Dataset:
    """The pool a selection/feature artifact indexes, checked against the recorded content hash."""
    feats = features_of(root, art)
    pool = _read_pool(feats, spec)
    if pool.content_hash != feats.inputs["pool"]:
        raise UserError(f"pool data '{spec or feats.record.get('pool')}' changed since {feats.id} was made (content "
                        "hash differs); restore the original file or featurize the new one")
    return pool


def selected_examples(root: Path, art: artifacts.Artifact, budget: int | None = None, spec: str | None = None):
    """[(rank, example, score or None)] of a selection's first `budget`, from the recorded pool or `spec`.

    Selections that carry example ids find their rows by id, so the pool may have moved, been
    reordered or grown; every id must be found. Older selections fall back to pool positions,
    which need the exact pool the features were made from (checked by content hash).
    """
    data = store.read_json(catalog.checked_path(art, "indices.json"))
    order = selection_indices(art, budget)
    scores = data.get("scores") or [None] * order.size
    ids = data.get("example_ids")
    if not ids:
        pool = load_pool(root, art, spec)
        return [(r, pool.examples[int(i)], scores[r]) for r, i in enumerate(order)]
    pool = _read_pool(features_of(root, art), spec)
    by_id = {ex.id: ex for ex in pool.examples}
    missing = [x for x in ids[:order.size] if x not in by_id]
    if missing:
        raise UserError(f"{len(missing)} of the {order.size} selected examples (first id {missing[0]}) are not in pool "
                        f"'{pool.name}'; pass the pool the features were made from with --pool")
    return [(r, by_id[x], scores[r]) for r, x in enumerate(ids[:order.size])]


def selection_indices(art: artifacts.Artifact, budget: int | None = None) -> np.ndarray:
    order = store.read_indices(catalog.checked_path(art, "indices.json"))
    if budget is not None:
        if budget < 1 or budget > order.size:
            raise UserError(f"--budget {budget} is outside 1..{order.size} (the length of selection {art.id}); "
                            "pass a smaller budget or select more")
        order = order[:budget]
    return order


def base_model_spec(art: artifacts.Artifact) -> str | None:
    """The --model spec a finetune artifact was trained from (None = the embedded default)."""
    return art.record.get("model")


def trained_path(art: artifacts.Artifact) -> Path:
    """The adapter/ or model/ directory inside a finetune artifact."""
    return art.path / art.record.get("output", "adapter")
