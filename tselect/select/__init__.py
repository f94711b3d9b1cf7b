"""The select stage: features (and optional scores) → an ordered list of pool indices."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import numpy as np

from tselect import artifacts, catalog, identity, progress, store
from tselect.errors import UserError
from tselect.select.inputs import SelectInputs
from tselect.similarity import feature_similarity
from tselect.select.registry import SELECTORS


@dataclass(frozen=True)
class SelectConfig:
    features: str
    """Feature artifact id (from `tselect featurize`)."""
    selector: str
    """A key of SELECTORS."""
    budget: int | None = None
    """Number of examples to order; None = the whole pool (every budget is a prefix)."""
    seed: int = 0
    """Seed for selectors that draw random numbers."""
    params: tuple[tuple[str, str], ...] = ()
    """Selector parameters as (name, value) pairs, e.g. (("eps", "0.01"),)."""
    scores: str | None = None
    """Score artifact id, for score-based selectors."""
    exclude: tuple[str, ...] = ()
    """Selection artifact ids whose examples must not be chosen (strict_random)."""

    NOT_HASHED: ClassVar[dict[str, str]] = {}  # artifact ids are hashed here and in the inputs


def parse_params(selector: str, pairs: tuple[tuple[str, str], ...]):
    """Build the selector's parameter dataclass from string pairs, converting by field type."""
    cls = SELECTORS[selector].params
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for name, raw in pairs:
        if name not in fields:
            valid = ", ".join(fields) or "none"
            raise UserError(f"selector '{selector}' has no parameter '{name}'; valid parameters: {valid}")
        default = fields[name].default
        inf_ok = isinstance(default, float) and math.isinf(default)  # e.g. uot reg_m1=inf: a balanced marginal
        values[name] = _convert(raw, hints[name], name, inf_ok)
    try:
        return cls(**values)
    except (ValueError, TypeError, OverflowError) as e:
        raise UserError(f"bad parameter for selector '{selector}': {e}") from None


def _convert(raw: str, hint, name: str, inf_ok: bool = False):
    base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    kind = base[0]
    if raw.lower() in ("none", "null") and type(None) in typing.get_args(hint):
        return None
    from tselect.validate import parse_number

    where = f"--param {name}"
    if kind is bool:
        return raw.lower() in ("1", "true", "yes", "on")
    if kind in (int, float):  # inf, NaN, 1e999 and 5,000-digit integers are one line, not a crash
        return parse_number(name, raw, kind, where, inf_ok)
    if kind is str:
        return raw
    if typing.get_origin(kind) is tuple:
        return tuple(parse_number(name, x, float, where) for x in raw.split(","))
    return raw


def _load_inputs(cfg: SelectConfig, root: Path, needs: frozenset[str]) -> tuple[SelectInputs, dict, dict]:
    feat_art = catalog.resolve(root, cfg.features, stage="featurize")
    feats = catalog.open_features(feat_art)
    inp = SelectInputs(n_pool=feats.n_pool, sim=feature_similarity(feats), pool_features=feats.pools,
                       query_features=feats.queries, weights=feats.weights,
                       query_subtasks=_subtasks(feat_art.record.get("query_subtasks")))
    ids = {"features": feat_art.id}
    if cfg.scores is not None or "scores" in needs:
        if cfg.scores is None:
            raise UserError(f"selector '{cfg.selector}' orders by a score artifact; pass --scores ID (from `tselect score`)")
        score_art = catalog.resolve(root, cfg.scores, stage="scores")
        if score_art.inputs.get("pool") != feat_art.inputs.get("pool"):
            raise UserError(f"score artifact {score_art.id} was computed on another pool than {feat_art.id}; score the same pool")
        inp.scores = store.read_array(catalog.checked_path(score_art, "scores.npy"))
        ids["scores"] = score_art.id
    if cfg.exclude:
        sels = [catalog.resolve(root, s, stage="select") for s in cfg.exclude]
        for s in sels:
            other = catalog.resolve(root, s.inputs["features"], stage="featurize")
            if other.inputs.get("pool") != feat_art.inputs.get("pool"):
                raise UserError(f"--exclude {s.id} selects from another pool than {feat_art.id}; exclude selections of the same pool")
        inp.exclude = np.unique(np.concatenate([store.read_indices(catalog.checked_path(s, "indices.json")) for s in sels]))
        ids["exclude"] = ",".join(sorted(s.id for s in sels))
    return inp, ids, feats.attrs


def _subtasks(labels):
    """Query subtask labels, or None when no query carries one (then all queries are one task)."""
    if not labels or all(label is None for label in labels):
        return None
    return [str(label) if label is not None else "" for label in labels]


