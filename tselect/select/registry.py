"""The selector registry: name → (function, parameter dataclass, what it reads).

A selector is `fn(inputs: SelectInputs, budget: int, params, seed: int) -> int64[budget]`,
an ordering whose every prefix is the selection at that smaller budget. `params` is a frozen
dataclass built from `--param key=value` options; its field docstrings are the help text.
`needs` names the inputs the select stage must load: "similarity" (query–pool S),
"features" (raw per-checkpoint vectors), "scores" (a score artifact), "subtasks" (query
subtask labels, optional), "exclude" (selections to avoid); empty = nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tselect.select import basic, diversity, knn, knn_kde, less_task, strict, uot


@dataclass(frozen=True)
class Selector:
    fn: Callable
    params: type
    needs: frozenset[str]
    summary: str


def _needs(*names: str) -> frozenset[str]:
    return frozenset(names)


SELECTORS: dict[str, Selector] = {
    "random": Selector(basic.select_random, basic.NoParams, _needs(), "seeded random permutation"),
    "topk": Selector(basic.select_topk, basic.NoParams, _needs("similarity"),
                     "doubly greedy: order by max similarity to any query"),
    "round_robin": Selector(basic.select_round_robin, basic.NoParams, _needs("similarity"),
                            "queries take turns taking their nearest unused example"),
    "uot": Selector(uot.select_uot, uot.UOTParams, _needs("similarity"),
                    "unbalanced OT (TIS): order by mass transported from the queries"),
    "knn_uniform": Selector(knn.select_knn_uniform, knn.KNNUniformParams, _needs("similarity"),
                            "TSDS KNN-Uniform: each query spreads mass over its K nearest"),
    "knn_kde": Selector(knn_kde.select_knn_kde, knn_kde.KNNKDEParams,
                        _needs("similarity", "features"),
                        "TSDS KNN-KDE: water-filled neighbours, discounted by local density"),
    "less_task": Selector(less_task.select_less_task, basic.NoParams,
                          _needs("similarity", "subtasks"),
                          "LESS: max over query subtasks of the mean similarity"),
    "strict_random": Selector(strict.select_strict_random, basic.NoParams, _needs("exclude"),
                              "random order over examples no given selection chose"),
    "kcenter": Selector(diversity.select_kcenter, basic.NoParams, _needs("features"),
                        "k-center greedy in feature space, starting nearest the queries"),
    "score": Selector(diversity.select_score, basic.NoParams, _needs("scores"),
                      "order by a score artifact (length, IFD, MIWV, judge), NaN last"),
    "score_diverse": Selector(diversity.select_score_diverse, diversity.ScoreDiverseParams,
                              _needs("scores", "features"),
                              "DEITA: by score, skipping rows within tau of a kept one"),
}
