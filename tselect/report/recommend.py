"""The recommendation paragraph, computed from budget tables (tselect.report.tables.budget_table).

A method "wins" a (target, budget) pair only under the table's beats-random rule: the 95% CI of
its paired per-item difference to random (tselect.report.stats) lies entirely on the better side
of zero, with at least two training seeds on both sides; everything else is reported as no
reliable winner, so an interval that touches zero can never read as a recommendation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from tselect.report.tables import display, is_loss, show_diff


def winners(table: dict) -> list[dict[str, Any]]:
    """[{target, quantity, budget, method, mean, random, margin}] for every budget with a winner."""
    out = []
    for j, (b, m) in enumerate(zip(table["budgets"], table["best"])):
        if m is None:
            continue
        mean, rnd = table["methods"][m][j]["mean"], table["random"][j]["mean"]
        diff = table["vs_random"][m][j]
        out.append({"target": table["target"], "quantity": table["quantity"], "budget": b, "method": m,
                    "mean": mean, "random": rnd, "margin": diff["mean"], "diff": diff})
    return out


def margin_text(quantity: str, margin: float) -> str:
    if is_loss(quantity):
        return f"{margin:+.3f} {quantity.replace('_', ' ')}"
    return f"{100 * margin:+.1f} points"


def target_sentence(table: dict) -> str:
    q, t = table["quantity"], table["target"]
    wins = winners(table)
    if not wins:
        budgets = ", ".join(str(b) for b in table["budgets"]) or "none"
        single = single_seed_cells(table)
        if not single:
            return (f"**{t}** ({q}): no reliable winner — at every budget ({budgets}) the 95% CI of each "
                    f"representation + selector's paired difference to random includes zero.")
        return f"**{t}** ({q}): no reliable winner — " + _single_seed_text(q, single)
    parts = [f"{w['method']} at budget {w['budget']} ({display(q, w['mean'])} vs random {display(q, w['random'])}, "
             f"paired Δ {show_diff(q, w['diff'])}, n = {w['diff']['n_items']} items)" for w in wins]
    text = f"**{t}** ({q}): " + "; ".join(parts) + "."
    open_budgets = [str(b) for b, m in zip(table["budgets"], table["best"]) if m is None]
    if open_budgets:
        text += f" At budget {', '.join(open_budgets)} no method separates from random."
    zs = table.get("zero_shot")
    if zs is not None:
        sign = 1 if table["higher"] else -1
        below = [w for w in wins if sign * (w["mean"] - zs["mean"]) < 0]
        if below:
            text += f" Note: {len(below)} of these wins still trail the zero-shot model ({display(q, zs['mean'])})."
    return text


def single_seed_cells(table: dict) -> list[dict[str, Any]]:
    """[{method, budget, mean, random, beyond}] for cells with one training seed: their spread is unknown.

    `beyond`: the paired CI to random excludes zero on the better side (over items and random's
    seeds only, the one run's seed noise being unknown): a lead, not a win.
    """
    from tselect.report.stats import excludes_zero

    out = []
    for m, stats in table["methods"].items():
        for j, (b, s, r) in enumerate(zip(table["budgets"], stats, table["random"])):
            if s is None or s["n"] != 1 or r is None:
                continue
            beyond = excludes_zero(table["vs_random"][m][j], table["higher"])
            out.append({"method": m, "budget": b, "mean": s["mean"], "random": r["mean"], "beyond": beyond})
    return out


def _single_seed_text(q: str, cells: list[dict[str, Any]]) -> str:
    leads = [c for c in cells if c["beyond"]]
    text = (f"the representation + selector cells have one training seed, so their own spread is unknown and "
            f"none can be declared a winner. On that one seed, {len(leads)} of {len(cells)} (method, budget) cells "
            f"have a paired 95% CI to random that excludes zero")
    if leads:
        top = max(leads, key=lambda c: abs(c["mean"] - c["random"]))
        text += (f" (largest: {top['method']} at budget {top['budget']}, {display(q, top['mean'])} vs random "
                 f"{display(q, top['random'])}); rerun with more seeds to confirm")
    return text + "."


def recommend(tables: Sequence[dict]) -> dict[str, Any]:
    """{"winners": [...], "choice": method or None, "text": markdown paragraph}."""
    wins = [w for t in tables for w in winners(t)]
    pairs = sum(len(t["budgets"]) for t in tables)
    lines = [target_sentence(t) for t in tables]
    if not wins:
        single = [c for t in tables for c in single_seed_cells(t)]
        leads = sum(c["beyond"] for c in single)
        if leads:
            lines.append(f"**Overall: no reliable winner.** No cell with two or more training seeds has a paired 95% CI "
                         f"that clears random, but {leads} of {len(single)} single-seed cells lead random on their one "
                         "run: rerun with more training seeds before choosing.")
        else:
            lines.append("**Overall: no reliable winner.** No representation + selector's paired 95% CI to random "
                         "excludes zero on any target at any budget; random selection is as good here and costs "
                         "nothing. More seeds, larger budgets or a larger evaluation split may still separate them.")
        return {"winners": [], "choice": None, "text": "\n\n".join(lines)}
    counts = Counter(w["method"] for w in wins)
    choice, k = counts.most_common(1)[0]
    tied = [m for m, n in counts.items() if n == k and m != choice]
    best = max((w for w in wins if w["method"] == choice), key=lambda w: abs(w["margin"]))
    lines.append(f"**Overall: {choice}** beats random (paired 95% CI excludes zero) in {k} of {pairs} (target, budget) "
                 f"pairs, by up to {margin_text(best['quantity'], best['margin'])} ({best['target']}, budget "
                 f"{best['budget']}). Weigh that against its selection cost in the cost ledger.")
    if tied:  # equally frequent winners: the first listed is not better, only first
        lines[-1] += f" Tied with {', '.join(tied)} ({k} wins each)."
    return {"winners": wins, "choice": choice, "text": "\n\n".join(lines)}
