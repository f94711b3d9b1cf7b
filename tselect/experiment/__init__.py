"""Experiment grids: a TOML spec → an ordered list of cells → in-process stage calls.

A cell is one trained-and-evaluated point (or the zero-shot base model). Kinds:

    zero_shot  target                           evaluate the base model
    grid       rep, selector, target, seed, b   featurize → select (max budget) → finetune(b) → evaluate
    random     seed, b   (every target)         random order of the pool → finetune(b) → evaluate per target
    full       seed      (every target)         finetune on the whole pool → evaluate per target
    quantile   rep, target, bin, seed           RR-order the pool, cut it into bins, train on a bin's head

Every stage is content-addressed, so shared work (features per (rep, target), one selection per
(rep, selector, target)) is made once and a rerun is a no-op. A finished cell is itself an
artifact (stage "cell") whose id follows from the cell, its settings and the content hashes of its
data and model, so a rerun skips it without loading a model, `--part i/N` hosts can split the grid, and `--collect` can check
that all cells exist before writing the "experiment" artifact that lists them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from tselect import artifacts, identity, progress, store
from tselect.errors import UserError
from tselect.experiment.spec import Spec, load_spec  # noqa: F401  (re-exported for callers)

KINDS = ("zero_shot", "grid", "random", "full", "quantile")


@dataclass(frozen=True)
class Cell:
    kind: str
    targets: tuple[str, ...]  # target labels evaluated by this cell
    rep: str | None = None
    selector: str | None = None
    budget: int | None = None
    seed: int | None = None
    bin: int | None = None  # quantile bin, 0 = nearest to the queries

    @property
    def key(self) -> str:
        """e.g. grid/rds/round_robin/sciq/b16/s0, random/b16/s0, quantile/less/round_robin/sciq/q3/s0."""
        single = self.kind in ("grid", "quantile", "zero_shot")  # random and full cover every target
        parts = [self.kind, self.rep, self.selector if self.kind != "random" else None,
                 *(self.targets if single else ()), None if self.bin is None else f"q{self.bin}",
                 None if self.budget is None else f"b{self.budget}", None if self.seed is None else f"s{self.seed}"]
        return "/".join(p for p in parts if p is not None)


def plan(spec: Spec, n_pool: int) -> list[Cell]:
    """Every cell of the grid, in a fixed order (the order `--part` splits by)."""
    labels = tuple(spec.targets)
    cells = [Cell("zero_shot", (t,)) for t in labels]
    cells += [Cell("grid", (t,), rep, sel, b, s) for t in labels for rep in spec.representations
              for sel in spec.selectors for s in spec.seeds for b in spec.budgets]
    cells += [Cell("random", labels, selector="random", budget=b, seed=s) for s in spec.random_seeds for b in spec.budgets]
    if spec.full and n_pool <= spec.full_max_pool:
        cells += [Cell("full", labels, seed=s) for s in spec.full_seeds]
    q = spec.quantile
    if q is not None:
        cells += [Cell("quantile", (t,), rep, q.selector, seed=s, bin=k) for rep in q.representations
                  for t in q.targets for s in q.seeds for k in range(q.bins)]
    return cells


# --- the stages, called in-process and memoized per run ---------------------------------------

class Stages:
    """Stage calls for one spec; each config is run at most once per process."""

    def __init__(self, spec: Spec, root: Path, launcher: str | None = None):
        self.spec, self.root, self._memo, self.launcher = spec, root, {}, launcher

    def _call(self, run: Callable[[Any, Path], str], cfg) -> str:
        key = (run.__module__, repr(cfg))
        if key not in self._memo:
            self._memo[key] = run(cfg, self.root)
        return self._memo[key]

    def _launched(self, run: Callable[[Any, Path], str], cfg) -> str:
        """Fine-tune / evaluate through the launcher (several GPUs per cell) when one is set."""
        if self.launcher is None:
            return self._call(run, cfg)
        from tselect import distributed

        key = (run.__module__, repr(cfg))
        if key not in self._memo:
            self._memo[key] = distributed.launch(self.launcher, cfg, str(Path(self.root).resolve()))
        return self._memo[key]

    def features(self, rep: str, target: str) -> str:
        from tselect import featurize

        return self._call(featurize.run, self.spec.featurize_config(rep, target))

    def select(self, features: str, selector: str, budget: int | None, seed: int = 0) -> str:
        from tselect import select

        params = tuple(sorted(self.spec.selector_params.get(selector, {}).items()))
        return self._call(select.run, select.SelectConfig(features=features, selector=selector, budget=budget,
                                                          seed=seed, params=params))

    def finetune(self, selection: str, budget: int | None, seed: int) -> str:
        from tselect import finetune

        pool = self.spec.pool if selection == "full" else None
        return self._launched(finetune.run, finetune.FinetuneConfig(selection=selection, budget=budget, pool=pool,
                                                                model=self.spec.model, train=self.spec.train_config(seed)))

    def evaluate(self, target: str, finetune: str | None) -> str:
        from tselect import evaluate

        return self._launched(evaluate.run, self.spec.evaluate_config(target, finetune))

    def distance(self, features: str, selection: str, budgets: tuple[int, ...]) -> str:
        from tselect import distance

        return self._call(distance.run, distance.DistanceConfig(features=features, selection=selection, budgets=budgets))

    def quantile_bin(self, features: str, order: str, k: int) -> str:
        from tselect import select

        q = self.spec.quantile
        return self._call(select.run_quantile, select.QuantileConfig(features=features, order=order, quantile_bin=k,
                                                                     bins=q.bins, per_bin=q.per_bin))


# --- one cell ---------------------------------------------------------------------------------

def run_cell(st: Stages, cell: Cell) -> dict[str, Any]:
    """The cell's artifact ids: featurize/select/finetune (if any), evaluate and distance per target."""
    spec, ids = st.spec, {}
    budgets = tuple(spec.budgets)
    if cell.kind == "zero_shot":
        ids["evaluate"] = {cell.targets[0]: st.evaluate(cell.targets[0], None)}
        return ids
    if cell.kind in ("grid", "quantile"):
        target = cell.targets[0]
        ids["featurize"] = f = st.features(cell.rep, target)
        if cell.kind == "grid":
            ids["select"] = sel = st.select(f, cell.selector, max(budgets))
            ids["distance"] = {f"{cell.rep}@{target}": st.distance(f, sel, budgets)}
            budget = cell.budget
        else:
            ids["order"] = st.select(f, cell.selector, None)
            ids["select"] = sel = st.quantile_bin(f, ids["order"], cell.bin)
            ids["distance"] = {f"{cell.rep}@{target}": st.distance(f, sel, ())}
            budget = None
    elif cell.kind == "random":
        # Random ignores the queries: one order per seed (from the first rep's features of the first
        # target) serves every target, so its finetunes are shared; distances use each (rep, target).
        ids["featurize"] = f = st.features(spec.representations[0], cell.targets[0])
        ids["select"] = sel = st.select(f, "random", max(budgets), seed=cell.seed)
        ids["distance"] = {f"{rep}@{t}": st.distance(st.features(rep, t), sel, budgets)
                           for rep in spec.representations for t in cell.targets}
        budget = cell.budget
    else:  # full
        sel, budget = "full", None
    ids["finetune"] = ft = st.finetune(sel, budget, cell.seed)
    ids["evaluate"] = {t: st.evaluate(t, ft) for t in cell.targets}
    return ids


