"""Read an experiment artifact into plain rows: metrics, distances and costs per (cell, target).

Everything comes from the artifacts themselves: task metrics and query loss from each evaluate
artifact's metrics.json (checksum-verified), distances from the distance artifacts, costs from
each manifest's `wall_time_s`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from tselect import artifacts, catalog, store

GEN_METRICS = ("em", "f1", "num_em")


def metric_values(m: dict[str, Any]) -> dict[str, float | None]:
    """metrics.json → {query_loss, eval_loss, acc, acc_norm, em, f1, num_em} (None when not measured)."""
    mc, gen = m.get("eval", {}).get("mc", {}), m.get("eval", {}).get("generation", {})
    out = {"query_loss": m["query"]["loss"], "eval_loss": m.get("eval", {}).get("loss", {}).get("loss"),
           "acc": mc.get("acc"), "acc_norm": mc.get("acc_norm")}
    out.update({k: gen.get(k) for k in GEN_METRICS})
    return out


def item_values(m: dict[str, Any]) -> dict[str, dict[str, float]]:
    """metrics.json → per quantity, {eval item id: value}: query/eval loss per example, MC
    correctness (acc, acc_norm) and generation scores per eval row. The report pairs methods on these."""
    ev = m.get("eval", {})
    out = {"query_loss": {r["id"]: r["loss"] for r in m["query"].get("per_example", [])},
           "eval_loss": {r["id"]: r["loss"] for r in ev.get("loss", {}).get("per_example", [])}}
    mc = ev.get("mc", {}).get("per_example", [])
    if mc:
        out["acc"] = {r["id"]: float(r["pred"] == r["gold"]) for r in mc}
        out["acc_norm"] = {r["id"]: float(r["pred_norm"] == r["gold"]) for r in mc}
    gen = ev.get("generation", {}).get("per_example", [])
    for k in GEN_METRICS:
        vals = {r["id"]: r[k] for r in gen if r.get(k) is not None}
        if vals:
            out[k] = vals
    return {k: v for k, v in out.items() if v}


class Reader:
    """Cached artifact lookups for one store."""

    def __init__(self, root: Path):
        self.root, self._arts = root, {}

    def art(self, aid: str) -> artifacts.Artifact:
        if aid not in self._arts:
            self._arts[aid] = catalog.resolve(self.root, aid)
        return self._arts[aid]

    def wall(self, aid: str | None) -> float:
        return 0.0 if aid is None else float(self.art(aid).manifest.get("wall_time_s", 0.0))

    def json(self, aid: str, rel: str) -> Any:
        return store.read_json(catalog.checked_path(self.art(aid), rel))

    def featurize_costs(self, fid: str) -> tuple[float, float]:
        """(featurize s without the warmup, warmup s) for a feature artifact.

        A LESS warmup is its own artifact, made inside the first featurize that needs it; its
        time is split out of that featurize so the ledger shows it once per (model, pool).
        """
        feat = self.art(fid)
        group = feat.path / store.FEATURES
        warmup = store.open_group(group, mode="r").attrs.get("warmup") if group.exists() else None
        if not warmup:
            return self.wall(fid), 0.0
        w = self.art(warmup)
        start = _created(feat) - self.wall(fid) - 2.0  # created is to the second
        made_inside = start <= _created(w) <= _created(feat) + 2.0
        return (max(0.0, self.wall(fid) - self.wall(warmup)) if made_inside else self.wall(fid)), self.wall(warmup)


def _created(art: artifacts.Artifact) -> float:
    return datetime.strptime(art.manifest["created"], "%Y-%m-%dT%H:%M:%SZ").timestamp()


def _distance(reader: Reader, did: str, budget: int | None) -> dict[str, float]:
    rows = reader.json(did, "distances.json")["rows"]
    row = rows[-1] if budget is None else next(r for r in rows if r["budget"] == budget)
    return {k: row[k] for k in ("coverage", "chamfer", "ot")}


def _costs(reader: Reader, cell: dict, ids: dict, target: str) -> dict[str, float]:
    kind = cell["kind"]
    feat_s, warm_s = reader.featurize_costs(ids["featurize"]) if kind in ("grid", "quantile") else (0.0, 0.0)
    # random needs no features (its order only uses the pool size), so its selection costs the select alone
    select_s = reader.wall(ids.get("select")) + reader.wall(ids.get("order")) if kind != "full" else 0.0
    return {"featurize_s": feat_s, "warmup_s": warm_s, "select_s": select_s,
            "finetune_s": reader.wall(ids.get("finetune")), "evaluate_s": reader.wall(ids["evaluate"][target])}


def gather(root: Path, experiment_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(experiment cells.json header, rows) for an experiment artifact."""
    reader = Reader(root)
    exp = catalog.resolve(root, experiment_id, stage="experiment")
    body = store.read_json(catalog.checked_path(exp, "cells.json"))
    rows = []
    for entry in body["cells"]:
        cell, ids = entry["cell"], entry["ids"]
        for target in cell["targets"]:
            dist = {key.split("@")[0]: _distance(reader, did, cell["budget"])
                    for key, did in ids.get("distance", {}).items() if key.split("@", 1)[1] == target}
            ft = ids.get("finetune")
            m = reader.json(ids["evaluate"][target], "metrics.json")
            rows.append({"kind": cell["kind"], "rep": cell["rep"], "selector": cell["selector"], "target": target,
                         "budget": cell["budget"], "seed": cell["seed"], "bin": cell["bin"],
                         "metrics": metric_values(m), "items": item_values(m),
                         "distance": dist, "cost": _costs(reader, cell, ids, target),
                         "n_train": reader.art(ft).record.get("n_train") if ft else 0})
    header = {"id": exp.id, "name": body.get("name"), "targets": body.get("targets", {}), "n_cells": len(body["cells"])}
    return header, rows


