"""The selector registry: name → (function, parameter dataclass, what it reads).

A selector is `fn(inputs: SelectInputs, budget: int, params, seed: int) -> int64[budget]`,
an ordering whose every prefix is the selection at that smaller budget. `params` is a frozen
dataclass built from `--param key=value` options; its field docstrings are the help text.
`needs` names the inputs the select stage must load: "similarity" (query–pool S),
"features" (raw per-checkpoint vectors), "scores" (a score artifact), "none".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tselect.select import basic


@dataclass(frozen=True)
class Selector:
    fn: Callable
    params: type
    needs: frozenset[str]
    summary: str


SELECTORS: dict[str, Selector] = {
    "random": Selector(basic.select_random, basic.NoParams, frozenset(), "seeded random permutation"),
    "topk": Selector(basic.select_topk, basic.NoParams, frozenset({"similarity"}),
                     "doubly greedy: order by max similarity to any query"),
    "round_robin": Selector(basic.select_round_robin, basic.NoParams, frozenset({"similarity"}),
                            "queries take turns taking their nearest unused example"),
}
