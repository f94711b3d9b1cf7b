"""What the report says: every computed structure, as blocks (render.py) and as CSV records."""

from __future__ import annotations

from typing import Any

from tselect.report import tables as T
from tselect.report.recommend import recommend

RULES = (
    "**How to read the numbers.** Cells are the mean over training seeds with a 95% bootstrap CI in brackets "
    "(items and seeds resampled together, 2,000 replicates, fixed seed); `seeds` and `items` give n. Task metrics "
    "are in points (×100); query loss is the mean per-example token cross-entropy on the target's query split, "
    "eval loss the same on its held-out eval split (lower is better). Comparisons are **paired by item**: a "
    "method's per-item value averaged over its seeds minus random's averaged over random's seeds, with a CI that "
    "resamples the items (same draw for both) and each side's seeds. A cell is **bold** with † when it is the best "
    "method at that budget among those whose paired CI to random lies entirely on the better side of zero, with "
    "≥ 2 training seeds on both sides; single-seed cells are never marked. Zero-shot and full data do not depend "
    "on the budget and are repeated in every column.")


def compute(header: dict, rows: list[dict], metric: str) -> dict[str, Any]:
    """All the report's numbers, from plain rows (no I/O)."""
    targets = list(header["targets"]) or list(dict.fromkeys(r["target"] for r in rows))
    chosen = {t: T.choose_metric(rows, t, metric) for t in targets}
    metric_tables = [T.budget_table(rows, t, chosen[t]) for t in targets]
    loss_tables = [T.budget_table(rows, t, "query_loss") for t in targets]
    has_eval_loss = {t for r in rows if r["metrics"].get("eval_loss") is not None for t in [r["target"]]}
    eval_loss_tables = [T.budget_table(rows, t, "eval_loss") for t in targets if t in has_eval_loss]
    return {"targets": targets, "metric": chosen, "metric_tables": metric_tables, "loss_tables": loss_tables,
            "eval_loss_tables": eval_loss_tables,
            "recommendation": recommend(metric_tables),
            "quantile": T.quantile_curves(rows, "query_loss"),
            "quantile_metric": {(c["rep"], c["target"]): c for t in targets
                                for c in T.quantile_curves([r for r in rows if r["target"] == t], chosen[t])},
            "distances": T.distance_points(rows),
            "ledgers": {t: T.cost_ledger(rows, t, chosen[t]) for t in targets}}


def _stat_row(label: str, table: dict, stats: list, marks: list[bool]) -> list[str]:
    q = table["quantity"]
    n = max((s["n"] for s in stats if s is not None), default=0)
    items = max((s.get("n_items", 0) for s in stats if s is not None), default=0)
    cells = [(f"**{T.show_stat(q, s)}** †" if m else T.show_stat(q, s)) for s, m in zip(stats, marks)]
    return [label, str(n), str(items or "—"), *cells]


def budget_block(table: dict) -> tuple:
    budgets = table["budgets"]
    no_marks = [False] * len(budgets)
    rows = []
    for ref, label in (("zero_shot", "zero-shot"), ("random", "random")):
        stats = table[ref] if ref == "random" else [table[ref]] * len(budgets)
        rows.append(_stat_row(label, table, stats, no_marks))
    for m, stats in table["methods"].items():
        rows.append(_stat_row(m, table, stats, [b == m for b in table["best"]]))
    if table["full"] is not None:
        rows.append(_stat_row("full data", table, [table["full"]] * len(budgets), no_marks))
    return ("table", ["method", "seeds", "items", *[f"b={b}" for b in budgets]], rows)


