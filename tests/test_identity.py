"""One config → id rule: every field of every stage config is hashed or excluded with a reason,
ids are unchanged where the rule only restated an older formula, and models enter by content."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from tselect import artifacts, identity
from tselect.distance import DistanceConfig
from tselect.evaluate import EvaluateConfig, hashed_config
from tselect.experiment import ExperimentConfig
from tselect.experiment.spec import Spec
from tselect.featurize import FeaturizeConfig
from tselect.finetune import FinetuneConfig
from tselect.report import ReportConfig
from tselect.scores import STRATEGIES, ScoreConfig
from tselect.select import QuantileConfig, SelectConfig
from tselect.training import TrainConfig
from tselect.warmup import WarmupConfig, WarmupRecipe
from tests.test_layers import STAGES

# One valid instance per config class (required fields only).
EXAMPLES = {
    FeaturizeConfig: FeaturizeConfig(rep="rds", pool="builtin:pool", query="builtin:sciq"),
    WarmupConfig: WarmupConfig(),
    WarmupRecipe: WarmupRecipe(),
    ScoreConfig: ScoreConfig(strategy="ifd"),
    SelectConfig: SelectConfig(features="featurize-1", selector="round_robin"),
    QuantileConfig: QuantileConfig(features="featurize-1", order="select-1", quantile_bin=0),
    DistanceConfig: DistanceConfig(features="featurize-1", selection="select-1"),
    FinetuneConfig: FinetuneConfig(selection="select-1"),
    TrainConfig: TrainConfig(),
    EvaluateConfig: EvaluateConfig(),
    ExperimentConfig: ExperimentConfig(spec="x.toml"),
    Spec: Spec(name="n", pool="builtin:pool", targets={"sciq": "builtin:sciq"}, representations=("rds",),
               selectors=("round_robin",), budgets=(8,), seeds=(0,), random_seeds=(0, 1, 2)),
    ReportConfig: ReportConfig(experiment="experiment-1"),
}


def test_every_stage_config_is_covered():
    for stage in STAGES:
        mod = importlib.import_module(f"tselect.{stage}")
        for name in dir(mod):
            obj = getattr(mod, name)
            if name.endswith("Config") and dataclasses.is_dataclass(obj) and isinstance(obj, type):
                assert obj in EXAMPLES, f"tselect.{stage}.{name} is a stage config: add it to EXAMPLES"


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
def test_every_field_is_hashed_or_excluded_on_purpose(cls):
    fields = {f.name for f in dataclasses.fields(cls)}
    excluded = identity.not_hashed(cls)
    assert "NOT_HASHED" in vars(cls), f"{cls.__name__} must declare NOT_HASHED (field → reason), even if empty"
    assert set(excluded) <= fields, f"{cls.__name__}.NOT_HASHED names no field: {set(excluded) - fields}"
    assert all(isinstance(r, str) and len(r) > 10 for r in excluded.values()), "every exclusion states its reason"
    assert set(identity.hashed(EXAMPLES[cls])) == fields - set(excluded)


def test_a_new_field_is_hashed_by_default():
    @dataclasses.dataclass(frozen=True)
    class Grown:
        a: int = 1
        b: int = 2
        NOT_HASHED = {"b": "a reason long enough"}

    assert identity.hashed(Grown()) == {"a": 1}
    assert identity.hashed(Grown(), format=3) == {"a": 1, "format": 3}


def test_model_path_never_enters_an_id():
    a = FeaturizeConfig(rep="rds", pool="builtin:pool", query="builtin:sciq", model="/one/place")
    b = dataclasses.replace(a, model="/another/place")
    assert identity.hashed(a) == identity.hashed(b)  # the fingerprint (inputs) carries the model
    for cfg in (FinetuneConfig(selection="s", model="/x"), EvaluateConfig(model="/x"), ScoreConfig("ifd", model="/x"),
                WarmupConfig(model="/x")):
        assert "model" not in identity.hashed(cfg)


def test_scores_leave_out_what_a_strategy_ignores():
    assert identity.hashed(ScoreConfig("length"), STRATEGIES["length"].ignores) == {"strategy": "length"}
    assert identity.hashed(ScoreConfig("ifd", max_length=128, batch_size=4), STRATEGIES["ifd"].ignores) == \
        {"strategy": "ifd", "max_length": 128, "batch_size": 4}


# compute_id of each config under the formulas before the one rule (measured on commit 623850f):
# these ids must not move. Finetune and cell ids are pinned at their schema 2 (the finetune
# schedule rule changed what a finetune of the same config produces, artifacts.STAGE_SCHEMA).
def test_ids_are_unchanged_where_the_rule_restates_the_old_formula():
    cid = artifacts.compute_id
    ft = FinetuneConfig(selection="select-0123", budget=16, model="/some/model", train=TrainConfig(lr=2e-4, seed=1))
    assert cid("finetune", identity.hashed(ft), {"selection": "select-0123", "model": "fp"}) == "finetune-4e5354bdc479bc14"
    ev = EvaluateConfig(target="builtin:sciq", finetune="finetune-1", limit=20)
    assert cid("evaluate", hashed_config(ev), {"query": "q"}) == "evaluate-859e73af583172f3"  # what evaluate.run hashes
    sc = SelectConfig(features="featurize-1", selector="round_robin", budget=8, params=(("k", "2"),))
    assert cid("select", identity.hashed(sc), {"features": "featurize-1"}) == "select-29720e1eedec2e6c"
    d = DistanceConfig(features="f", selection="s", budgets=(8, 2, 8))
    assert cid("distance", identity.hashed(d), {"features": "f", "selection": "s"}) == "distance-857dfcffc1d828ca"
    length = identity.hashed(ScoreConfig("length"), STRATEGIES["length"].ignores)
    assert cid("scores", length, {"pool": "p"}) == "scores-759b9d45a7ee65b1"
    ifd = identity.hashed(ScoreConfig("ifd", max_length=128, batch_size=4), STRATEGIES["ifd"].ignores)
    assert cid("scores", ifd, {"pool": "p"}) == "scores-655d332c74287489"
    assert cid("report", identity.hashed(ReportConfig("e"), format=1), {"experiment": "e"}) == "report-b1cfaf4665d6d0eb"
    q = QuantileConfig(features="f", order="o", quantile_bin=3, bins=10, per_bin=50)
    assert cid("select", identity.hashed(q, selector="quantile"), {"features": "f", "source": "o"}) == "select-98d6031f2d7026e7"


def test_cell_and_experiment_ids_are_unchanged():
    from pathlib import Path

    from tselect.experiment import load_spec, plan

    spec = load_spec(Path(__file__).parents[1] / "examples" / "experiments" / "smoke.toml")
    cells = {c.key: c for c in plan(spec, 100)}
    expected = {"zero_shot/sciq": "cell-fbe2057291d91cc5", "grid/embed/round_robin/sciq/b8/s0": "cell-f2b6d2c32e9a4852",
                "random/b8/s0": "cell-d3d58ebba4e471c6"}
    for key, aid in expected.items():
        assert artifacts.compute_id("cell", spec.cell_settings(cells[key]), {"pool": "p"}) == aid, key
    assert artifacts.compute_id("experiment", identity.hashed(spec), {"cells": "d"}) == "experiment-12e6e00b9f892b68"


def test_featurize_id_drops_the_model_path():
    """The one intended change: featurize ids no longer hash the --model path (was featurize-2828b57fb59fb7cc)."""
    from tselect.featurize import _hashed_config

    fc = FeaturizeConfig(rep="rds", pool="builtin:pool", query="builtin:sciq", model="/m")
    assert "model" not in _hashed_config(fc)
    assert artifacts.compute_id("featurize", _hashed_config(fc), {"pool": "p"}) != "featurize-2828b57fb59fb7cc"
