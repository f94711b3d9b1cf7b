"""Report numbers recomputed by hand from fixture metrics; Spearman with ties; the CSV."""

from __future__ import annotations

import csv
import json
import math
from statistics import mean, stdev

import pytest

from tests.report.helpers import fake_experiment, grid_results, items
from tselect import catalog
from tselect.report import ReportConfig, run
from tselect.report.tables import average_ranks, beats, budget_table, spearman, stat

RR = ("rds", "round_robin")
METHOD = {RR: {8: [0.50, 0.51, 0.52], 16: [0.44, 0.48, 0.52]}, ("embed", "topk"): {8: [0.30, 0.35, 0.40], 16: [0.5, 0.5, 0.5]}}
RANDOM = {8: [0.40, 0.41, 0.42], 16: [0.40, 0.45, 0.50]}


# --- Spearman ------------------------------------------------------------------------------------

def test_average_ranks_share_ties():
    assert average_ranks([3.0, 1.0, 3.0, 2.0, 3.0]) == [4.0, 1.0, 4.0, 2.0, 4.0]
    assert average_ranks([5.0, 5.0]) == [1.5, 1.5]


@pytest.mark.parametrize("x, y, rho", [
    ([1, 2, 3, 4], [10, 20, 30, 40], 1.0),
    ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
    ([1, 2, 2, 3], [1, 2, 3, 4], math.sqrt(0.9)),  # ranks (1, 2.5, 2.5, 4): 4.5 / sqrt(4.5 · 5)
    ([1, 2, 3, 4, 5], [2, 1, 4, 3, 5], 0.8),  # 1 − 6·Σd²/(n(n²−1)) = 1 − 6·4/120 without ties
    ([1, 1, 2, 2], [1, 2, 1, 2], 0.0),
])
def test_spearman_exact(x, y, rho):
    assert spearman(x, y) == pytest.approx(rho, abs=1e-12)


def test_spearman_undefined():
    assert spearman([1.0], [2.0]) is None
    assert spearman([1, 2, 3], [7, 7, 7]) is None


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 4, size=9).tolist(), rng.integers(0, 5, size=9).tolist()
        expected = stats.spearmanr(x, y).statistic
        got = spearman(x, y)
        assert (got is None and math.isnan(expected)) or got == pytest.approx(expected, abs=1e-12)


# --- tables and the beats-random rule --------------------------------------------------------------

def test_stat_uses_sample_std_and_needs_two_seeds():
    assert stat([0.5, 0.51, 0.52]) == {"mean": pytest.approx(0.51), "std": pytest.approx(0.01), "n": 3}
    assert stat([0.5])["std"] is None and stat([None]) is None
    one_seed = {"mean": 0.8, "lo": 0.7, "hi": 0.9, "n_items": 50, "n_seeds": 1, "n_ref_seeds": 3}
    assert not beats(one_seed, higher=True)  # one seed never wins, whatever its interval


def test_beats_mirrors_for_losses():
    below = {"mean": -0.1, "lo": -0.15, "hi": -0.05, "n_items": 50, "n_seeds": 3, "n_ref_seeds": 3}
    above = {**below, "mean": 0.1, "lo": 0.05, "hi": 0.15}
    touching = {**below, "hi": 0.0}
    assert beats(below, higher=False) and not beats(above, higher=False) and not beats(touching, higher=False)
    assert beats(above, higher=True) and not beats(below, higher=True) and not beats(None, higher=True)


def test_budget_table_marks_only_separated_cells():
    rows = _rows(grid_results("t1", METHOD, RANDOM, zero_shot=0.3))
    t = budget_table(rows, "t1", "acc_norm")
    assert t["budgets"] == [8, 16] and list(t["methods"]) == ["rds + round_robin", "embed + topk"]
    assert t["methods"]["rds + round_robin"][1]["mean"] == pytest.approx(0.48)
    assert t["methods"]["rds + round_robin"][1]["std"] == pytest.approx(stdev([0.44, 0.48, 0.52]))
    # b=8: rds+rr − random per item is +10 points, CI clear of 0; b=16: +3 and +5 points, CIs reach 0
    assert t["best"] == ["rds + round_robin", None]
    assert t["vs_random"]["rds + round_robin"][0]["mean"] == pytest.approx(0.10)
    assert t["vs_random"]["rds + round_robin"][0]["lo"] > 0 and t["vs_random"]["rds + round_robin"][1]["lo"] <= 0
    assert t["vs_random"]["embed + topk"][1]["lo"] <= 0  # std 0 over its seeds no longer reads as certainty
    assert t["vs_zero_shot"]["random"][0]["mean"] == pytest.approx(0.41 - 0.3)
    assert {k: t["zero_shot"][k] for k in ("mean", "std", "n", "n_items")} == {"mean": 0.3, "std": None, "n": 1, "n_items": 100}
    assert t["zero_shot"]["lo"] < 0.3 < t["zero_shot"]["hi"]