def run(cfg: SelectConfig, root: Path) -> str:
    if cfg.selector not in SELECTORS:
        raise UserError(f"unknown selector '{cfg.selector}'; choose one of {', '.join(SELECTORS)}")
    sel = SELECTORS[cfg.selector]
    params = parse_params(cfg.selector, cfg.params)
    inp, ids, attrs = _load_inputs(cfg, root, sel.needs)
    budget = inp.n_pool if cfg.budget is None else cfg.budget
    if not 1 <= budget <= inp.n_pool:
        raise UserError(f"--budget {cfg.budget} is outside 1..{inp.n_pool} (the pool size); pass a smaller budget or omit it")
    hashed = identity.hashed(cfg)
    for key in ("features", "scores", "exclude"):
        hashed.pop(key)
    hashed["params"] = dataclasses.asdict(params)

    def write(build: artifacts.Build) -> None:
        empty = _empty_pool_rows(inp.pool_features, attrs)  # in the writer: a cached rerun scans nothing
        try:  # asked for `budget + len(empty)`: every budget is a prefix, so the first `budget` usable are kept
            out = sel.fn(inp, min(inp.n_pool, budget + len(empty)), params, cfg.seed)
        except ValueError as e:
            raise UserError(f"selector '{cfg.selector}': {e}") from None
        # A selector may return (order, score of each chosen example) to record what it used.
        order, used = out if isinstance(out, tuple) else (out, None)
        order = np.asarray(order, dtype=np.int64)
        _check_order(order, inp.n_pool)
        order, used = usable_first(order, None if used is None else np.asarray(used), empty, budget)
        extra = {"scores": None if used is None else [round(float(x), 6) for x in used],
                 "example_ids": selected_ids(root, ids["features"], order)}
        store.write_indices(build.path / "indices.json", order, extra)
        build.record(selector=cfg.selector, n_selected=int(order.size), n_pool=inp.n_pool,
                     empty_rows_last=int(len(empty)))

    aid = artifacts.produce(root, "select", hashed, ids, write)
    progress.note(f"select {cfg.selector}: {budget} of {inp.n_pool} → {aid}")
    return aid


def selected_ids(root: Path, features: str, order: np.ndarray) -> list[str] | None:
    """Content ids of the chosen rows, so export finds them in a moved or grown pool; None for
    feature stores made before featurize recorded `pool_ids.json`."""
    art = catalog.resolve(root, features, stage="featurize")
    if "pool_ids.json" not in (art.manifest.get("files") or {}):
        return None
    pool_ids = store.read_json(catalog.checked_path(art, "pool_ids.json"))
    return [pool_ids[int(i)] for i in order]


def _empty_pool_rows(pools, attrs: dict) -> np.ndarray:
    """Pool rows with no feature at all (LESS: no response token within max_length, so no gradient).

    Their similarity to every query is exactly 0, which beats every negative cosine: left alone,
    top-k would pick rows that cannot be trained on. Newer stores list them; older ones are scanned.
    """
    if "empty_pool_rows" in attrs:
        return np.asarray(attrs["empty_pool_rows"], dtype=np.int64)
    if not (attrs.get("zero_rows") or {}).get("pool"):
        return np.zeros(0, dtype=np.int64)
    first, step, found = pools[0], 4096, []
    for start in range(0, first.shape[0], step):
        block = np.asarray(first[start:start + step], dtype=np.float32)
        found.append(start + np.flatnonzero(~block.any(axis=1)))
    return np.concatenate(found).astype(np.int64)


def usable_first(order: np.ndarray, used: np.ndarray | None, empty: np.ndarray, budget: int):
    """The first `budget` of `order` that are not empty rows; empty rows fill up only if nothing else is left.

    order [K] distinct indices (K >= budget unless the pool is smaller); used [K] or None.
    """
    if empty.size == 0:
        return order[:budget], None if used is None else used[:budget]
    bad = np.isin(order, empty)
    pos = np.concatenate([np.flatnonzero(~bad), np.flatnonzero(bad)])[:budget]  # stable: usable, then empty
    return order[pos], None if used is None else used[pos]


def _check_order(order: np.ndarray, n_pool: int) -> None:
    # Internal invariants of every selector: distinct, in-range indices.
    assert order.ndim == 1 and np.unique(order).size == order.size, "selector returned duplicates"
    assert order.size == 0 or (order.min() >= 0 and order.max() < n_pool), "selector index out of range"


@dataclass(frozen=True)
class QuantileConfig:
    features: str
    """Feature artifact id the ordering was made from."""
    order: str
    """Select artifact id of a whole-pool ordering (budget None)."""
    quantile_bin: int
    """Which bin to train on; 0 = nearest to the queries."""
    bins: int = 10
    """Contiguous bins the ordering is cut into."""
    per_bin: int = 500
    """Rows kept from the head of the bin."""

    NOT_HASHED: ClassVar[dict[str, str]] = {"features": "artifact id in the inputs",
                                            "order": "artifact id in the inputs (as source)"}


def run_quantile(cfg: QuantileConfig, root: Path) -> str:
    """A select artifact holding the first `per_bin` rows of bin k of a whole-pool ordering.

    Bins are contiguous slices of the order as equal as possible (sizes differ by at most one),
    bin 0 nearest to the queries; finetune consumes the artifact like any selection.
    """
    from tselect import lineage

    order = lineage.selection_indices(catalog.resolve(root, cfg.order, stage="select"))
    head = np.array_split(order, cfg.bins)[cfg.quantile_bin][: cfg.per_bin]  # int64[<= per_bin]

    def write(build: artifacts.Build) -> None:
        store.write_indices(build.path / "indices.json", head, {"quantile_bin": cfg.quantile_bin, "bins": cfg.bins, "scores": None,
                                                                 "example_ids": selected_ids(root, cfg.features, head)})
        build.record(selector="quantile", n_selected=int(head.size), n_pool=int(order.size), quantile_bin=cfg.quantile_bin,
                     bins=cfg.bins)

    config = identity.hashed(cfg, selector="quantile")
    return artifacts.produce(root, "select", config, {"features": cfg.features, "source": cfg.order}, write)