def _id_values(ids: dict) -> list[str]:
    return [x for v in ids.values() for x in (v.values() if isinstance(v, dict) else [v])]


def cell_id(spec: Spec, cell: Cell, identity: dict[str, str]) -> str:
    """The cell artifact's id: computable from the spec and content identities, before any run."""
    return artifacts.compute_id("cell", spec.cell_settings(cell), identity)


def cell_done(root: Path, aid: str) -> bool:
    """The cell artifact exists and so does every artifact it lists (none was removed since)."""
    if not artifacts.exists(root, aid):
        return False
    ids = store.read_json(artifacts.final_dir(root, aid) / "cell.json")["ids"]
    return all(artifacts.exists(root, x) for x in _id_values(ids))


def make_cell(st: Stages, cell: Cell, identity: dict[str, str]) -> str:
    """Run the cell's stages (no-ops for existing artifacts) and write the cell artifact."""
    if artifacts.exists(st.root, cell_id(st.spec, cell, identity)):
        run_cell(st, cell)  # an artifact of the cell was removed: re-make it under the same id
        return cell_id(st.spec, cell, identity)

    def write(build: artifacts.Build) -> None:
        ids = run_cell(st, cell)
        store.write_json(build.path / "cell.json", {"key": cell.key, "cell": asdict(cell), "ids": ids})
        build.record(key=cell.key, kind=cell.kind)

    return artifacts.produce(st.root, "cell", st.spec.cell_settings(cell), identity, write)