def _rows(results):
    """The rows tselect.report.gather would read back from these results."""
    return [{"kind": r["kind"], "rep": r.get("rep"), "selector": r.get("selector"), "target": r["target"],
             "budget": r.get("budget"), "seed": r.get("seed"), "bin": r.get("bin"),
             "metrics": {"acc_norm": r["acc_norm"], "query_loss": r["loss"]}, "distance": {}, "cost": {},
             "items": items(r["loss"], r["acc_norm"])}
            for r in results]


# --- the report, end to end on a fake store ----------------------------------------------------------

@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    store = tmp_path_factory.mktemp("report") / "store"
    results = grid_results("t1", METHOD, RANDOM, zero_shot=0.3)
    for r in results:
        if r["kind"] in ("grid", "random"):
            r["dist"] = {"rds": (1.0 - r["loss"] / 4, 0.5, r["loss"] / 4)}
    results += [{"kind": "quantile", "target": "t1", "rep": "rds", "selector": "round_robin", "bin": b, "seed": s,
                 "acc_norm": 0.5, "loss": loss} for b, s, loss in
                [(0, 0, 1.0), (0, 1, 1.2), (1, 0, 1.5), (1, 1, 1.5), (2, 0, 1.4), (2, 1, 1.4), (3, 0, 2.0), (3, 1, 2.2)]]
    results[0]["walls"] = {"evaluate": 7.0}
    exp = fake_experiment(store, results)
    rid = run(ReportConfig(exp, metric="acc_norm"), store)
    return catalog.resolve(store, rid, stage="report").path


def _csv(report_dir):
    return list(csv.DictReader((report_dir / "numbers.csv").open()))


def _get(rows, **match):
    hits = [r for r in rows if all(r[k] == str(v) for k, v in match.items())]
    assert len(hits) == 1, (match, hits)
    return float(hits[0]["value"])


def test_report_tables_recomputed_from_metrics(report_dir):
    rows = _csv(report_dir)
    for (rep, sel), by_budget in METHOD.items():
        for b, vals in by_budget.items():
            m = f"{rep} + {sel}"
            assert _get(rows, section="table", method=m, budget=b, quantity="acc_norm.mean") == pytest.approx(mean(vals), abs=1e-15)
            assert _get(rows, section="table", method=m, budget=b, quantity="acc_norm.std") == pytest.approx(stdev(vals), abs=1e-15)
            losses = [2.0 - v for v in vals]
            assert _get(rows, section="table", method=m, budget=b, quantity="query_loss.mean") == pytest.approx(mean(losses), abs=1e-15)
    assert _get(rows, section="table", method="zero-shot", budget="", quantity="acc_norm.mean") == 0.3
    md = (report_dir / "report.md").read_text()
    assert "| rds + round_robin | 3 | 100 | **51.0 [41.3, 61.0]** † | 48.0 [38.7, 58.3] |" in md
    assert "| random | 3 | 100 | 41.0 [32.0, 50.3] | 45.0 [35.3, 55.3] |" in md
    assert "| rds + round_robin | random | 100 | **+10.0 [+4.7, +16.0] (3×3 seeds)** † | +3.0 [-3.0, +10.0] (3×3 seeds) |" in md
    assert _get(rows, section="paired", method="rds + round_robin", budget=8, quantity="acc_norm.minus_random.mean") == pytest.approx(0.10)
    assert _get(rows, section="paired", method="random", budget=8, quantity="query_loss.minus_zero_shot.n_items") == 100


def test_report_quantile_and_distance_spearman(report_dir):
    rows = _csv(report_dir)
    # per-bin means over seeds 1.1, 1.5, 1.4, 2.1 → ranks 1, 3, 2, 4 vs bins 1..4 → ρ = 0.8
    assert _get(rows, section="quantile", rep="rds", quantity="rho_bin_query_loss") == pytest.approx(0.8)
    # every resample keeps the bin order (bins 1 and 4 move within [1.0, 1.2] and [2.0, 2.2]): CI [0.8, 0.8]
    assert _get(rows, section="quantile", rep="rds", quantity="rho_bin_query_loss.lo") == pytest.approx(0.8)
    assert _get(rows, section="quantile", rep="rds", quantity="rho_bin_query_loss.hi") == pytest.approx(0.8)
    assert _get(rows, section="quantile", rep="rds", bin=2, quantity="query_loss.mean") == pytest.approx(1.5)
    # OT was built as loss / 4, coverage as 1 − loss / 4: exact monotone relations
    assert _get(rows, section="distance", rep="rds", quantity="rho_ot_query_loss") == pytest.approx(1.0)
    assert _get(rows, section="distance", rep="rds", quantity="rho_coverage_query_loss") == pytest.approx(-1.0)


