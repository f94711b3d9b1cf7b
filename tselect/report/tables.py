"""Pure aggregation of experiment rows: budget tables, the beats-random rule, Spearman, costs.

A row is one (cell, target) result, a plain dict (see tselect.report.gather):
    {kind, rep, selector, target, budget, seed, bin,
     metrics: {query_loss, acc, acc_norm, em, f1, num_em},
     distance: {rep: {coverage, chamfer, ot}},
     cost: {featurize_s, warmup_s, select_s, finetune_s, evaluate_s}}
     items: {quantity: {eval item id: value}}   (per-item results, for paired CIs)
Statistics over seeds are {mean, std, n}; std is the sample standard deviation (ddof = 1) and
None below two seeds. Where per-item results exist a cell also carries a 95% CI of its mean
(lo, hi, n_items; tselect.report.stats), and each method a paired CI of its difference to random
and to zero-shot on the same items. "Beats random" is decided by that paired CI, and only for
cells with at least two training seeds on both sides.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

HIGHER_IS_BETTER = {"acc": True, "acc_norm": True, "em": True, "f1": True, "num_em": True, "query_loss": False,
                    "eval_loss": False}
LOSSES = ("query_loss", "eval_loss")
AUTO_METRICS = ("acc_norm", "acc", "num_em", "f1", "em")  # `--metric auto`: the first one a target has
COSTS = ("featurize_s", "warmup_s", "select_s", "finetune_s", "evaluate_s")
DISTANCES = ("coverage", "chamfer", "ot")
LABELS = {"random": "random", "zero_shot": "zero-shot", "full": "full data"}


def method(row: dict) -> str:
    return f"{row['rep']} + {row['selector']}" if row["kind"] == "grid" else LABELS.get(row["kind"], row["kind"])


def stat(values: Iterable[float | None]) -> dict[str, Any] | None:
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return None
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return {"mean": mean, "std": std, "n": len(xs)}


def choose_metric(rows: Sequence[dict], target: str, metric: str) -> str:
    """The task metric for a target: the one asked for, or (auto) the first it reports; else query loss."""
    if metric != "auto":
        return metric
    present = {m for r in rows if r["target"] == target for m, v in r["metrics"].items() if v is not None}
    return next((m for m in AUTO_METRICS if m in present), "query_loss")


def is_loss(quantity: str) -> bool:
    return quantity in LOSSES


def beats(diff: dict | None, higher: bool) -> bool:
    """A paired difference (method − reference) clears zero on the better side with its 95% CI,
    both sides having at least two training seeds (one seed: its seed noise is unknown)."""
    from tselect.report.stats import excludes_zero

    if diff is None or diff["n_seeds"] < 2 or (diff["n_ref_seeds"] or 0) < 2:
        return False
    return excludes_zero(diff, higher)


def _runs(rows: Sequence[dict], label: str, b: int | None, quantity: str) -> list[dict[str, float]]:
    """Per-item results ({item id: value}) of every run of one (method, budget)."""
    return [r["items"][quantity] for r in rows
            if method(r) == label and r["budget"] == b and quantity in r.get("items", {})]


def with_ci(s: dict | None, runs: list[dict[str, float]]) -> dict | None:
    """A seed stat plus the bootstrap CI of its mean over items and seeds (lo, hi, n_items)."""
    from tselect.report.stats import item_matrix, paired_ci

    m = item_matrix(runs)
    if s is None or m is None:
        return s
    ci = paired_ci(m[1])
    return {**s, "lo": ci["lo"], "hi": ci["hi"], "n_items": ci["n_items"]}


def paired(runs: list[dict[str, float]], ref_runs: list[dict[str, float]]) -> dict | None:
    """Paired CI of (runs − ref_runs) on the items both sides have; None without data."""
    from tselect.report.stats import item_matrix, paired_ci

    m = item_matrix(runs + ref_runs) if runs and ref_runs else None
    return None if m is None else paired_ci(m[1][: len(runs)], m[1][len(runs):])


def budget_table(rows: Sequence[dict], target: str, quantity: str) -> dict[str, Any]:
    """Method × budget stats of one quantity on one target, with random, zero-shot and full data.

    `methods[label][j]` and `random[j]` are the stats at `budgets[j]`; `best[j]` is the method
    with the best mean among those that beat random at that budget (None: no reliable winner).
    """
    mine = [r for r in rows if r["target"] == target and r["kind"] != "quantile"]
    budgets = sorted({r["budget"] for r in mine if r["kind"] in ("grid", "random")})
    higher = HIGHER_IS_BETTER[quantity]

    def at(label: str, b: int | None) -> dict | None:
        s = stat(r["metrics"].get(quantity) for r in mine if method(r) == label and r["budget"] == b)
        return with_ci(s, _runs(mine, label, b, quantity))

    labels = list(dict.fromkeys(method(r) for r in mine if r["kind"] == "grid"))
    zs = _runs(mine, "zero-shot", None, quantity)
    table = {"target": target, "quantity": quantity, "higher": higher, "budgets": budgets,
             "methods": {m: [at(m, b) for b in budgets] for m in labels},
             "random": [at("random", b) for b in budgets],
             "zero_shot": at("zero-shot", None), "full": at("full data", None),
             # paired by item: method − random at the same budget, and − zero-shot
             "vs_random": {m: [paired(_runs(mine, m, b, quantity), _runs(mine, "random", b, quantity)) for b in budgets]
                           for m in labels},
             "vs_zero_shot": {m: [paired(_runs(mine, m, b, quantity), zs) for b in budgets]
                              for m in [*labels, "random"]}}
    table["best"] = [best_at(table, j) for j in range(len(budgets))]
    return table


def best_at(table: dict, j: int) -> str | None:
    """The method with the best paired difference among those that beat random at budget j."""
    sign = 1.0 if table["higher"] else -1.0
    winners = [(sign * diffs[j]["mean"], m) for m, diffs in table["vs_random"].items()
               if beats(diffs[j], table["higher"])]
    return max(winners, key=lambda w: w[0])[1] if winners else None


# --- rank correlation ----------------------------------------------------------------------------

def average_ranks(xs: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation of average ranks; None with < 2 points or a constant side."""
    assert len(x) == len(y), "spearman needs paired samples"
    if len(x) < 2:
        return None
    rx, ry = average_ranks(x), average_ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def quantile_curves(rows: Sequence[dict], quantity: str) -> list[dict[str, Any]]:
    """Per (rep, target): the quantity per bin (mean ± std over seeds, with a CI) and Spearman
    ρ(bin, mean) with a 95% CI from resampling items and each bin's seeds (stats.spearman_bins);
    without per-item results, ρ over the bin means and no interval."""
    from tselect.report.stats import item_matrix, spearman_bins

    out = []
    keys = dict.fromkeys((r["rep"], r["target"]) for r in rows if r["kind"] == "quantile")
    for rep, target in keys:
        mine = [r for r in rows if r["kind"] == "quantile" and r["rep"] == rep and r["target"] == target]
        bins = sorted({r["bin"] for r in mine})
        runs = [[r["items"][quantity] for r in mine if r["bin"] == b and quantity in r.get("items", {})] for b in bins]
        stats = [with_ci(stat(r["metrics"].get(quantity) for r in mine if r["bin"] == b), rb) for b, rb in zip(bins, runs)]
        pairs = [(b + 1, s["mean"]) for b, s in zip(bins, stats) if s is not None]  # bin 1 = nearest
        rho = {"rho": spearman([p[0] for p in pairs], [p[1] for p in pairs]), "lo": None, "hi": None, "n": len(pairs)}
        shared = item_matrix([x for rb in runs for x in rb]) if all(runs) else None
        if shared is not None:
            ids = shared[0]
            rho = spearman_bins([b + 1 for b in bins], [item_matrix(rb, ids)[1] for rb in runs])
        seeds = [s["n"] for s in stats if s is not None]
        out.append({"rep": rep, "target": target, "quantity": quantity, "bins": [b + 1 for b in bins],
                    "stats": stats, "rho": rho["rho"], "rho_ci": rho, "min_seeds": min(seeds, default=0)})
    return out


