"""The three measurements of the evaluate stage and the two --metrics modes that combine them.

- Query loss: each example's token-mean cross-entropy on its answer tokens (the same encoding and
  masking as training), averaged over examples, as in TIS's query-CE diagnostic.
- Multiple choice (rows with `choices`/`gold`): log-likelihood of each choice; acc and acc_norm.
- Generation (rows with `answers`): greedy answers scored by exact match, token F1, numeric match.
The forward passes go through tselect.evaluate.ranks, so under torchrun every measurement is
split across the ranks and gathered on rank 0 (which alone calls these functions there).
"""

from __future__ import annotations

from typing import Any

from tselect.evaluate import ranks
from tselect.evaluate.prompts import PLAIN_CUE, PROMPTS
from tselect.metrics import binomial_se, exact_match, extract_number, mc_accuracy, token_f1


def query_losses(model, tok, examples, batch_size: int, max_length: int) -> dict[str, Any]:
    """Token-mean CE on each example's answer tokens; loss = mean over kept examples."""
    from tselect.data.tokenize import encode

    enc = encode(examples, tok, max_length)
    rows = [(list(r.input_ids), list(r.labels)) for r in enc.rows]
    scored = ranks.run(model, tok, "row_losses", rows=rows, batch_size=batch_size)
    per = [{"id": examples[k].id, "loss": ce, "n_tokens": n} for k, (ce, n) in zip(enc.kept, scored)]
    loss = sum(r["loss"] for r in per) / len(per) if per else float("nan")
    return {"loss": loss, "n": len(per), "n_skipped": len(enc.skipped), "per_example": per}


