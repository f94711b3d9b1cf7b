"""The distance stage: how close a selection's prefixes sit to the queries of a feature store.

Artifact `distance-<hash>`: `distances.json` with one row per budget b (coverage, chamfer and
OT distance between the first b selected rows and the queries; see tselect.select.distance).
Inputs: the feature artifact (whose queries and pool rows define S) and the selection. The
features may be another representation than the one the selection was made with, but must
cover the same pool (same content hash), so selection index i means the same example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

from tselect import artifacts, catalog, identity, lineage, progress, store
from tselect.errors import UserError

DISTANCES = "distances.json"


@dataclass(frozen=True)
class DistanceConfig:
    features: str
    """Feature artifact id: distances are measured between its queries and pool rows."""
    selection: str
    """Selection artifact id (from `tselect select`) over the same pool."""
    budgets: tuple[int, ...] = ()
    """Prefix sizes to measure (kept sorted and unique); empty = the whole selection."""

    NOT_HASHED: ClassVar[dict[str, str]] = {"features": "artifact id in the inputs",
                                            "selection": "artifact id in the inputs"}

    def __post_init__(self):
        bad = [b for b in self.budgets if b < 1]
        if bad:
            raise ValueError(f"--budget must be >= 1, got {bad[0]}")
        object.__setattr__(self, "budgets", tuple(sorted(set(self.budgets))))  # order and repeats mean nothing


def check_same_pool(root: Path, feat: artifacts.Artifact, sel: artifacts.Artifact) -> None:
    """UserError unless `sel` indexes the pool `feat` was computed on."""
    made_from = sel.inputs.get("features")
    if made_from == feat.id:
        return
    try:
        origin = catalog.resolve(root, made_from or "", stage="featurize")
    except UserError:
        raise UserError(f"selection {sel.id} was made from features {made_from}, which are not in the store, so "
                        f"its pool cannot be checked against {feat.id}; pass --features {made_from} or re-create it") from None
    if origin.inputs.get("pool") != feat.inputs.get("pool"):
        raise UserError(f"selection {sel.id} indexes the pool of {origin.id}, but {feat.id} was computed on another "
                        f"pool (content hashes differ); pass features of the same pool, e.g. --features {origin.id}")


def run(cfg: DistanceConfig, root: Path) -> str:
    from tselect.select.distance import selection_distances

    feat = catalog.resolve(root, cfg.features, stage="featurize")
    sel = catalog.resolve(root, cfg.selection, stage="select")
    check_same_pool(root, feat, sel)
    order = lineage.selection_indices(sel, max(cfg.budgets) if cfg.budgets else None)
    budgets = list(cfg.budgets) or [int(order.size)]
    hashed = identity.hashed(cfg)

    def write(build: artifacts.Build) -> None:
        feats = catalog.open_features(feat)
        rows = selection_distances(feats, order, budgets)
        store.write_json(build.path / DISTANCES, {"features": feat.id, "selection": sel.id, "n_query": feats.n_query,
                                                  "n_pool": feats.n_pool, "rows": rows})
        build.record(budgets=budgets, n_query=feats.n_query)

    aid = artifacts.produce(root, "distance", hashed, {"features": feat.id, "selection": sel.id}, write)
    progress.note(f"distance {sel.id} ↔ queries of {feat.id} at budgets {budgets} → {aid}")
    return aid


def read_rows(root: Path, aid: str) -> list[dict]:
    """The per-budget rows of a distance artifact (checksum-verified)."""
    art = catalog.resolve(root, aid, stage="distance")
    return store.read_json(catalog.checked_path(art, DISTANCES))["rows"]
