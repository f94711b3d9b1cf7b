"""A fake experiment in a tmp store: hand-written metrics.json, distances and wall times, no model."""

from __future__ import annotations

import json
from pathlib import Path

from tselect import artifacts, store


def _artifact(root: Path, stage: str, key: dict, files: dict[str, object], wall: float, record: dict | None = None) -> str:
    def write(build: artifacts.Build) -> None:
        for rel, obj in (files or {"fake.json": {}}).items():  # every artifact holds a file (reads check it)
            store.write_json(build.path / rel, obj)
        build.record(**(record or {}))

    aid = artifacts.produce(root, stage, key, {}, write)
    manifest_path = artifacts.final_dir(root, aid) / artifacts.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["wall_time_s"] = wall  # the manifest is not in its own checksum table
    manifest_path.write_text(json.dumps(manifest))
    return aid


N_ITEMS = 100  # eval items of every fake evaluation; the same ids in every cell, so methods pair by item


def item_losses(loss: float) -> list[float]:
    """Per-item losses with mean `loss`: ±0.05 alternating around it (N_ITEMS is even)."""
    return [loss + (0.05 if i % 2 else -0.05) for i in range(N_ITEMS)]


def item_correct(acc_norm: float) -> list[float]:
    """Per-item correctness with mean `acc_norm`: the first round(acc_norm · N) items are right."""
    k = round(acc_norm * N_ITEMS)
    return [1.0 if i < k else 0.0 for i in range(N_ITEMS)]


def items(loss: float, acc_norm: float | None) -> dict:
    """The `items` entry tselect.report.gather reads from metrics(loss, acc_norm)."""
    out = {"query_loss": {f"q{i}": v for i, v in enumerate(item_losses(loss))}}
    if acc_norm is not None:
        out["acc_norm"] = {f"e{i}": v for i, v in enumerate(item_correct(acc_norm))}
    return out


def metrics(loss: float, acc_norm: float | None) -> dict:
    ev = {"n": N_ITEMS, "n_unscored": 0}
    if acc_norm is not None:
        per = [{"id": f"e{i}", "gold": 0, "pred": 1, "pred_norm": 0 if c else 1, "loglikes": [0.0, 0.0]}
               for i, c in enumerate(item_correct(acc_norm))]
        ev["mc"] = {"n": N_ITEMS, "acc": acc_norm - 0.01, "acc_norm": acc_norm, "per_example": per}
    per_q = [{"id": f"q{i}", "loss": v, "n_tokens": 3} for i, v in enumerate(item_losses(loss))]
    return {"query": {"loss": loss, "n": N_ITEMS, "n_skipped": 0, "per_example": per_q}, "eval": ev}


def fake_experiment(root: Path, results: list[dict], targets=("t1",), name: str = "fake") -> str:
    """results: dicts with kind, target, acc_norm, loss and optionally rep, selector, budget, seed,
    bin, dist {rep: (coverage, chamfer, ot)}, walls {stage: seconds}. Returns the experiment id."""
    cells = []
    for i, r in enumerate(results):
        walls = {"featurize": 10.0, "select": 1.0, "finetune": 20.0, "evaluate": 5.0, **r.get("walls", {})}
        cell = {"kind": r["kind"], "targets": [r["target"]], "rep": r.get("rep"), "selector": r.get("selector"),
                "budget": r.get("budget"), "seed": r.get("seed"), "bin": r.get("bin")}
        ids = {"evaluate": {r["target"]: _artifact(root, "evaluate", {"i": i}, {"metrics.json": metrics(r["loss"], r["acc_norm"])},
                                                   walls["evaluate"])}}
        if r["kind"] != "zero_shot":
            n = r.get("budget") or 0
            curve = {"step": [1, 2, 3], "loss": [2.0, 1.5 + i / 100, 1.2], "lr": [1e-4, 1e-4, 0.0]}
            ids["finetune"] = _artifact(root, "finetune", {"i": i, "lr": 1e-4}, {"train_curve.json": curve},
                                        walls["finetune"], {"n_train": n})
        if r["kind"] in ("grid", "quantile", "random"):
            ids["featurize"] = _artifact(root, "featurize", {"rep": r.get("rep"), "t": r["target"]}, {}, walls["featurize"])
            ids["select"] = _artifact(root, "select", {"i": i}, {}, walls["select"])
        dist = {}
        for rep, (cov, cham, ot) in r.get("dist", {}).items():
            rows = [{"budget": r.get("budget") or 8, "coverage": cov, "chamfer": cham, "ot": ot, "ot_solver": "emd"}]
            dist[f"{rep}@{r['target']}"] = _artifact(root, "distance", {"i": i, "rep": rep}, {"distances.json": {"rows": rows}}, 0.5)
        if dist:
            ids["distance"] = dist
        cells.append({"index": i, "key": f"cell{i}", "cell_id": f"cell-{i:016x}", "cell": cell, "ids": ids})
    body = {"name": name, "targets": {t: f"builtin:{t}" for t in targets}, "cells": cells}
    return _artifact(root, "experiment", {"name": name, "n": len(results)}, {"cells.json": body}, 0.0)


def grid_results(target: str, method_values: dict[tuple[str, str], dict[int, list[float]]],
                 random_values: dict[int, list[float]], zero_shot: float, loss_of=lambda acc: 2.0 - acc) -> list[dict]:
    """Rows for one target from acc_norm values per (rep, selector) → budget → per-seed list."""
    out = [{"kind": "zero_shot", "target": target, "acc_norm": zero_shot, "loss": loss_of(zero_shot)}]
    for budget, values in random_values.items():
        out += [{"kind": "random", "target": target, "selector": "random", "budget": budget, "seed": s,
                 "acc_norm": v, "loss": loss_of(v)} for s, v in enumerate(values)]
    for (rep, sel), by_budget in method_values.items():
        for budget, values in by_budget.items():
            out += [{"kind": "grid", "target": target, "rep": rep, "selector": sel, "budget": budget, "seed": s,
                     "acc_norm": v, "loss": loss_of(v)} for s, v in enumerate(values)]
    return out