def _rho(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def _rho_ci(ci: dict | None) -> str:
    if ci is None or ci["rho"] is None:
        return "n/a"
    return _rho(ci["rho"]) + ("" if ci["lo"] is None else f" [{ci['lo']:+.2f}, {ci['hi']:+.2f}]")


def paired_blocks(table: dict) -> list[tuple]:
    """Method − random and method − zero-shot, paired by item, with CIs and their half-widths."""
    from tselect.report.stats import half_width

    q, budgets = table["quantity"], table["budgets"]
    if not any(d for ds in table["vs_random"].values() for d in ds):
        return []
    rows = []
    for m, diffs in table["vs_random"].items():
        n = max((d["n_items"] for d in diffs if d), default=0)
        rows.append([m, "random", str(n), *(_diff_cell(q, d, m == table["best"][j]) for j, d in enumerate(diffs))])
    for m, diffs in table["vs_zero_shot"].items():
        n = max((d["n_items"] for d in diffs if d), default=0)
        rows.append([m, "zero-shot", str(n), *(_diff_cell(q, d, False) for d in diffs)])
    hw = [max((half_width(ds[j]) or 0.0 for ds in table["vs_random"].values() if ds[j]), default=None)
          for j in range(len(budgets))]
    scale = 1.0 if T.is_loss(q) else 100.0
    text = (f"Paired differences ({q}; method − reference on the same items, mean [95% CI]). Largest CI "
            "half-width against random per budget: " + ", ".join(
                f"b={b}: {'—' if h is None else f'{scale * h:.3f}'}" for b, h in zip(budgets, hw)) + ".")
    return [("p", text), ("table", ["method", "vs", "items", *[f"b={b}" for b in budgets]], rows)]


def _diff_cell(q: str, d: dict | None, best: bool) -> str:
    if d is None:
        return "—"
    text = T.show_diff(q, d) + f" ({d['n_seeds']}×{d['n_ref_seeds']} seeds)"
    return f"**{text}** †" if best else text


def blocks(header: dict, c: dict, images: dict[str, str | None]) -> list[tuple]:
    out: list[tuple] = [("h", 1, f"Report: {header['name']}"),
                        ("p", f"Experiment `{header['id']}` · {header['n_cells']} cells · targets: "
                              + ", ".join(f"{t} ({c['metric'][t]})" for t in c["targets"])),
                        ("h", 2, "Recommendation"), ("p", c["recommendation"]["text"]), ("p", RULES)]
    eval_loss = {t["target"]: t for t in c["eval_loss_tables"]}
    for mt, lt in zip(c["metric_tables"], c["loss_tables"]):
        out += [("h", 2, f"Target {mt['target']}"), ("h", 3, f"{mt['quantity']} by budget"), budget_block(mt),
                *paired_blocks(mt)]
        for extra in (lt, eval_loss.get(mt["target"])):
            if extra is not None and extra["quantity"] != mt["quantity"]:
                out += [("h", 3, f"{extra['quantity'].replace('_', ' ')} by budget"), budget_block(extra),
                        *paired_blocks(extra)]
    if images.get("curves"):
        out += [("h", 2, "Budget curves"), ("img", images["curves"], "mean with 95% CI; top: task metric, bottom: query loss")]
    out += quantile_blocks(c, images.get("quantile"))
    out += distance_blocks(c, images.get("distance"))
    out += ledger_blocks(c, images.get("cost"))
    return out


def quantile_blocks(c: dict, image: str | None) -> list[tuple]:
    if not c["quantile"]:
        return []
    rows = []
    for q in c["quantile"]:
        qm = c["quantile_metric"].get((q["rep"], q["target"]))
        per_bin = " ".join(T.display("query_loss", s["mean"]) if s else "—" for s in q["stats"])
        rows.append([q["rep"], q["target"], str(len(q["bins"])), str(q["min_seeds"]), _rho_ci(q["rho_ci"]),
                     _rho_ci(qm["rho_ci"]) if qm else "n/a", per_bin])
    text = ("Each representation's round-robin order of the whole pool is cut into contiguous bins (bin 1 = "
            "nearest to the queries) and a model is trained on the head of each bin. If the representation's "
            "notion of closeness matters, query loss rises with the bin: ρ(bin, loss) near +1. Brackets: 95% CI "
            "from resampling the eval items and each bin's training seeds.")
    out = [("h", 2, "Quantile diagnostic"), ("p", text),
           ("table", ["representation", "target", "bins", "min seeds/bin", "ρ(bin, query loss) [95% CI]",
                      "ρ(bin, metric) [95% CI]", "query loss per bin"], rows)]
    return out + ([("img", image, "query loss per distance bin (mean with 95% CI)")] if image else [])


def distance_blocks(c: dict, image: str | None) -> list[tuple]:
    if not c["distances"]:
        return []
    rows = [[d["rep"], d["target"], str(d["n"]), *(_rho_ci(d[f"ci_{k}"]) for k in T.DISTANCES)]
            for d in c["distances"]]
    text = ("For every trained subset, its distance to the target's queries measured in "
            "each representation's space (tselect.select.distance) against the query loss it produced. A space "
            "predicts the outcome when ρ(coverage, loss) and ρ(chamfer, loss) are strongly negative and ρ(OT, loss) "
            "strongly positive. Brackets: 95% CI from resampling the trained subsets.")
    out = [("h", 2, "Predict before you train"), ("p", text),
           ("table", ["space", "target", "subsets", "ρ(coverage, loss)", "ρ(chamfer, loss)", "ρ(OT, loss)"], rows)]
    return out + ([("img", image, "OT distance vs query loss, per representation space and target")] if image else [])


def ledger_blocks(c: dict, image: str | None) -> list[tuple]:
    out = [("h", 2, "Cost ledger"),
           ("p", "Mean wall seconds per run, from each artifact's manifest. A method's selection cost is its "
                 "featurize (shared by all its cells of that target, counted in full for each), LESS warmup (once "
                 "per model and pool) and select time; random selection needs no features. The gain is the mean "
                 "metric minus random's at the same budget (full data: at the largest budget).")]
    for t in c["targets"]:
        q = c["metric"][t]
        rows = [[e["method"], _budget(e), *(f"{e[k]:.1f}" for k in (*T.COSTS, "selection_s", "total_s")),
                 "—" if e["gain"] is None else (f"{e['gain']:+.3f}" if T.is_loss(q) else f"{100 * e['gain']:+.1f}")]
                for e in c["ledgers"][t]]
        out += [("h", 3, f"{t}"), ("table", ["method", "budget", "featurize s", "warmup s", "select s", "finetune s",
                                               "evaluate s", "selection s", "total s", f"gain ({q})"], rows)]
    return out + ([("img", image, "cost vs gain over random (Chasing Random)")] if image else [])


def _budget(e: dict) -> str:
    return str(e["budget"]) if e["budget"] is not None else "all" if e["method"] == "full data" else "—"


def csv_records(rows: list[dict], c: dict) -> list[dict[str, Any]]:
    """Every number of the report, one per record (see render.CSV_COLUMNS)."""
    out = []
    for r in rows:
        base = {"section": "cell", "target": r["target"], "method": T.method(r), "rep": r["rep"],
                "selector": r["selector"], "budget": r["budget"], "bin": r["bin"], "seed": r["seed"]}
        out += [{**base, "quantity": k, "value": v} for k, v in r["metrics"].items() if v is not None]
        out += [{**base, "quantity": f"{d}@{rep}", "value": v} for rep, ds in r["distance"].items() for d, v in ds.items()]
        out += [{**base, "quantity": k, "value": v} for k, v in r["cost"].items()]
    for t in c["metric_tables"] + c["loss_tables"] + c["eval_loss_tables"]:
        out += _table_records(t)
    for q in c["quantile"] + list(c["quantile_metric"].values()):
        out += [{"section": "quantile", "target": q["target"], "rep": q["rep"], "quantity": f"rho_bin_{q['quantity']}{sfx}",
                 "value": q["rho_ci"][k]} for k, sfx in (("rho", ""), ("lo", ".lo"), ("hi", ".hi"))]
        out += [{"section": "quantile", "target": q["target"], "rep": q["rep"], "bin": b, "quantity": f"{q['quantity']}.{k}", "value": s[k]}
                for b, s in zip(q["bins"], q["stats"]) if s for k in ("mean", "std", "n", "lo", "hi") if k in s]
    for d in c["distances"]:
        out += [{"section": "distance", "target": d["target"], "rep": d["rep"], "quantity": f"rho_{k}_query_loss{sfx}",
                 "value": d[f"ci_{k}"][f]} for k in T.DISTANCES for f, sfx in (("rho", ""), ("lo", ".lo"), ("hi", ".hi"))]
    for t, ledger in c["ledgers"].items():
        out += [{"section": "cost", "target": t, "method": e["method"], "budget": e["budget"], "quantity": k, "value": e[k]}
                for e in ledger for k in (*T.COSTS, "selection_s", "total_s", "gain")]
    return out


def _table_records(t: dict) -> list[dict[str, Any]]:
    out = []
    series = [(m, zip(t["budgets"], s)) for m, s in t["methods"].items()] + [("random", zip(t["budgets"], t["random"]))]
    series += [(lbl, [(None, t[k])]) for k, lbl in (("zero_shot", "zero-shot"), ("full", "full data"))]  # budget-free
    for label, pairs in series:
        for b, s in pairs:
            if s is not None:
                out += [{"section": "table", "target": t["target"], "method": label, "budget": b,
                         "quantity": f"{t['quantity']}.{k}", "value": s[k]}
                        for k in ("mean", "std", "n", "lo", "hi", "n_items") if k in s]
    for ref, diffs in (("random", t["vs_random"]), ("zero_shot", t["vs_zero_shot"])):
        for label, ds in diffs.items():
            out += [{"section": "paired", "target": t["target"], "method": label, "budget": b,
                     "quantity": f"{t['quantity']}.minus_{ref}.{k}", "value": d[k]}
                    for b, d in zip(t["budgets"], ds) if d for k in ("mean", "lo", "hi", "n_items", "n_seeds", "n_ref_seeds")]
    for b, m in zip(t["budgets"], t["best"]):
        out.append({"section": "table", "target": t["target"], "method": m, "budget": b,
                    "quantity": f"{t['quantity']}.best", "value": None if m is None else 1})
    return out
