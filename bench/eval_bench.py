"""Evaluation cost: tselect's evaluate scoring against the path it replaced and a plain forward.

    python -m bench.run eval                     # SciQ + ARC-Easy eval rows, 16 items each
    python -m bench.run eval --n 100 --repeats 3

Model: the embedded SmolLM2-135M (fp32, CPU, --threads torch threads). Rows: the first --n rows of
`builtin:sciq:eval` and `builtin:arc_easy:eval`, prompted with the chat template as `tselect
evaluate` does. Every case scores the same rows the way `tselect evaluate --metrics all` needs:
the held-out loss of every row and the log-likelihood of every choice.

  old     the previous path, kept here only for this comparison: full [B, T, V] logits and a
          float32 log-softmax at every position, every choice scored as its own ctx + choice
          sequence (the context encoded once per choice), batches sorted by length.
  new     tselect.evaluate.eval_loss_and_mc (what `--metrics all` runs on MC rows): the head only at
          scored positions; each item's context encoded once, shared by its choices and by the
          row's own answer (for the held-out loss) through one packed row.
  loss    tselect.evaluate.query_losses alone (`--metrics loss`).
  plain   a plain HF forward (model(ids).logits) over the same unique tokens as `new` (each
          item's context once, every choice once, the answer once), same batch size: the floor.

Reported: unique tokens/s of `new` as a ratio to `plain` (target ≥ 0.7), the speed-up of `new`
over `old` (target ≥ 3), and the largest score difference between `old` and `new`. Cases run
--repeats times, interleaved (the machine is shared); the minimum time counts. The load average
is recorded before and after. Results: bench/results/eval.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

HERE = Path(__file__).parent
TARGETS = ("builtin:sciq:eval", "builtin:arc_easy:eval")


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench.run eval")
    ap.add_argument("--n", type=int, default=16, help="eval items per target")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TSELECT_THREADS", "1")))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    return ap.parse_args(argv)


# --- the old path (not product code any more) ------------------------------------------------------

def old_scores(model, tok, rows, batch_size: int, max_length: int) -> tuple[list[float], list[list[float]]]:
    """(per-row loss, per-item choice log-likelihoods) with full logits everywhere, one pair per choice."""
    from tselect.data.tokenize import batches, encode, length_sorted
    from tselect.evaluate import PROMPTS
    from tselect.scoring import fit_pair, loglikes_from_ids, token_losses

    enc = encode(rows, tok, max_length)
    losses = [0.0] * len(enc.rows)
    for idx, ids, mask, labels in batches(enc.rows, batch_size, tok.pad_token_id, order=length_sorted(enc.rows)):
        out = token_losses(model, ids, mask, labels)
        for b, i in enumerate(idx):
            losses[i] = float(out.mean_ce[b])
    pairs, sizes = [], []
    for ex in rows:
        prompt, sep = PROMPTS["chat"](tok, ex)
        conts = [tok(sep + c, add_special_tokens=False)["input_ids"] for c in ex.meta["choices"]]
        pairs += [fit_pair(tok, prompt, k, max_length) for k in conts]
        sizes.append(len(conts))
    flat, lls = loglikes_from_ids(model, pairs, tok.pad_token_id, batch_size), []
    for n in sizes:
        lls.append(flat[:n])
        flat = flat[n:]
    return losses, lls


def new_scores(model, tok, rows, batch_size: int, max_length: int) -> tuple[list[float], list[list[float]]]:
    from tselect.evaluate import EvaluateConfig, eval_loss_and_mc

    loss, mc = eval_loss_and_mc(model, tok, rows, rows, EvaluateConfig(batch_size=batch_size, max_length=max_length))
    return [r["loss"] for r in loss["per_example"]], [r["loglikes"] for r in mc["per_example"]]


def loss_only(model, tok, rows, batch_size: int, max_length: int) -> None:
    from tselect.evaluate import query_losses

    query_losses(model, tok, rows, batch_size, max_length)


def unique_sequences(tok, rows, max_length: int) -> list[list[int]]:
    """The unique tokens `new` encodes: each item's context, choices and answer once (a row whose
    answer cannot ride in its pack counts its own tokens as well)."""
    from tselect.data.tokenize import encode
    from tselect.evaluate import PROMPTS
    from tselect.scoring_fast import answer_segment, pack_choices

    seqs = []
    for r, k in zip(*(lambda e: (e.rows, e.kept))(encode(rows, tok, max_length))):
        ex = rows[k]
        prompt, sep = PROMPTS["chat"](tok, ex)
        conts = [list(tok(sep + c, add_special_tokens=False)["input_ids"]) for c in ex.meta["choices"]]
        seg = answer_segment(r.input_ids, r.labels, prompt)
        if seg is None:
            seqs.append(r.input_ids)
        seqs.append(pack_choices(tok, prompt, conts + ([seg] if seg else []), max_length).ids)
    return seqs


def plain_forward(model, seqs: list[list[int]], batch_size: int, pad_id: int) -> None:
    import torch

    order = sorted(range(len(seqs)), key=lambda k: len(seqs[k]))
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            chunk = [seqs[k] for k in order[s : s + batch_size]]
            width = max(map(len, chunk))
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for b, q in enumerate(chunk):
                ids[b, : len(q)], mask[b, : len(q)] = torch.tensor(q), 1
            model(input_ids=ids, attention_mask=mask).logits  # noqa: B018 (the work being timed)


# --- measurement -------------------------------------------------------------------------------

def _timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def measure_target(model, tok, target: str, a: argparse.Namespace) -> dict:
    from tselect.data import load_dataset

    rows = [ex for ex in load_dataset(target).examples if "choices" in ex.meta][: a.n]
    seqs = unique_sequences(tok, rows, a.max_length)
    times: dict[str, list[float]] = {k: [] for k in ("old", "new", "loss", "plain")}
    args = (model, tok, rows, a.batch_size, a.max_length)
    for _ in range(a.repeats):
        t, old = _timed(old_scores, *args)
        times["old"].append(t)
        t, new = _timed(new_scores, *args)
        times["new"].append(t)
        times["loss"].append(_timed(loss_only, *args)[0])
        times["plain"].append(_timed(plain_forward, model, seqs, a.batch_size, tok.pad_token_id)[0])
    best = {k: min(v) for k, v in times.items()}
    n_tokens = sum(map(len, seqs))
    diff_loss = max(abs(x - y) for x, y in zip(old[0], new[0]))
    diff_ll = max(abs(x - y) for xs, ys in zip(old[1], new[1]) for x, y in zip(xs, ys))
    return {"target": target, "n_items": len(rows), "n_choices": sum(len(r.meta["choices"]) for r in rows),
            "unique_tokens": n_tokens, "seconds": times, "best_s": best,
            "tokens_per_s": {k: n_tokens / v for k, v in best.items() if k != "loss"},
            "ratio_new_vs_plain": best["plain"] / best["new"], "speedup_new_vs_old": best["old"] / best["new"],
            "speedup_loss_only_vs_old": best["old"] / best["loss"],
            "max_abs_diff": {"row_loss": diff_loss, "choice_loglike": diff_ll}}


def markdown(doc: dict) -> str:
    lines = [f"# eval bench ({doc['created']})", "",
             f"SmolLM2-135M fp32 CPU, {doc['threads']} thread(s), batch {doc['batch_size']}, "
             f"load average {doc['load_before']} → {doc['load_after']}. Min of {doc['repeats']} interleaved runs.", "",
             "| target | items | unique tokens | old s | new s | loss-only s | plain fwd s | new/plain tok/s | "
             "new vs old | loss-only vs old | max |Δ| loss | max |Δ| loglike |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["targets"]:
        b = r["best_s"]
        lines.append(f"| {r['target']} | {r['n_items']} | {r['unique_tokens']} | {b['old']:.2f} | {b['new']:.2f} | "
                     f"{b['loss']:.2f} | {b['plain']:.2f} | {r['ratio_new_vs_plain']:.2f}× | "
                     f"{r['speedup_new_vs_old']:.2f}× | {r['speedup_loss_only_vs_old']:.2f}× | "
                     f"{r['max_abs_diff']['row_loss']:.1e} | {r['max_abs_diff']['choice_loglike']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    import torch

    from tselect.models import load_model, resolve_model

    a = parse(argv)
    torch.set_num_threads(a.threads)
    model, tok = load_model(resolve_model(None))
    model.eval()
    load_before = [round(x, 2) for x in os.getloadavg()]
    results = [measure_target(model, tok, t, a) for t in TARGETS]
    doc = {"bench": "eval", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "n": a.n,
           "batch_size": a.batch_size, "max_length": a.max_length, "threads": a.threads, "repeats": a.repeats,
           "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
           "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
           "targets": results}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "eval.json").write_text(json.dumps(doc, indent=1) + "\n")
    (a.out / "eval.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0