def distance_points(rows: Sequence[dict]) -> list[dict[str, Any]]:
    """Per (rep, target): every trained cell's distance in that rep's space vs its query loss,
    with Spearman(distance, loss) per distance and a 95% CI from resampling the cells.
    Predictive: ρ < 0 for coverage/chamfer, > 0 for OT."""
    from tselect.report.stats import spearman_points

    out = []
    keys = dict.fromkeys((rep, r["target"]) for r in rows for rep in r.get("distance", {}))
    for rep, target in keys:
        mine = [r for r in rows if r["target"] == target and rep in r.get("distance", {})
                and r["metrics"].get("query_loss") is not None]
        loss = [r["metrics"]["query_loss"] for r in mine]
        entry = {"rep": rep, "target": target, "n": len(mine), "loss": loss, "kinds": [method(r) for r in mine],
                 "budgets": [r["budget"] for r in mine]}
        for d in DISTANCES:
            entry[d] = [r["distance"][rep][d] for r in mine]
            ci = spearman_points(entry[d], loss)
            entry[f"rho_{d}"] = ci["rho"] if ci["rho"] is not None else spearman(entry[d], loss)
            entry[f"ci_{d}"] = ci
        out.append(entry)
    return out


# --- costs -----------------------------------------------------------------------------------------

