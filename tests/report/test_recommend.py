"""The recommendation names a winner only when its paired CI to random clears zero."""

from __future__ import annotations

import pytest

from tests.report.helpers import fake_experiment, grid_results, items
from tselect.report import ReportConfig, run
from tselect.report.recommend import recommend, winners
from tselect.report.tables import budget_table

RR, TOPK = ("rds", "round_robin"), ("embed", "topk")


def _table(method_values, random_values, zero_shot=0.3, quantity="acc_norm", target="sciq"):
    rows = [{"kind": r["kind"], "rep": r.get("rep"), "selector": r.get("selector"), "target": r["target"],
             "budget": r.get("budget"), "seed": r.get("seed"), "bin": None,
             "metrics": {"acc_norm": r["acc_norm"], "query_loss": r["loss"]}, "distance": {}, "cost": {},
             "items": items(r["loss"], r["acc_norm"])}
            for r in grid_results(target, method_values, random_values, zero_shot)]
    return budget_table(rows, target, quantity)


def test_overlapping_spreads_give_no_reliable_winner():
    # rds+rr mean 0.48 ± 0.04 vs random 0.45 ± 0.05: higher mean, but within the seed spread
    t = _table({RR: {16: [0.44, 0.48, 0.52]}, TOPK: {16: [0.40, 0.47, 0.54]}}, {16: [0.40, 0.45, 0.50]})
    rec = recommend([t])
    assert rec["choice"] is None and rec["winners"] == []
    assert "no reliable winner" in rec["text"] and "**Overall: no reliable winner.**" in rec["text"]


def test_single_seed_cells_are_leads_not_winners():
    # one training seed per method: rds+rr's run lies beyond random's 0.45 ± 0.05, topk's does not
    t = _table({RR: {16: [0.56]}, TOPK: {16: [0.47]}}, {16: [0.40, 0.45, 0.50]})
    rec = recommend([t])
    assert rec["choice"] is None and rec["winners"] == []
    assert ("**sciq** (acc_norm): no reliable winner — the representation + selector cells have one training seed"
            in rec["text"])
    assert ("1 of 2 (method, budget) cells have a paired 95% CI to random that excludes zero (largest: rds + "
            "round_robin at budget 16, 56.0 vs random 45.0); rerun with more seeds to confirm.") in rec["text"]
    assert "but 1 of 2 single-seed cells lead random on their one run" in rec["text"]


def test_separated_spreads_name_the_winner_and_margin():
    t = _table({RR: {16: [0.50, 0.51, 0.52], 32: [0.44, 0.48, 0.52]}, TOPK: {16: [0.40, 0.42, 0.44], 32: [0.5, 0.5, 0.5]}},
               {16: [0.40, 0.41, 0.42], 32: [0.40, 0.45, 0.50]})
    rec = recommend([t])
    assert rec["choice"] == "rds + round_robin"
    assert [(w["budget"], w["method"]) for w in rec["winners"]] == [(16, "rds + round_robin")]
    assert rec["winners"][0]["margin"] == pytest.approx(0.10)
    assert ("rds + round_robin at budget 16 (51.0 vs random 41.0, paired Δ +10.0 [+4.7, +16.0], n = 100 items)"
            in rec["text"])
    assert "At budget 32 no method separates from random." in rec["text"]
    assert "**Overall: rds + round_robin** beats random (paired 95% CI excludes zero) in 1 of 2" in rec["text"]


def test_best_of_several_winners_and_zero_shot_caveat():
    t = _table({RR: {16: [0.50, 0.51, 0.52]}, TOPK: {16: [0.55, 0.56, 0.57]}}, {16: [0.40, 0.41, 0.42]}, zero_shot=0.6)
    assert [w["method"] for w in winners(t)] == ["embed + topk"]  # both beat random; the higher mean is marked
    assert "trail the zero-shot model (60.0)" in recommend([t])["text"]


def test_loss_tables_prefer_lower():
    t = _table({RR: {16: [0.50, 0.51, 0.52]}}, {16: [0.40, 0.41, 0.42]}, quantity="query_loss")
    (w,) = winners(t)  # losses are 2 − acc: 1.49 ± 0.01 vs random 1.59 ± 0.01
    assert w["method"] == "rds + round_robin" and w["margin"] == pytest.approx(-0.10)
    assert "-0.100 query loss" in recommend([t])["text"]


def test_report_recommendation_per_target(store):
    results = grid_results("sciq", {RR: {16: [0.50, 0.51, 0.52]}}, {16: [0.40, 0.41, 0.42]}, 0.3)
    results += grid_results("piqa", {RR: {16: [0.44, 0.48, 0.52]}}, {16: [0.40, 0.45, 0.50]}, 0.3)
    exp = fake_experiment(store, results, targets=("sciq", "piqa"))
    md = (store / "report" / run(ReportConfig(exp), store) / "report.md").read_text()
    assert "**sciq** (acc_norm): rds + round_robin at budget 16" in md
    assert "**piqa** (acc_norm): no reliable winner" in md
    assert "**Overall: rds + round_robin** beats random (paired 95% CI excludes zero) in 1 of 2" in md