def test_csv_cells_and_cost_ledger(report_dir):
    rows = _csv(report_dir)
    assert rows[0].keys() == {"section", "target", "method", "rep", "selector", "budget", "bin", "seed", "quantity", "value"}
    cell = [r for r in rows if r["section"] == "cell" and r["method"] == "embed + topk" and r["budget"] == "8" and r["seed"] == "1"]
    assert {r["quantity"]: float(r["value"]) for r in cell}["acc_norm"] == 0.35
    assert {r["quantity"]: float(r["value"]) for r in cell}["finetune_s"] == 20.0
    ledger = {r["quantity"]: float(r["value"]) for r in rows if r["section"] == "cost" and r["method"] == "rds + round_robin"
              and r["budget"] == "8" and r["value"] != ""}
    assert ledger == {"featurize_s": 10.0, "warmup_s": 0.0, "select_s": 1.0, "finetune_s": 20.0, "evaluate_s": 5.0,
                      "selection_s": 11.0, "total_s": 36.0, "gain": pytest.approx(0.51 - 0.41)}
    rnd = {r["quantity"]: r["value"] for r in rows if r["section"] == "cost" and r["method"] == "random" and r["budget"] == "8"}
    assert float(rnd["featurize_s"]) == 0.0 and float(rnd["select_s"]) == 1.0 and rnd["gain"] == ""  # random needs no features
    assert _get(rows, section="cost", method="zero-shot", quantity="evaluate_s") == 7.0


def test_report_files_and_summary(report_dir):
    for name in ("report.md", "report.html", "numbers.csv", "summary.json", "budget_curves.png", "quantile.png",
                 "distance_vs_loss.png", "cost_vs_gain.png", "train_curves.png"):
        assert (report_dir / name).is_file(), name
    html = (report_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "<b>51.0 [41.3, 61.0]</b> †" in html
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["choice"] == "rds + round_robin" and summary["metric"] == {"t1": "acc_norm"}


def test_unknown_metric_is_a_value_error():
    with pytest.raises(ValueError, match="--metric 'accuracy' is unknown"):
        ReportConfig("experiment-x", metric="accuracy")


def test_report_shows_settings_and_training_curves(report_dir):
    md = (report_dir / "report.md").read_text()
    assert "## Run settings" in md and "| finetune lr | 0.0001 |" in md and "| evaluate n_eval | 100 |" in md
    assert "| optimizer steps (by training examples) | 0 ex → 3, 8 ex → 3, 16 ex → 3 |" in md
    assert (report_dir / "train_curves.png").is_file() and "## Training loss curves" in md


def test_choice_blocks_put_the_mix_beside_the_score():
    from tselect.report.run_details import choice_blocks

    rows = _rows(grid_results("t1", METHOD, RANDOM, zero_shot=0.3))
    table = budget_table(rows, "t1", "acc_norm")
    choices = [{"method": "rds + round_robin", "target": "t1", "budget": 16, "shares": {"arc": 0.75, "gsm": 0.25},
                "pool_shares": {"arc": 0.5, "gsm": 0.25, "nq": 0.25},
                "top": [{"source_task": "arc", "prompt": "Which gas\ndo plants absorb?"}]}]
    (_, _, _), (_, _), (_, _, _), (_, _, mix), (_, _, top) = choice_blocks(choices, [table])
    assert mix == [["rds + round_robin", "16", "48.0 [38.7, 58.3]", "+3.0 [-3.0, +10.0]",
                    "arc 75% (pool 50%), gsm 25% (pool 25%)"]]
    assert top == [["rds + round_robin", "1", "arc", "Which gas do plants absorb?"]]


def test_summary_headlines_state_the_paired_loss_difference(report_dir):
    lines = json.loads((report_dir / "summary.json").read_text())["headlines"]
    assert ("rds + round_robin vs random at budget 8: Δ query loss = -0.100 [95% CI -0.113, -0.087] "
            "(t1, 100 items, 3 vs 3 training seeds)") in lines
    assert len(lines) == 4  # two methods x two budgets on the one loss table
