"""Peer benchmark: tselect's LESS featurization against bergson 2.5.1's `build` on the same work,
with a plain batched forward+backward of the same batches as the floor.

    make bench-peers                       # makes .venv-peers (bergson --no-deps + what it imports), runs this
    python -m bench.run peers --reps 3     # skipped with one line when the peer venv is missing

The same work for every case: the embedded SmolLM2-135M in fp32; ONE warmup checkpoint written by
the product's `warmup.train_warmup` (one AdamW step of the cpu recipe: LoRA r=8 on q,k,v,o_proj,
240 factor modules, 921,600 params; made and cached by `bench.ckpt_workers.ensure_checkpoint`),
loaded by all three; the first --rows rows of builtin:pool-small that keep a label token at
--max-length, encoded by `tokenize.encode_example` (identical token ids and label masks: bergson
reads them from rows.jsonl, tselect re-encodes them and the worker checks they are equal);
batches of at most --batch-size rows; --threads torch threads. Each case is its own process,
timed by this parent from spawn to exit (ex/s whole process), with its peak RSS from os.wait4
(that child only); the child reports its gradient-loop time. Cases, interleaved --reps times
(order rotated each repetition), with load averages before and after each:

  floor    the checkpoint's model (LoRA made trainable), tselect's length-sorted batches,
           forward with the attention mask, Σ per-example token-mean CE, loss.backward().
  bergson  `bergson build` (its CLI, in the peer venv): --model <adapter dir> --tokenizer <model>
           --dataset rows.jsonl --optimizer_state <optimizer.pt: exp_avg_sq by parameter name>
           --loss_reduction mean --projection_dim 6 --token_batch_size 2048 --max_batch_size 16
           --precision fp32. Loop: its collect_gradients call, timed by a wrapper around it.
  tselect  what `tselect featurize --rep less` runs per warmup checkpoint: builtin:pool-small
           loaded and encoded, `less._Checkpoint` (base + adapter + moments by name),
           `less.checkpoint_rows`, `featurize.write_checkpoint` into a zarr group. Loop: its
           `less.gradient_rows` call, timed by a wrapper; the fixed costs (data + tokenization,
           model load, SJLT table building inside the loop, the write) are reported apart.

What differs in the work: bergson divides each gradient by √v + ε (Adam second moment, the
checkpoint's v) and projects each module two-sided with Rademacher matrices (6×6 per module =
8,640 dims), storing fp32; tselect uses the LESS Adam direction m'/√(v'+ε) (both moments,
updated with the example's own gradient), one SparseJL over all factors to 8,192 dims, and
stores L2-normalized fp16 rows. Results: bench/results/peers.{json,md}. The workers are in
bench/ckpt_workers.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.ckpt_workers import _load, machine_info, prepare, run_case

HERE = Path(__file__).parent
ROOT = HERE.parent
CASES = ("floor", "bergson", "tselect")
TARGETS = {"tselect_over_bergson": 1.1, "tselect_over_floor": 0.9, "rss": "tselect <= bergson"}


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.run peers", description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions of the three cases")
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dim", type=int, default=8192, help="tselect's projection dim")
    ap.add_argument("--bergson-proj", type=int, default=6, help="bergson --projection_dim (p×p per module)")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--venv", type=Path, default=ROOT / ".venv-peers", help="the peer venv (make bench-peers)")
    ap.add_argument("--data", type=Path, default=HERE / "data" / "peers")
    ap.add_argument("--ckpt-data", type=Path, default=HERE / "data" / "less", help="cached warmup checkpoint")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    return ap.parse_args(argv)


def peer_python(a: argparse.Namespace) -> Path:
    return Path(a.venv) / "bin" / "python"


def median_ratio(num: list[float], den: list[float]) -> float | None:
    if not num or not den:
        return None
    return round(statistics.median(num) / statistics.median(den), 3)


def summarize(results: list[dict]) -> dict:
    """Medians per case and the ratios the issue asks for (medians of interleaved repetitions)."""
    col = {c: {k: [r[k] for r in results if r["case"] == c and r.get(k) is not None]
               for k in ("ex_per_s", "loop_ex_per_s", "peak_rss_mb")} for c in CASES}
    med = {c: {k: (round(statistics.median(v), 4) if v else None) for k, v in d.items()} for c, d in col.items()}
    ratios = {}
    for a, b in (("tselect", "bergson"), ("tselect", "floor"), ("bergson", "floor")):
        ratios[f"{a}_over_{b}"] = median_ratio(col[a]["ex_per_s"], col[b]["ex_per_s"])
        ratios[f"{a}_over_{b}_loop"] = median_ratio(col[a]["loop_ex_per_s"], col[b]["loop_ex_per_s"])
    met = {}
    if ratios["tselect_over_bergson"] is not None:
        met["tselect_over_bergson"] = ratios["tselect_over_bergson"] >= TARGETS["tselect_over_bergson"]
    if ratios["tselect_over_floor"] is not None:
        met["tselect_over_floor"] = ratios["tselect_over_floor"] >= TARGETS["tselect_over_floor"]
    if med["tselect"]["peak_rss_mb"] and med["bergson"]["peak_rss_mb"]:
        met["rss"] = med["tselect"]["peak_rss_mb"] <= med["bergson"]["peak_rss_mb"]
    return {"medians": med, "ratios": ratios, "targets": TARGETS, "targets_met": met}


def rotated(cases: list[str], rep: int) -> list[str]:
    k = rep % len(cases)
    return cases[k:] + cases[:k]




def machine(a: argparse.Namespace) -> dict:
    peer = subprocess.run([str(peer_python(a)), "-c", "from importlib.metadata import version as v; "
                           "print(v('bergson'), v('torch'), v('transformers'), v('peft'))"],
                          capture_output=True, text=True).stdout.split()
    return {**machine_info(), "peer_venv": dict(zip(("bergson", "torch", "transformers", "peft"), peer))}


def markdown(doc: dict) -> str:
    s, m, sm = doc["sizes"], doc["machine"], doc["summary"]
    med, rt = sm["medians"], sm["ratios"]
    lr = doc["load_avg_run"]
    lines = [f"SmolLM2-135M fp32, one warmup checkpoint (LoRA r=8 on q,k,v,o: 240 factor modules, 921,600 params) "
             f"loaded by every case; {s['rows']} rows of builtin:pool-small ({s['tokens']} tokens, longest "
             f"{s['longest']}, identical token ids and label masks), batches of ≤ {s['batch_size']}, "
             f"{s['threads']} threads; {m['cores']} cores ({m['cpu']}); torch {m['torch']}, bergson "
             f"{m['peer_venv'].get('bergson', '?')} (peer venv torch {m['peer_venv'].get('torch', '?')}). "
             f"{s['reps']} interleaved repetitions; load average (1/5/15 min) start {lr['start']}, end {lr['end']}.", "",
             "| case | ex/s whole process (median) | ex/s gradient loop (median) | × floor whole / loop | "
             "peak RSS MB (median) |", "|---|---:|---:|---:|---:|"]
    for c in CASES:
        if med[c]["ex_per_s"] is None:
            continue
        xf = "1.0 / 1.0" if c == "floor" else f"{rt.get(f'{c}_over_floor')} / {rt.get(f'{c}_over_floor_loop')}"
        lines.append(f"| {c} | {med[c]['ex_per_s']} | {med[c]['loop_ex_per_s']} | {xf} | {med[c]['peak_rss_mb']:.0f} |")
    lines += ["", "| rep | case | process s | loop s | peak RSS MB | load 1m before→after | fixed costs s |",
              "|---:|---|---:|---:|---:|---|---|"]
    for r in doc["cases"]:
        fixed = ", ".join(f"{k.removesuffix('_seconds')} {r[k]}" for k in
                          ("setup_seconds", "data_seconds", "model_load_seconds", "sjlt_tables_seconds", "write_seconds")
                          if k in r)
        lines.append(f"| {r['rep']} | {r['case']} | {r['process_seconds']} | {r['loop_seconds']} | "
                     f"{r['peak_rss_mb']:.0f} | {r['load_avg']['before'][0]}→{r['load_avg']['after'][0]} | {fixed} |")
    met = sm["targets_met"]
    lines += ["", "Ratios (medians of the interleaved repetitions): "
              + "; ".join(f"{k} = {v}" for k, v in rt.items() if v is not None),
              "Targets: tselect ≥ 1.1× bergson and ≥ 0.9× the floor (ex/s whole process), tselect peak RSS ≤ "
              "bergson's. Met: " + (", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in met.items()) or "–"),
              "", "What differs in the work: " + doc["differences"], ""]
    return "\n".join(lines)


DIFFERENCES = ("floor: forward with the attention mask + backward of Σ per-example token-mean CE into the LoRA "
               "weights' .grad, nothing per example. bergson: per-example gradients of every LoRA factor divided by "
               "√v + ε (Adam second moment only), two-sided Rademacher projection per module (p×p with p = "
               "--bergson-proj: 240 × 36 = 8,640 dims at p = 6), stored fp32, not normalized; its loss takes no "
               "attention mask (right padding, causal). tselect: the LESS Adam direction m'/√(v'+ε) (both moments "
               "updated with the example's gradient), one sparse JL (CountSketch) over all factors to --dim, "
               "L2-normalized rows stored fp16 in zarr; batches length-sorted as the stage makes them.")


def main(argv: list[str]) -> int:
    a = parse(argv)
    if not peer_python(a).exists():
        print(f"skipping peers: no peer venv at {a.venv} (`make bench-peers` creates it and runs this)",
              file=sys.stderr)
        return 0
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    if not cases or any(c not in CASES for c in cases):
        raise SystemExit(f"error: --cases takes a comma list from {', '.join(CASES)}")
    load_run = {"start": _load()}
    t_run = time.perf_counter()
    inputs = prepare(a.data, a.rows, a.max_length, a.threads, a.ckpt_data)
    results = []
    for rep in range(a.reps):
        for c in rotated(cases, rep):
            r = run_case(a, c, rep, inputs, peer_python(a) if c == "bergson" else None)
            results.append(r)
            print(f"rep {rep} {c}: {r['ex_per_s']} ex/s whole ({r['process_seconds']} s), loop {r['loop_seconds']} s, "
                  f"peak {r['peak_rss_mb']:.0f} MB, load {r['load_avg']['before'][0]}→{r['load_avg']['after'][0]}",
                  file=sys.stderr, flush=True)
    load_run.update(end=_load(), wall_seconds=round(time.perf_counter() - t_run, 1))
    sizes = {k: getattr(a, k) for k in ("reps", "rows", "batch_size", "max_length", "threads", "dim", "bergson_proj")}
    sizes.update({k: inputs[k] for k in ("tokens", "longest", "label_tokens")})
    doc = {"machine": machine(a), "sizes": sizes, "summary": summarize(results), "differences": DIFFERENCES,
           "command": "python -m bench.run peers " + " ".join(argv), "load_avg_run": load_run,
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cases": results}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "peers.json").write_text(json.dumps(doc, indent=1) + "\n")
    (a.out / "peers.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
