"""What the report says: every computed structure, as blocks (render.py) and as CSV records."""

from __future__ import annotations

from typing import Any

from tselect.report import tables as T
from tselect.report.recommend import recommend

RULES = (
    "**How to read the numbers.** Cells are mean ± sample standard deviation (ddof = 1) over training seeds; "
    "task metrics are in points (×100), query loss is the mean per-example token cross-entropy on the target's "
    "query split (lower is better). A cell is **bold** with † when it is the best method at that budget among "
    "those that beat random beyond the seed spread: mean − std > random mean + random std (for query loss: "
    "mean + std < random mean − random std). Single-seed cells are never marked. Zero-shot and full data do not "
    "depend on the budget and are repeated in every column.")


def compute(header: dict, rows: list[dict], metric: str) -> dict[str, Any]:
    """All the report's numbers, from plain rows (no I/O)."""
    targets = list(header["targets"]) or list(dict.fromkeys(r["target"] for r in rows))
    chosen = {t: T.choose_metric(rows, t, metric) for t in targets}
    metric_tables = [T.budget_table(rows, t, chosen[t]) for t in targets]
    loss_tables = [T.budget_table(rows, t, "query_loss") for t in targets]
    return {"targets": targets, "metric": chosen, "metric_tables": metric_tables, "loss_tables": loss_tables,
            "recommendation": recommend(metric_tables),
            "quantile": T.quantile_curves(rows, "query_loss"),
            "quantile_metric": {(c["rep"], c["target"]): c for t in targets
                                for c in T.quantile_curves([r for r in rows if r["target"] == t], chosen[t])},
            "distances": T.distance_points(rows),
            "ledgers": {t: T.cost_ledger(rows, t, chosen[t]) for t in targets}}


def _stat_row(label: str, table: dict, stats: list, marks: list[bool]) -> list[str]:
    q = table["quantity"]
    n = max((s["n"] for s in stats if s is not None), default=0)
    cells = [(f"**{T.show_stat(q, s)}** †" if m else T.show_stat(q, s)) for s, m in zip(stats, marks)]
    return [label, str(n), *cells]


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
    return ("table", ["method", "seeds", *[f"b={b}" for b in budgets]], rows)


def _rho(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def blocks(header: dict, c: dict, images: dict[str, str | None]) -> list[tuple]:
    out: list[tuple] = [("h", 1, f"Report: {header['name']}"),
                        ("p", f"Experiment `{header['id']}` · {header['n_cells']} cells · targets: "
                              + ", ".join(f"{t} ({c['metric'][t]})" for t in c["targets"])),
                        ("h", 2, "Recommendation"), ("p", c["recommendation"]["text"]), ("p", RULES)]
    for mt, lt in zip(c["metric_tables"], c["loss_tables"]):
        out += [("h", 2, f"Target {mt['target']}"), ("h", 3, f"{mt['quantity']} by budget"), budget_block(mt)]
        if mt["quantity"] != "query_loss":
            out += [("h", 3, "query loss by budget"), budget_block(lt)]
    if images.get("curves"):
        out += [("h", 2, "Budget curves"), ("img", images["curves"], "mean ± std over seeds; top: task metric, bottom: query loss")]
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
        rows.append([q["rep"], q["target"], _rho(q["rho"]), _rho(qm["rho"] if qm else None), per_bin])
    text = ("Each representation's round-robin order of the whole pool is cut into contiguous bins (bin 1 = "
            "nearest to the queries) and a model is trained on the head of each bin. If the representation's "
            "notion of closeness matters, query loss rises with the bin: ρ(bin, loss) near +1.")
    out = [("h", 2, "Quantile diagnostic"), ("p", text),
           ("table", ["representation", "target", "ρ(bin, query loss)", "ρ(bin, metric)", "query loss per bin"], rows)]
    return out + ([("img", image, "query loss per distance bin (mean ± std over seeds)")] if image else [])


def distance_blocks(c: dict, image: str | None) -> list[tuple]:
    if not c["distances"]:
        return []
    rows = [[d["rep"], d["target"], str(d["n"]), _rho(d["rho_coverage"]), _rho(d["rho_chamfer"]), _rho(d["rho_ot"])]
            for d in c["distances"]]
    text = ("For every trained subset, its distance to the target's queries measured in "
            "each representation's space (tselect.select.distance) against the query loss it produced. A space "
            "predicts the outcome when ρ(coverage, loss) and ρ(chamfer, loss) are strongly negative and ρ(OT, loss) "
            "strongly positive.")
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
                 "—" if e["gain"] is None else (f"{e['gain']:+.3f}" if q == "query_loss" else f"{100 * e['gain']:+.1f}")]
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
    for t in c["metric_tables"] + c["loss_tables"]:
        out += _table_records(t)
    for q in c["quantile"] + list(c["quantile_metric"].values()):
        out.append({"section": "quantile", "target": q["target"], "rep": q["rep"], "quantity": f"rho_bin_{q['quantity']}", "value": q["rho"]})
        out += [{"section": "quantile", "target": q["target"], "rep": q["rep"], "bin": b, "quantity": f"{q['quantity']}.{k}", "value": s[k]}
                for b, s in zip(q["bins"], q["stats"]) if s for k in ("mean", "std", "n")]
    for d in c["distances"]:
        out += [{"section": "distance", "target": d["target"], "rep": d["rep"], "quantity": f"rho_{k}_query_loss",
                 "value": d[f"rho_{k}"]} for k in T.DISTANCES]
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
                         "quantity": f"{t['quantity']}.{k}", "value": s[k]} for k in ("mean", "std", "n")]
    for b, m in zip(t["budgets"], t["best"]):
        out.append({"section": "table", "target": t["target"], "method": m, "budget": b,
                    "quantity": f"{t['quantity']}.best", "value": None if m is None else 1})
    return out
