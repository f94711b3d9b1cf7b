"""LESS featurization as users run it: the product's checkpoint path timed whole, setup included,
against a plain batched forward+backward of the same batches (the floor); fixed costs apart.

    python -m bench.run less                       # 2 interleaved repetitions of 32 rows + one 64-row run
    python -m bench.run less --reps 1 --rows 16 --rows-large 0

Work (bench/ckpt_workers.py): the embedded SmolLM2-135M in fp32 with ONE real warmup checkpoint
(the product's `train_warmup`, one AdamW step of the cpu recipe: LoRA r=8 on q,k,v,o_proj, 921,600
params; cached under --ckpt-data), the first --rows rows of builtin:pool-small that keep a label
token at --max-length, batches of at most --batch-size rows, --threads torch threads. Each case is
a fresh process timed from spawn to exit, with its own peak RSS (os.wait4):

  floor    the checkpoint's model (LoRA trainable), the stage's length-sorted batches, forward with
           the attention mask, Σ per-example token-mean CE, loss.backward(). Nothing per example.
  tselect  what `tselect featurize --rep less` runs per warmup checkpoint: builtin:pool-small
           loaded and encoded, `less._Checkpoint` (base + adapter + moments by name),
           `less.checkpoint_rows` (pool rows: LESS Adam direction, SparseJL to --dim) and
           `featurize.write_checkpoint` into a zarr group. Fixed costs, reported apart: data +
           tokenization, model load, SJLT table building (inside the first batch), the write.

Ratios are medians of the interleaved repetitions: whole process (what a user waits for) and
gradient loop (floor: its batch loop; tselect: `less.gradient_rows`). With --rows-large, one more
tselect run on that many rows gives the peak-RSS growth with pool size (rows are written chunk
by chunk, so RSS should not grow with the pool). Results: bench/results/less.{json,md}. The
comparison with a peer tool's own code is `bench/peers_bench.py` (make bench-peers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bench.ckpt_workers import _load, machine_info, prepare, run_case

HERE = Path(__file__).parent
CASES = ("floor", "tselect")
TARGET = {"tselect_over_floor": 0.9}


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.run less", description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2, help="interleaved repetitions of floor and tselect")
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--rows-large", type=int, default=64, help="one more tselect run for peak RSS vs pool size (0 = none)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dim", type=int, default=8192)
    ap.add_argument("--data", type=Path, default=HERE / "data" / "less-path")
    ap.add_argument("--ckpt-data", type=Path, default=HERE / "data" / "less", help="cached warmup checkpoint")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    return ap.parse_args(argv)


FIXED = ("data_seconds", "model_load_seconds", "sjlt_tables_seconds", "write_seconds")


def summarize(results: list[dict], rows: int) -> dict:
    """Medians at `rows`, ratios of medians, tselect's fixed costs and its RSS growth with pool size."""
    def med(case: str, key: str):
        v = [r[key] for r in results if r["case"] == case and r["examples"] == rows and r.get(key) is not None]
        return round(statistics.median(v), 4) if v else None

    m = {c: {k: med(c, k) for k in ("ex_per_s", "loop_ex_per_s", "process_seconds", "loop_seconds", "peak_rss_mb")}
         for c in CASES}
    ratios = {}
    for key, label in (("ex_per_s", "tselect_over_floor"), ("loop_ex_per_s", "tselect_over_floor_loop")):
        if m["tselect"][key] and m["floor"][key]:
            ratios[label] = round(m["tselect"][key] / m["floor"][key], 3)
    fixed = {k.removesuffix("_seconds"): med("tselect", k) for k in FIXED}
    large = [r for r in results if r["case"] == "tselect" and r["examples"] != rows]
    if large and m["tselect"]["peak_rss_mb"]:
        ratios["rss_growth_mb"] = round(large[-1]["peak_rss_mb"] - m["tselect"]["peak_rss_mb"], 1)
    met = {"tselect_over_floor": ratios["tselect_over_floor"] >= TARGET["tselect_over_floor"]} \
        if "tselect_over_floor" in ratios else {}
    return {"medians": m, "ratios": ratios, "tselect_fixed_seconds": fixed, "targets": TARGET, "targets_met": met}