@dataclass(frozen=True)
class ExperimentConfig:
    spec: str
    """Experiment TOML file (see examples/experiments/)."""
    part: tuple[int, int] | None = None
    """Run only cells whose index ≡ i mod N, as (i, N); None = every cell."""
    collect: bool = False
    """Run nothing; write the experiment artifact if every cell exists."""
    launcher: str | None = None
    """Run each fine-tune / evaluate as `<launcher> -m tselect ...` (e.g. "torchrun --nproc_per_node 8")."""

    NOT_HASHED: ClassVar[dict[str, str]] = {
        "launcher": "how many processes run a cell's stages, not what they compute",
        "spec": "the TOML's contents (Spec) are hashed, not its path",
        "part": "which share of the cells this host runs, not what they compute",
        "collect": "whether to run cells first, not what the experiment holds"}


def run(cfg: ExperimentConfig, root: Path) -> str | None:
    """The experiment stage: the experiment id, or None after a `part` run."""
    return run_experiment(load_spec(cfg.spec), root, cfg.part, cfg.collect, cfg.launcher)


# --- the whole grid -----------------------------------------------------------------------------

def run_experiment(spec: Spec, root: Path, part: tuple[int, int] | None = None, collect: bool = False,
                   launcher: str | None = None) -> str | None:
    """Run (a part of) the grid; returns the experiment id, or None after a `--part` run."""
    ident = spec.identity()
    cells = plan(spec, ident.n_pool)
    if spec.full and ident.n_pool > spec.full_max_pool:
        progress.note(f"full-data cells skipped: the pool has {ident.n_pool} rows > full_max_pool = {spec.full_max_pool}")
    if not collect:
        mine = [(k, c) for k, c in enumerate(cells) if part is None or k % part[1] == part[0]]
        _run_cells(Stages(spec, root, launcher), mine, ident)
    if part is not None and not collect:
        progress.note(f"part {part[0]}/{part[1]}: {len(mine)} of {len(cells)} cells done; once every part has "
                      f"finished, `tselect run {spec.source} --collect` writes the experiment artifact")
        return None
    return _collect(spec, root, cells, ident)


def _run_cells(st: Stages, mine: list[tuple[int, Cell]], ident) -> None:
    """Run the cells not done yet, one progress line before and after each (stderr)."""
    todo = [(k, c) for k, c in mine if not cell_done(st.root, cell_id(st.spec, c, ident.cell_inputs(c)))]
    progress.note(f"{len(mine)} cells: {len(mine) - len(todo)} already done, {len(todo)} to run")
    started, failed = time.time(), []
    for done, (k, cell) in enumerate(todo, 1):
        progress.note(f"[bold]cell {done}/{len(todo)}[/] #{k} {cell.key}")
        t0 = time.time()
        try:
            make_cell(st, cell, ident.cell_inputs(cell))
        except UserError as e:  # one bad cell (e.g. a selection nothing of which fits max_length) spares the rest
            failed.append(f"{cell.key}: {e}")
            progress.note(f"  [red]failed[/]: {e}")
            continue
        elapsed = time.time() - started
        eta = _hms(elapsed / done * (len(todo) - done))
        progress.note(f"  done in {_hms(time.time() - t0)} · {100 * done // len(todo)}% · elapsed {_hms(elapsed)} · eta ~{eta}")
    if failed:
        raise UserError(f"{len(failed)} of {len(todo)} cells failed (first: {failed[0]}); the others are kept: "
                        "fix the cause and rerun to fill the gaps")


