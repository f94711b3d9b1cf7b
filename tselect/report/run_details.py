"""The report's account of the run itself: settings, training curves, and what each method chose
(source-task mix beside its score, the top-selected rows). Pure: structures from
tselect.report.gather.details in, blocks (render.py) out."""

from __future__ import annotations

from typing import Any

from tselect.report import tables as T

SKIP_TRAIN_KEYS = ("selection", "budget", "pool", "fmt", "model")  # per cell, or shown elsewhere
EVAL_KEYS = ("metrics", "prompt_format", "limit", "max_length", "n_query", "n_eval")
TOP_TASKS = 3  # source tasks listed per method in the mix table


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def settings_blocks(settings: dict) -> list[tuple]:
    if not settings:
        return []
    rows = [["model", str(settings.get("model", "—"))]]
    train = _flat(settings.get("finetune", {}))
    rows += [[f"finetune {k}", str(v)] for k, v in train.items() if k not in SKIP_TRAIN_KEYS]
    steps = settings.get("steps_by_n_train", {})
    if steps:
        rows.append(["optimizer steps (by training examples)",
                     ", ".join(f"{n} ex → {s}" for n, s in sorted(steps.items(), key=lambda kv: kv[0] or 0))])
    ev = settings.get("evaluate", {})
    rows += [[f"evaluate {k}", str(ev[k])] for k in EVAL_KEYS if k in ev]
    return [("h", 2, "Run settings"), ("p", "As recorded in the artifacts (the first fine-tune and evaluation of the "
                                          "experiment; every cell of a grid shares them except seed and budget)."),
            ("table", ["setting", "value"], rows)]


def curve_blocks(image: str | None) -> list[tuple]:
    if not image:
        return []
    return [("h", 2, "Training loss curves"),
            ("img", image, "training loss per optimizer step, one run per method and budget (lowest seed)")]


def _score_at(tables: list[dict], target: str, method: str, budget: int) -> tuple[str, str]:
    """(mean [CI], Δ vs random [CI]) of a method at a budget in the target's metric table."""
    t = next((t for t in tables if t["target"] == target), None)
    if t is None or budget not in t["budgets"]:
        return "—", "—"
    j = t["budgets"].index(budget)
    stats = t["random"] if method == "random" else t["methods"].get(method)
    diff = None if method == "random" else t["vs_random"].get(method, [None] * len(t["budgets"]))[j]
    return T.show_stat(t["quantity"], stats[j] if stats else None), T.show_diff(t["quantity"], diff)


def _mix(shares: dict[str, float], pool: dict[str, float]) -> str:
    top = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_TASKS]
    return ", ".join(f"{k} {100 * v:.0f}% (pool {100 * pool.get(k, 0.0):.0f}%)" for k, v in top)


def choice_blocks(choices: list[dict], tables: list[dict]) -> list[tuple]:
    if not choices:
        return []
    out: list[tuple] = [("h", 2, "What each method selected"),
                        ("p", f"Source-task mix of each selection at its largest budget (top {TOP_TASKS} tasks, with "
                              "the pool's share), beside the method's score at that budget and its paired difference "
                              "to random; then the first rows each method chose.")]
    for target in dict.fromkeys(c["target"] for c in choices):
        mine = [c for c in choices if c["target"] == target]
        q = next((t["quantity"] for t in tables if t["target"] == target), "")
        rows = [[c["method"], str(c["budget"]), *_score_at(tables, target, c["method"], c["budget"]),
                 _mix(c["shares"], c["pool_shares"])] for c in mine]
        out += [("h", 3, f"{target}"), ("table", ["method", "budget", q, f"Δ {q} vs random", "source-task mix"], rows)]
        top = [[c["method"], str(k + 1), r["source_task"], r["prompt"].replace("\n", " ")]
               for c in mine if c["method"] != "random" for k, r in enumerate(c["top"])]
        if top:
            out.append(("table", ["method", "rank", "source task", "prompt (first 160 characters)"], top))
    return out