# --- what the run was: settings, training curves, what each method chose (report item 4) ------------

TOP_ROWS = 3  # top-selected rows shown per method and target


def _settings(reader: Reader, body: dict) -> dict[str, Any]:
    """Hyperparameters as the artifacts record them: the first finetune's resolved config and step
    count, the first evaluate's config and its n per split."""
    out: dict[str, Any] = {}
    fts = [e["ids"]["finetune"] for e in body["cells"] if e["ids"].get("finetune")]
    if fts:
        ft = reader.art(fts[0])
        out["finetune"] = ft.config
        out["model"] = ft.record.get("model") or "builtin:smollm2"
        out["steps_by_n_train"] = {}
        for fid in dict.fromkeys(fts):
            art = reader.art(fid)
            out["steps_by_n_train"][art.record.get("n_train")] = len(reader.json(fid, "train_curve.json")["loss"])
    evs = [x for e in body["cells"] for x in e["ids"]["evaluate"].values()]
    if evs:
        ev = reader.art(evs[0])
        m = reader.json(evs[0], "metrics.json")
        out["evaluate"] = {**ev.config, "n_query": m["query"]["n"], "n_eval": m.get("eval", {}).get("n")}
    return out


def _curves(reader: Reader, body: dict) -> list[dict[str, Any]]:
    """One training curve per (method label, budget): the lowest seed's run."""
    out, seen = [], set()
    for e in sorted(body["cells"], key=lambda e: (e["cell"]["seed"] is None, e["cell"]["seed"] or 0)):
        cell, fid = e["cell"], e["ids"].get("finetune")
        if not fid or cell["kind"] == "quantile":
            continue
        label = f"{cell['rep']} + {cell['selector']}" if cell["kind"] == "grid" else cell["kind"].replace("_", " ")
        key = (label, cell["budget"], cell["targets"][0] if cell["kind"] == "grid" else None)
        if key in seen:
            continue
        seen.add(key)
        curve = reader.json(fid, "train_curve.json")
        out.append({"method": label, "budget": cell["budget"], "target": key[2], "seed": cell["seed"],
                    "step": curve["step"], "loss": curve["loss"]})
    return out


def _choices(reader: Reader, body: dict) -> list[dict[str, Any]]:
    """Per (method, target) of grid cells, and random seed 0: the source-task mix of the selection at
    the largest budget, the pool's mix, and the first TOP_ROWS selected rows."""
    from tselect.composition import task_shares
    from tselect.lineage import load_pool, selection_indices

    out, seen, pools = [], set(), {}
    for e in body["cells"]:
        cell, sid = e["cell"], e["ids"].get("select")
        if cell["kind"] not in ("grid", "random") or not sid or (cell["kind"] == "random" and cell["seed"] != 0):
            continue
        label = f"{cell['rep']} + {cell['selector']}" if cell["kind"] == "grid" else "random"
        for target in cell["targets"]:
            if (label, target) in seen:
                continue
            seen.add((label, target))
            sel = reader.art(sid)
            feats = sel.inputs.get("features")
            if feats is None:  # not a selection over a feature store: nothing to trace back to the pool
                continue
            if feats not in pools:
                pools[feats] = load_pool(reader.root, sel)
            pool = pools[feats]
            labels = [ex.meta.get("source_task", "?") for ex in pool.examples]
            chosen = selection_indices(sel)  # grid and random orders are selected at the largest budget
            out.append({"method": label, "target": target, "budget": int(chosen.size),
                        "shares": task_shares(labels, chosen),
                        "pool_shares": task_shares(labels),
                        "top": [{"source_task": labels[i], "prompt": pool.examples[i].prompt[:160]}
                                for i in chosen[:TOP_ROWS].tolist()]})
    return out


def details(root: Path, experiment_id: str) -> dict[str, Any]:
    """Settings, training curves and selections of an experiment, for the report's run section."""
    reader = Reader(root)
    exp = catalog.resolve(root, experiment_id, stage="experiment")
    body = store.read_json(catalog.checked_path(exp, "cells.json"))
    return {"settings": _settings(reader, body), "curves": _curves(reader, body), "choices": _choices(reader, body)}
