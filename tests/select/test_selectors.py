"""Properties every registered selector must have, then exact hand-computed cases per selector."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap

import numpy as np
import pytest

from tselect.select import diversity
from tselect.select.basic import NoParams
from tselect.select.inputs import SelectInputs
from tselect.select.registry import SELECTORS
from tselect.similarity import ArraySimilarity
from tests.select.helpers import order_of, random_inputs, unit_circle

KNOWN_NEEDS = {"similarity", "features", "scores", "subtasks", "exclude"}


def run(name, inp, budget, seed=1, **params):
    sel = SELECTORS[name]
    return order_of(sel.fn(inp, budget, sel.params(**params), seed))


# ---- properties over the registry ----------------------------------------------------------

@pytest.mark.parametrize("name", SELECTORS)
def test_every_budget_is_a_prefix(name):
    inp = random_inputs()
    small, large = run(name, inp, 5), run(name, inp, 20)
    assert small.tolist() == large[:5].tolist(), f"{name}: budget 5 is not a prefix of budget 20"


@pytest.mark.parametrize("name", SELECTORS)
def test_output_is_distinct_in_range_int64(name):
    inp = random_inputs()
    out = run(name, inp, 20)
    assert out.dtype == np.int64 and out.shape == (20,)
    assert np.unique(out).size == 20 and out.min() >= 0 and out.max() < inp.n_pool


@pytest.mark.parametrize("name", SELECTORS)
def test_full_budget_orders_every_allowed_row(name):
    inp = random_inputs()
    allowed = np.setdiff1d(np.arange(inp.n_pool), inp.exclude) if name == "strict_random" \
        else np.arange(inp.n_pool)
    out = run(name, inp, allowed.size)
    assert sorted(out.tolist()) == allowed.tolist()


@pytest.mark.parametrize("name", SELECTORS)
def test_deterministic_given_seed_and_chunking(name):
    a = run(name, random_inputs(), 20, seed=7)
    assert run(name, random_inputs(), 20, seed=7).tolist() == a.tolist()
    chunked = run(name, random_inputs(chunk_rows=7), 20, seed=7)
    assert chunked.tolist() == a.tolist(), f"{name}: result depends on the similarity chunk size"


@pytest.mark.parametrize("name", SELECTORS)
def test_params_are_frozen_documented_and_needs_known(name):
    sel = SELECTORS[name]
    assert dataclasses.is_dataclass(sel.params) and sel.params.__dataclass_params__.frozen
    sel.params()  # the defaults are valid
    assert sel.needs <= KNOWN_NEEDS, f"{name}: unknown needs {sel.needs - KNOWN_NEEDS}"
    body = ast.parse(textwrap.dedent(inspect.getsource(sel.params))).body[0].body
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign):
            doc = body[i + 1] if i + 1 < len(body) else None
            assert isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant), \
                f"{name}: parameter {node.target.id} has no docstring under it"


# ---- exact small cases ---------------------------------------------------------------------

def sim_inputs(sim, **kw):
    sim = np.asarray(sim, dtype=np.float32)
    return SelectInputs(n_pool=sim.shape[1], sim=ArraySimilarity(sim, chunk_rows=2), **kw)


def test_uot_single_query_follows_similarity():
    # One query with a hard marginal: at the fixed point T_j ∝ K_j^(1−f), f = λ₂/(λ₂+ε),
    # so mass is monotone in S and the order is S descending.
    assert run("uot", sim_inputs([[0.9, 0.5, 0.7]]), 3).tolist() == [0, 2, 1]


def test_uot_mass_follows_the_queries():
    # q0 and q1 are twins of row 1, q2 of row 3: row 1 receives ≈ 2/3, row 3 ≈ 1/3. Of the
    # rest, row 2 gets q2's e^(−.05/ε) = e^−5 share (≈ .002) and row 0 e^−10 shares (≈ 3e-5).
    sim = [[0.8, 1.0, 0.0, 0.2], [0.8, 1.0, 0.0, 0.2], [0.0, 0.3, 0.9, 1.0]]
    assert run("uot", sim_inputs(sim), 4).tolist() == [1, 3, 2, 0]


def test_knn_uniform_hand_computed():
    # d = 1 − S sorted: q0 rows 0(.1) 1(.2) 3(.5) 6(.7) 5(.8) 2(.9) 4(1);
    #                   q1 rows 2(.05) 1(.3) 4(.4) 3(.7) 6(.8) 5(.9) 0(1).
    # α = .5, C = 1: grow K while .5·g(K) < .5·M = 1, i.e. g(K) < 2.
    # g(1) = .1 + .25 = .35; g(2) = (.4 + .3) + (.35 + .1) = 1.15; g(3) = (2.1 − .8) + (2.1 − .75)
    # = 2.65 ≥ 2 → K = 3. top-3: q0 {0,1,3}, q1 {2,1,4}: p1 = 2/6, p0 = p2 = p3 = p4 = 1/6.
    # Rows 5, 6 have p = 0 and follow by max similarity: 6 (.3) before 5 (.2).
    sim = [[.9, .8, .1, .5, 0, .2, .3], [0, .7, .95, .3, .6, .1, .2]]
    assert run("knn_uniform", sim_inputs(sim), 7, alpha=0.5, c=1.0).tolist() == [1, 0, 2, 3, 4, 6, 5]


def test_knn_kde_hand_computed():
    # q = e1; rows x0 = x1 = e1, x2 = (.8,.6,0), x3 = (.6,.8,0), x4 = e3. σ = 1 → kernel = 2cos − 1.
    # kde: x0 = x1 = 1+1+.6+.2 = 2.8, x2 = .6+.6+1+.92 = 3.12, x3 = .2+.2+.92+1 = 2.32, x4 = 1.
    # Query order by d: x0(0) x1(0) x2(.2) x3(.4) x4(1). α = .5, C = 1: stop when total ≥ 1.
    # levels: 1/2.8 → cost 0; 2/2.8 → cost .2·.714 = .143; +1/3.12 = 1.0348 → .4·1.0348 − .0641
    # = .350; +1/2.32 = 1.4658 → 1·1.4658 − .2365 = 1.229 ≥ 1: s = 1.4658, lastK = 2.
    # p(x0) = p(x1) = 1/(s·2.8) = .2436, p(x2) = 1/(s·3.12) = .2187, x3 gets the rest .2941.
    q = np.array([[1.0, 0, 0]], dtype=np.float32)
    x = np.array([[1, 0, 0], [1, 0, 0], [.8, .6, 0], [.6, .8, 0], [0, 0, 1]], dtype=np.float32)
    inp = SelectInputs(n_pool=5, sim=ArraySimilarity(q @ x.T), pool_features=[x],
                       query_features=[q], weights=[1.0])
    out = run("knn_kde", inp, 5, alpha=0.5, c=1.0, max_k=5, kde_k=5, sigma=1.0, pool_divisor=1)
    assert out.tolist() == [3, 0, 1, 2, 4]
    # Without the density correction the duplicates come first.
    flat = run("knn_kde", inp, 5, alpha=0.5, c=1.0, max_k=5, kde_k=5, sigma=0.0, pool_divisor=1)
    assert flat.tolist()[:2] == [0, 1]


def test_less_task_max_over_subtask_means():
    # subtask a = rows 0,1: means [.5, .125, .5, .25]; b = row 2: [0, .375, .25, .625].
    # max: [.5, .375, .5, .625] → 3, then 0 and 2 tie → 0 first, then 1. (topk would put 0 first.)
    sim = [[.75, .125, .5, .25], [.25, .125, .5, .25], [0, .375, .25, .625]]
    assert run("less_task", sim_inputs(sim, query_subtasks=["a", "a", "b"]), 4).tolist() == [3, 0, 2, 1]
    # No labels: one subtask, the plain mean [1/3, .208, .417, .375].
    assert run("less_task", sim_inputs(sim), 4).tolist() == [2, 3, 0, 1]
    with pytest.raises(ValueError, match="2 query subtask labels for 3 queries"):
        run("less_task", sim_inputs(sim, query_subtasks=["a", "b"]), 4)


def test_strict_random_draws_from_the_complement():
    inp = SelectInputs(n_pool=6, exclude=np.array([3, 1, 3]))
    out = run("strict_random", inp, 4, seed=0)
    # complement [0, 2, 4, 5] permuted by the same PCG64 draw `random` uses on 4 rows
    assert out.tolist() == np.array([0, 2, 4, 5])[np.random.default_rng(0).permutation(4)].tolist()
    with pytest.raises(ValueError, match="budget 5 exceeds the 4 pool examples left after excluding 2"):
        run("strict_random", inp, 5)
    with pytest.raises(ValueError, match="outside the pool"):
        run("strict_random", SelectInputs(n_pool=3, exclude=np.array([3])), 1)


def test_kcenter_hand_computed():
    # Rows at 0°, 10°, 90°, 180°, 120°; one query at 3° → first center 0 (closest on average).
    # Farthest from {0}: 180° (distance 2). From {0, 3}: 90° (1) beats 120° (.5) and 10° (.015).
    # Then 120° (1 − cos 30° = .134) before 10° (1 − cos 10° = .015).
    x = unit_circle([0, 10, 90, 180, 120])
    inp = SelectInputs(n_pool=5, pool_features=[x], query_features=[unit_circle([3])], weights=[1.0])
    assert run("kcenter", inp, 5).tolist() == [0, 3, 2, 4, 1]
    # Without queries: the row nearest the pool mean (≈ 77°) starts, i.e. 90°.
    assert run("kcenter", SelectInputs(n_pool=5, pool_features=[x]), 1).tolist() == [2]


def test_score_orders_by_score_with_nan_last():
    inp = SelectInputs(n_pool=5, scores=np.array([0.2, np.nan, 0.9, 0.2, -1.0]))
    assert run("score", inp, 5).tolist() == [2, 0, 3, 4, 1]
    with pytest.raises(ValueError, match="expected \\(4,\\)"):
        run("score", SelectInputs(n_pool=4, scores=np.zeros(5)), 2)
    with pytest.raises(ValueError, match="needs a score artifact"):
        run("score", SelectInputs(n_pool=4), 2)


def test_score_diverse_hand_computed():
    # Score order 3 (.95), 0 (.9), 1 (.8), 2 (.5), 4 (.1); row 5 has no score.
    # tau = .1 ⇔ keep when the angle to every kept row exceeds 25.8°: keep 3 (2°), skip 0 (2° from
    # 3) and 1 (3° from 3), keep 2 (90°), keep 4 (180°). Then the skipped 0, 1 and the NaN row 5.
    x = unit_circle([0, 5, 90, 2, 180, 45])
    inp = SelectInputs(n_pool=6, pool_features=[x], weights=[1.0],
                       scores=np.array([.9, .8, .5, .95, .1, np.nan]))
    assert run("score_diverse", inp, 6).tolist() == [3, 2, 4, 0, 1, 5]
    assert run("score_diverse", inp, 6, tau=0.0).tolist() == [3, 0, 1, 2, 4, 5]


def test_score_diverse_and_kcenter_do_not_depend_on_batching(monkeypatch):
    inp = random_inputs(n=60)
    expect = {n: run(n, inp, 40, tau=0.05) if n == "score_diverse" else run(n, inp, 40)
              for n in ("score_diverse", "kcenter")}
    monkeypatch.setattr(diversity, "WALK_BATCH", 3)
    monkeypatch.setattr(diversity, "CHUNK_ROWS", 7)
    assert run("score_diverse", inp, 40, tau=0.05).tolist() == expect["score_diverse"].tolist()
    assert run("kcenter", inp, 40).tolist() == expect["kcenter"].tolist()


# ---- parameter validation ------------------------------------------------------------------

@pytest.mark.parametrize("name, bad, message", [
    ("uot", {"eps": -1}, "eps must be > 0, got -1; pass --param eps=0.01"),
    ("uot", {"reg_m2": 0}, "reg_m2 must be > 0, got 0"),
    ("uot", {"num_iter": 0}, "num_iter must be >= 1, got 0"),
    ("uot", {"candidates": -5}, "candidates must be >= 0"),
    ("knn_uniform", {"alpha": 1.5}, "alpha must be in \\(0, 1\\), got 1.5; pass --param alpha=0.01"),
    ("knn_uniform", {"c": 0}, "c must be > 0"),
    ("knn_uniform", {"max_k": 0}, "max_k must be >= 1"),
    ("knn_kde", {"sigma": -0.1}, "sigma must be >= 0"),
    ("knn_kde", {"kde_k": 0}, "kde_k must be >= 1"),
    ("knn_kde", {"max_k": 1}, "max_k must be >= 2"),
    ("knn_kde", {"pool_divisor": 0}, "pool_divisor must be >= 1"),
    ("score_diverse", {"tau": -1}, "tau must be in \\[0, 2\\), got -1; pass --param tau=0.1"),
])
def test_bad_params_raise_value_error_naming_the_fix(name, bad, message):
    with pytest.raises(ValueError, match=message):
        SELECTORS[name].params(**bad)


def test_parameterless_selectors_use_noparams():
    for name in ("less_task", "strict_random", "kcenter", "score"):
        assert SELECTORS[name].params is NoParams
