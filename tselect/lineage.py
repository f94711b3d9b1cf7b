"""Walking artifact inputs back to the data they were made from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tselect import artifacts, store
from tselect.data import Dataset, load_dataset
from tselect.errors import UserError


def data_location(spec: str) -> str:
    """How a record names data: builtin names as they are, files as absolute paths, so later
    stages find them from any working directory."""
    return spec if spec.startswith("builtin:") else str(Path(spec).resolve())


def features_of(root: Path, art: artifacts.Artifact) -> artifacts.Artifact:
    """The feature artifact behind a selection (or the artifact itself if it is one)."""
    if art.stage == "featurize":
        return art
    if art.stage == "select":
        return artifacts.resolve(root, art.inputs["features"], stage="featurize")
    raise UserError(f"artifact {art.id} is a {art.stage} artifact; a selection or feature artifact is needed")


def load_pool(root: Path, art: artifacts.Artifact) -> Dataset:
    """The pool a selection/feature artifact indexes, checked against the recorded content hash."""
    feats = features_of(root, art)
    spec = feats.record.get("pool")
    pool = load_dataset(spec, feats.config.get("fmt"))
    if pool.content_hash != feats.inputs["pool"]:
        raise UserError(f"pool data '{spec}' changed since {feats.id} was made (content hash differs); "
                        "restore the original file or featurize the new one")
    return pool


def selection_indices(art: artifacts.Artifact, budget: int | None = None) -> np.ndarray:
    order = store.read_indices(artifacts.checked_path(art, "indices.json"))
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