def score_mc(model, tok, examples, cfg, riders: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """Log-likelihood of every choice as the continuation of the prompt; acc and acc_norm.

    Each item's prompt is encoded once and shared by its choices (tselect.scoring_fast). `riders`:
    example id -> answer tokens packed as one more segment of that item; their token-mean losses
    come back under "riders" (see eval_loss_and_mc)."""
    from tselect.scoring_fast import pack_choices

    items, riders = [], riders or {}
    for ex in examples:
        prompt, sep = PROMPTS[cfg.prompt_format](tok, ex)
        conts = [list(tok(sep + choice, add_special_tokens=False)["input_ids"]) for choice in ex.meta["choices"]]
        extra = [riders[ex.id]] if ex.id in riders else []
        fits = [c for c in conts if len(prompt) + len(c) > cfg.max_length] == []
        items.append(pack_choices(tok, prompt, conts + (extra if fits else []), cfg.max_length,
                                  what=[*ex.meta["choices"], "answer"][: len(conts) + (len(extra) if fits else 0)]))
    lls = ranks.run(model, tok, "choice_loglikes", items=items, batch_size=cfg.batch_size)
    n_choices = [len(ex.meta["choices"]) for ex in examples]
    ridden = {ex.id: {"loss": -ll[n] / len(riders[ex.id]), "n_tokens": len(riders[ex.id])}
              for ex, ll, n in zip(examples, lls, n_choices) if len(ll) > n}
    lls = [ll[:n] for ll, n in zip(lls, n_choices)]
    golds = [int(ex.meta["gold"]) for ex in examples]
    lengths = [[len(c) for c in ex.meta["choices"]] for ex in examples]  # chars, without the separator
    res = mc_accuracy(lls, golds, lengths)
    per = [{"id": ex.id, "loglikes": ll, "gold": g, "pred": p, "pred_norm": q}
           for ex, ll, g, p, q in zip(examples, lls, golds, res.pred, res.pred_norm)]
    n = len(examples)
    out = {"n": n, "acc": res.acc, "acc_se": binomial_se(res.acc, n), "acc_norm": res.acc_norm,
           "acc_norm_se": binomial_se(res.acc_norm, n), "per_example": per}
    return {**out, "riders": ridden} if riders else out


def eval_loss_and_mc(model, tok, rows, mc_rows, cfg) -> tuple[dict[str, Any], dict[str, Any]]:
    """(held-out loss of every row, MC scores of mc_rows) with each MC prompt encoded once: where a
    row's encoding is its MC prompt + its answer, the answer is one more segment of the packed item
    (tselect.scoring_fast.answer_segment) and its loss is read from there; other rows are scored
    alone. Same numbers as query_losses + score_mc."""
    from tselect.data.tokenize import encode
    from tselect.scoring_fast import answer_segment

    enc = encode(rows, tok, cfg.max_length)
    prompts = {ex.id: PROMPTS[cfg.prompt_format](tok, ex)[0] for ex in mc_rows}
    riders: dict[str, list[int]] = {}  # example id -> answer tokens riding in its MC pack
    for r, k in zip(enc.rows, enc.kept):
        ex = rows[k]
        if ex.id in prompts and ex.id not in riders:
            seg = answer_segment(r.input_ids, r.labels, prompts[ex.id])
            if seg is not None and len(prompts[ex.id]) + len(seg) <= cfg.max_length:
                riders[ex.id] = seg
    mc = score_mc(model, tok, mc_rows, cfg, riders) if mc_rows else {}
    rode = mc.pop("riders", {})  # riders whose item did not fit max_length whole are scored alone
    alone = [rows[k] for k in enc.kept if rows[k].id not in rode]
    alone_loss = {r["id"]: r for r in query_losses(model, tok, alone, cfg.batch_size, cfg.max_length)["per_example"]}
    per = [{"id": rows[k].id, **rode[rows[k].id]} if rows[k].id in rode else alone_loss[rows[k].id]
           for k in enc.kept]
    loss = sum(r["loss"] for r in per) / len(per) if per else float("nan")
    return {"loss": loss, "n": len(per), "n_skipped": len(enc.skipped), "per_example": per}, mc


def generate_scored(model, tok, examples, cfg) -> dict[str, Any]:
    """Greedy answers (batched, left-padded, split across ranks: tselect.evaluate.generate), scored by EM/F1."""
    keep = cfg.max_length - cfg.max_new_tokens  # the prompt's tail, so prompt + answer fit
    texts = ranks.run(model, tok, "generate", prompts=[PROMPTS[cfg.prompt_format](tok, ex)[0][-keep:] for ex in examples],
                      max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                      stop_at_newline=cfg.prompt_format == "plain")
    per = []
    for ex, text in zip(examples, texts):
        pred = text.split("\n")[0].strip() if cfg.prompt_format == "plain" else text.strip()
        golds = ex.meta["answers"] if isinstance(ex.meta["answers"], list) else [ex.meta["answers"]]
        gold_num = extract_number(golds[0])
        per.append({"id": ex.id, "pred": pred, "em": exact_match(pred, golds), "f1": token_f1(pred, golds),
                    "num_em": None if gold_num is None else float(extract_number(pred) == gold_num)})
    nums = [r["num_em"] for r in per if r["num_em"] is not None]
    em, num_em = _mean([r["em"] for r in per]), _mean(nums)
    return {"n": len(per), "em": em, "em_se": binomial_se(em, len(per)), "f1": _mean([r["f1"] for r in per]),
            "num_em": num_em, "num_em_se": binomial_se(num_em, len(nums)), "n_numeric": len(nums), "per_example": per}


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _shots(cfg, query) -> tuple[list, list]:
    """(the few-shot examples, the query rows scored for the query loss: the first --limit of the rest)."""
    from tselect.evaluate.fewshot import draw_shots

    shots = draw_shots(list(query.examples), cfg.shots, cfg.shot_seed) if cfg.shots else []
    taken = {ex.id for ex in shots}
    return shots, [ex for ex in query.examples if ex.id not in taken][: cfg.limit]


def _add_shots(cfg, rows: list, shots: list) -> list:
    from tselect.evaluate import fewshot

    if not shots:
        return rows
    if cfg.prompt_format == "plain":
        return [fewshot.with_shots_plain(ex, shots, PLAIN_CUE) for ex in rows]
    return [fewshot.with_shots_chat(ex, shots) for ex in rows]


def _is_mc(ex) -> bool:
    return "choices" in ex.meta and "gold" in ex.meta


def measure_all(cfg, model, tok, query, evalset) -> dict[str, Any]:
    """--metrics all: query loss, held-out loss, MC accuracy and generation EM/F1."""
    rows = list(evalset.examples[: cfg.limit]) if evalset is not None else []
    shots, query_rows = _shots(cfg, query)
    mc_rows = _add_shots(cfg, [ex for ex in rows if _is_mc(ex)], shots)
    gen_rows = _add_shots(cfg, [ex for ex in rows if "answers" in ex.meta and not _is_mc(ex)], shots)
    out: dict[str, Any] = {
        "query": query_losses(model, tok, query_rows, cfg.batch_size, cfg.max_length),
        "eval": {"n": len(rows), "n_unscored": len(rows) - len(mc_rows) - len(gen_rows)},
    }
    if rows:  # the held-out loss (eval rows are never used for selection) and MC, sharing prompts
        out["eval"]["loss"], mc = eval_loss_and_mc(model, tok, rows, mc_rows, cfg)
        if mc_rows:
            out["eval"]["mc"] = mc
    if gen_rows:
        out["eval"]["generation"] = generate_scored(model, tok, gen_rows, cfg)
    if shots:
        out["shots"] = [ex.id for ex in shots]
    return out


def measure_loss(cfg, model, tok, query, evalset) -> dict[str, Any]:
    """--metrics loss: the query loss and the held-out loss on every eval row, no task metrics."""
    rows = list(evalset.examples[: cfg.limit]) if evalset is not None else []
    out: dict[str, Any] = {
        "query": query_losses(model, tok, list(query.examples[: cfg.limit]), cfg.batch_size, cfg.max_length),
        "eval": {"n": len(rows), "n_unscored": len(rows)},
    }
    if rows:
        out["eval"]["loss"] = query_losses(model, tok, rows, cfg.batch_size, cfg.max_length)
    return out


MEASURES = {"all": measure_all, "loss": measure_loss}  # --metrics