def cost_ledger(rows: Sequence[dict], target: str, metric: str) -> list[dict[str, Any]]:
    """Mean wall seconds per stage for each (method, budget) on a target, next to the mean gain over
    random at that budget (full data: over random at the largest budget)."""
    mine = [r for r in rows if r["target"] == target and r["kind"] != "quantile"]
    budgets = sorted({r["budget"] for r in mine if r["budget"] is not None})
    rand = {b: stat(r["metrics"].get(metric) for r in mine if r["kind"] == "random" and r["budget"] == b)
            for b in budgets}
    out = []
    for label, b in dict.fromkeys((method(r), r["budget"]) for r in mine):
        group = [r for r in mine if method(r) == label and r["budget"] == b]
        entry = {"method": label, "budget": b, "n": len(group)}
        for c in COSTS:
            s = stat(r["cost"].get(c) for r in group)
            entry[c] = s["mean"] if s else 0.0  # a stage the method does not run costs nothing
        entry["selection_s"] = entry["featurize_s"] + entry["warmup_s"] + entry["select_s"]
        entry["total_s"] = entry["selection_s"] + entry["finetune_s"] + entry["evaluate_s"]
        mine_stat = stat(r["metrics"].get(metric) for r in group)
        ref = rand.get(b if b is not None else (budgets[-1] if budgets else None))
        compared = label not in ("random", "zero-shot")
        entry["gain"] = (mine_stat["mean"] - ref["mean"]) if (mine_stat and ref and compared) else None
        out.append(entry)
    return out


def display(quantity: str, value: float | None) -> str:
    """Task metrics in points (×100, one decimal), losses with three decimals."""
    if value is None:
        return "—"
    return f"{value:.3f}" if is_loss(quantity) else f"{100 * value:.1f}"


def show_stat(quantity: str, s: dict | None) -> str:
    """mean [95% CI] when per-item results gave one, else mean ± std over seeds."""
    if s is None:
        return "—"
    if s.get("lo") is not None:
        return f"{display(quantity, s['mean'])} [{display(quantity, s['lo'])}, {display(quantity, s['hi'])}]"
    spread = "" if s["std"] is None else f" ± {display(quantity, s['std'])}"
    return display(quantity, s["mean"]) + spread


def show_diff(quantity: str, d: dict | None) -> str:
    """A paired difference: +x [lo, hi]; losses in nats, metrics in points."""
    if d is None:
        return "—"
    f = (lambda v: f"{v:+.3f}") if is_loss(quantity) else (lambda v: f"{100 * v:+.1f}")
    return f"{f(d['mean'])} [{f(d['lo'])}, {f(d['hi'])}]"