def markdown(doc: dict) -> str:
    s, sm, lr = doc["sizes"], doc["summary"], doc["load_avg_run"]
    m, rt = sm["medians"], sm["ratios"]
    lines = [f"SmolLM2-135M fp32, one warmup checkpoint (LoRA r=8 on q,k,v,o, 921,600 params); {s['rows']} rows of "
             f"builtin:pool-small ({s['tokens']} tokens, longest {s['longest']}), batches of ≤ {s['batch_size']}, "
             f"dim {s['dim']}, {s['threads']} threads, {doc['machine']['cores']} cores, torch {doc['machine']['torch']}. "
             f"{s['reps']} interleaved repetitions; load average (1/5/15 min) start {lr['start']}, end {lr['end']}.", "",
             "| case | ex/s whole process | ex/s gradient loop | process s | loop s | peak RSS MB |",
             "|---|---:|---:|---:|---:|---:|"]
    for c in CASES:
        if m[c]["ex_per_s"] is not None:
            lines.append(f"| {c} (median) | {m[c]['ex_per_s']} | {m[c]['loop_ex_per_s']} | {m[c]['process_seconds']} | "
                         f"{m[c]['loop_seconds']} | {m[c]['peak_rss_mb']:.0f} |")
    lines += ["", "| rep | case | rows | process s | loop s | peak RSS MB | load 1m before→after | fixed costs s |",
              "|---:|---|---:|---:|---:|---:|---|---|"]
    for r in doc["cases"]:
        fixed = ", ".join(f"{k.removesuffix('_seconds')} {r[k]}" for k in ("setup_seconds", *FIXED) if k in r)
        lines.append(f"| {r['rep']} | {r['case']} | {r['examples']} | {r['process_seconds']} | {r['loop_seconds']} | "
                     f"{r['peak_rss_mb']:.0f} | {r['load_avg']['before'][0]}→{r['load_avg']['after'][0]} | {fixed} |")
    fx = ", ".join(f"{k} {v} s" for k, v in sm["tselect_fixed_seconds"].items() if v is not None)
    lines += ["", f"tselect's fixed costs (medians): {fx}. The floor's setup (model + checkpoint load) is in its "
              "process time too; its loop is the batches alone.",
              "Ratios (medians): " + ("; ".join(f"{k} = {v}" for k, v in rt.items()) or "–"),
              "Target: tselect ≥ 0.9× the floor (ex/s whole process). Met: "
              + (", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in sm["targets_met"].items()) or "–"), ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    a = parse(argv)
    load_run = {"start": _load()}
    t_run = time.perf_counter()
    base = a.data
    inputs = prepare(base / f"rows-{a.rows}", a.rows, a.max_length, a.threads, a.ckpt_data)
    results = []
    plan = [(c, rep) for rep in range(a.reps) for c in (CASES if rep % 2 == 0 else CASES[::-1])]
    for c, rep in plan:
        a.data = base / f"rows-{a.rows}"
        results.append(run_case(a, c, rep, inputs))
        r = results[-1]
        print(f"rep {rep} {c}: {r['ex_per_s']} ex/s whole ({r['process_seconds']} s), loop {r['loop_seconds']} s, "
              f"peak {r['peak_rss_mb']:.0f} MB, load {r['load_avg']['before'][0]}→{r['load_avg']['after'][0]}",
              file=sys.stderr, flush=True)
    if a.rows_large:
        a.data = base / f"rows-{a.rows_large}"
        big = prepare(a.data, a.rows_large, a.max_length, a.threads, a.ckpt_data)
        results.append(run_case(a, "tselect", a.reps, big))
    load_run.update(end=_load(), wall_seconds=round(time.perf_counter() - t_run, 1))
    sizes = {k: getattr(a, k) for k in ("reps", "rows", "rows_large", "batch_size", "max_length", "threads", "dim")}
    sizes.update({k: inputs[k] for k in ("tokens", "longest", "label_tokens")})
    doc = {"machine": machine_info(), "sizes": sizes, "summary": summarize(results, a.rows),
           "command": "python -m bench.run less " + " ".join(argv), "load_avg_run": load_run,
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cases": results}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "less.json").write_text(json.dumps(doc, indent=1) + "\n")
    (a.out / "less.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