def _hms(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def _collect(spec: Spec, root: Path, cells: list[Cell], ident) -> str:
    """The experiment artifact: every cell with its artifact ids, once all cells exist."""
    rows, missing = [], []
    for k, cell in enumerate(cells):
        aid = cell_id(spec, cell, ident.cell_inputs(cell))
        if not cell_done(root, aid):
            missing.append(f"#{k} {cell.key}")
            continue
        body = store.read_json(artifacts.final_dir(root, aid) / "cell.json")
        rows.append({"index": k, "key": cell.key, "cell_id": aid, "cell": body["cell"], "ids": body["ids"]})
    if missing:
        raise UserError(f"{len(missing)} of {len(cells)} cells are not done ({', '.join(missing[:3])}"
                        f"{', …' if len(missing) > 3 else ''}); run `tselect run {spec.source}` (or the missing "
                        "--part) into this store first")
    digest = hashlib.sha256(artifacts.canonical_json([r["cell_id"] for r in rows]).encode()).hexdigest()

    def write(build: artifacts.Build) -> None:
        store.write_json(build.path / "cells.json", {"name": spec.name, "targets": spec.targets, "cells": rows})
        store.write_json(build.path / "spec.json", spec.as_dict())
        build.record(name=spec.name, n_cells=len(rows), kinds={k: sum(r["cell"]["kind"] == k for r in rows) for k in KINDS})

    aid = artifacts.produce(root, "experiment", identity.hashed(spec), {"cells": digest}, write)
    progress.note(f"experiment {spec.name}: {len(rows)} cells → {aid}")
    return aid


# --- sizing (--dry-run) ---------------------------------------------------------------------------

# Rough seconds per unit on a quiet 2-core CPU with the embedded 135M model at ~128 tokens;
# an [estimate] table in the TOML overrides them (e.g. with GPU numbers).
# Featurize seconds per row come from each representation's registry entry (`cost`).
COSTS = {"train_example": 0.6, "eval_item": 0.35, "query_row": 0.1, "stage_overhead": 6.0, "query_rows": 32}


def estimate(spec: Spec, cells: list[Cell], n_pool: int) -> dict[str, float]:
    """Work counts and a rough wall-time estimate (seconds) for a list of cells."""
    from tselect.featurize import REPRESENTATIONS

    c = {**COSTS, **spec.estimate}
    per_row = {**{name: r.cost for name, r in REPRESENTATIONS.items()}, **spec.estimate.get("featurize_row", {})}
    shared = {name for name, r in REPRESENTATIONS.items() if r.shares_pool}
    epochs = int(spec.train.get("epochs", 2))
    limit = spec.evaluate.get("limit")
    q = spec.quantile
    feats = {(cl.rep, t) for cl in cells if cl.kind in ("grid", "quantile") for t in cl.targets}
    feats |= {(r, t) for cl in cells if cl.kind == "random" for r in spec.representations for t in cl.targets}
    trained = [cl for cl in cells if cl.kind != "zero_shot"]
    examples = {"grid": lambda cl: cl.budget, "random": lambda cl: cl.budget, "full": lambda cl: n_pool,
                "quantile": lambda cl: min(q.per_bin, -(-n_pool // q.bins))}
    train_rows = sum(examples[cl.kind](cl) for cl in trained) * epochs
    n_eval = sum(len(cl.targets) for cl in cells)
    items = n_eval * (limit or 500)
    queries = n_eval * min(limit or c["query_rows"], c["query_rows"])
    # Pool rows of a `shares_pool` representation (LESS) are computed once per pool, copied for every further target.
    pool_rows = {rep: n_pool * per_row.get(rep, 0.2) for rep, _ in feats}
    feat_rows = (sum(c["query_rows"] * per_row.get(rep, 0.2) for rep, _ in feats)
                 + sum(pool_rows[rep] for rep, _ in feats if rep not in shared)
                 + sum(pool_rows[rep] for rep in shared if rep in pool_rows))
    seconds = (train_rows * c["train_example"] + items * c["eval_item"] + queries * c["query_row"]
               + (len(trained) + n_eval + len(feats)) * c["stage_overhead"] + feat_rows)
    return {"cells": len(cells), "featurize": len(feats), "finetunes": len(trained), "train_example_epochs": train_rows,
            "evaluations": n_eval, "eval_items": items, "seconds": round(seconds)}
