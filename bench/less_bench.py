"""LESS featurization: tselect's batched, projected per-example LoRA gradients against the plain
batched forward+backward floor and the reference LESS loop, plus the peak RSS of the real
`tselect featurize --rep less` at two pool sizes.

    python -m bench.run less                       # defaults: ~10-15 min on 2 contended cores
    python -m bench.run less --n 32 --b-examples 8 --dim 8192 --dim-small 1024

Model: the embedded SmolLM2-135M (fp32, CPU) wrapped with a fresh LoRA exactly as the warmup
does (`wrap_lora`, preset cpu: r=8 on q,k,v,o_proj = 921,600 parameters). lora_B gets small
seeded values (it is zero-initialized) and the Adam moments are seeded synthetic tensors keyed
by parameter name: costs do not depend on the values. Examples: a seeded sample of
`builtin:pool`, encoded with `encode_example` at max_length 128 (rows without label tokens are
dropped), batched by length as `less.gradient_rows` does. Cases, each in its own subprocess with
torch.set_num_threads(--threads), one untimed warm-up batch first:

  A         plain forward + loss.backward() at batch 16, nothing per example: the floor.
  B@d       the LESS reference, written here (not product code): batch size 1 in train mode
            (LoRA dropout on, as LESS), loss.backward(), the LoRA .grad concatenated to [P],
            Adam direction on the flat vector, and every `--b-examples` gradients one dense
            Rademacher projection P -> d in fp32, generated block by block (128 output columns
            at a time, each block re-drawn from a seeded torch.Generator with bernoulli_, as
            TRAK's BasicProjector does) and accumulated. Only --b-examples rows are measured
            (every k-th of the length-sorted sample, so their mean length matches the others'),
            and the time of the projection's matrix generation is reported separately so B can
            also be stated at LESS's own projection interval of 16 examples (generation
            amortized over 16): `B@d (interval 16, extrapolated)` — the number the C/B ratio
            uses, because it is the kinder one to B.
  C-sjlt    `grads.projected_grads` with SparseJL(d) and the LESS Adam transform, batch 16;
            SparseJL's hash tables are built once per process, timed apart as setup.
  C-rad     the same with DenseRademacher(d), on `--n-rad` examples (it regenerates its matrix
            for every batch beyond a 256 MB cache, so it is slow at d=8192 on CPU).
  rss-N     the real CLI, `python -m tselect featurize --rep less` on an N-row slice of the
            same sample (query: 8 rows of builtin:sciq) with --max-length 128 --batch-size 16
            --param dim=d, in a fresh child; peak RSS from wait4. The warmup artifact (preset
            cpu, 4 checkpoints) is trained once by `tselect warmup` in a separate child and
            cached under --data, so it never counts towards this RSS or time.

A and C-sjlt run twice (interleaved with the others) because the machine is shared; every case
records os.getloadavg() before and after. Results: bench/results/less.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
DEFAULT_CASES = ("A", "C-sjlt", "B@small", "B@dim", "C-rad", "A", "C-sjlt", "rss@small", "rss@large")
TARGETS = {"C_over_A": 0.7, "C_over_B": 5.0, "at_dim": 8192, "rss": "does not grow with pool size"}
SEED = 0
QUERY_ROWS = 8


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.run less", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="examples measured by A and C-sjlt")
    ap.add_argument("--n-rad", type=int, default=16, help="examples measured by C-rad (DenseRademacher)")
    ap.add_argument("--b-examples", type=int, default=8, help="examples measured by B (also its projection interval)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--dim", type=int, default=8192, help="projection dim of the headline cases")
    ap.add_argument("--dim-small", type=int, default=1024, help="the extra, cheaper dim B is also stated at")
    ap.add_argument("--rss-pools", default="32,128", help="two pool sizes for the CLI peak-RSS cases")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default=",".join(DEFAULT_CASES),
                    help="comma list from A, B@small, B@dim, C-sjlt, C-rad, rss@small, rss@large (repeats allowed)")
    ap.add_argument("--data", type=Path, default=HERE / "data" / "less", help="cached pool files and warmup store")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: measure one case, print JSON
    ap.add_argument("--case-dim", type=int, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# ---- shared inputs ---------------------------------------------------------------------

def sample_pool(n: int) -> list:
    """The first n examples of a seeded permutation of builtin:pool (nested across n)."""
    import numpy as np

    from tselect.data import load_dataset

    pool = load_dataset("builtin:pool")
    order = np.random.default_rng([SEED, 11]).permutation(len(pool.examples))
    return [pool.examples[i] for i in order[:n]]


def encoded_sample(tok, n: int, max_length: int) -> list:
    """n EncodedRows with at least one label token, from the seeded pool sample."""
    from tselect.data.tokenize import IGNORE, encode_example

    rows, k = [], n
    while len(rows) < n:  # top up past rows that lost every label token to truncation
        rows = [r for r in (encode_example(ex, tok, max_length) for ex in sample_pool(k))
                if any(t != IGNORE for t in r.labels)][:n]
        k += n
    return rows


def lora_model(threads: int):
    """(SmolLM2 + fresh LoRA as `wrap_lora` makes it, tokenizer, exp_avg, exp_avg_sq by name)."""
    import torch

    from tselect.featurize.grads import lora_param_names
    from tselect.featurize.warmup import WARMUP_PRESETS, wrap_lora
    from tselect.models import load_model, resolve_model

    torch.set_num_threads(threads)
    base, tok = load_model(resolve_model(None))
    model = wrap_lora(base, WARMUP_PRESETS["cpu"])
    gen = torch.Generator().manual_seed(SEED)
    names = lora_param_names(model)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in names:
            if ".lora_B." in name:  # zero-initialized: give it values so every gradient is non-trivial
                params[name].normal_(0.0, 0.01, generator=gen)
    exp_avg = {n: torch.randn(params[n].shape, generator=gen) * 1e-4 for n in names}
    exp_avg_sq = {n: torch.randn(params[n].shape, generator=gen).square() * 1e-7 for n in names}
    return model, tok, exp_avg, exp_avg_sq


def make_batches(rows, batch_size: int, pad_id: int) -> list:
    """Length-sorted right-padded batches as `less.gradient_rows` builds them."""
    from tselect.data.tokenize import batches, length_sorted

    return [{"input_ids": ids, "attention_mask": mask, "labels": labels}
            for _, ids, mask, labels in batches(rows, batch_size, pad_id, order=length_sorted(rows))]


# ---- one case, in a fresh process ------------------------------------------------------

def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def measure(a: argparse.Namespace) -> dict:
    import torch

    case, dim = a.worker, a.case_dim
    model, tok, exp_avg, exp_avg_sq = lora_model(a.threads)
    n = {"A": a.n, "C-sjlt": a.n, "C-rad": a.n_rad, "B": a.b_examples}[case]
    sample = encoded_sample(tok, a.n, a.max_length)
    if case == "B":  # every k-th of the length-sorted sample: same mean length as A and C
        from tselect.data.tokenize import length_sorted

        srt = length_sorted(sample)
        step = len(srt) / n
        rows = [sample[srt[int(i * step + step / 2)]] for i in range(n)]
    else:
        rows = sample[:n] if n < len(sample) else sample
    batches = make_batches(rows, a.batch_size, tok.pad_token_id)
    # untimed warm-up: one plain forward+backward of the first batch (first-call overheads)
    _floor(model, batches[:1])
    extra: dict = {}
    if case == "C-sjlt":
        from tselect.featurize.project import SparseJL

        projector = SparseJL(dim, seed=SEED)
    elif case == "C-rad":
        from tselect.featurize.project import DenseRademacher

        projector = DenseRademacher(dim, seed=SEED)
    if case.startswith("C-"):
        from tselect.featurize.adam import adam_transform
        from tselect.featurize.grads import projected_grads

        transform = adam_transform(exp_avg, exp_avg_sq)
        if case == "C-sjlt":  # hash tables: built once per process, reused for every batch
            one = {k: v[:1] for k, v in batches[0].items()}
            t0 = time.perf_counter()
            projected_grads(model, one, projector, transform)
            extra["setup_seconds"] = round(time.perf_counter() - t0, 3)
    rss_before, load_before = _rss_mb(), _load()
    t0 = time.perf_counter()
    if case == "A":
        _floor(model, batches)
    elif case.startswith("C-"):
        outs = [projected_grads(model, b, projector, transform) for b in batches]
        feats = torch.cat(outs)
        extra["feature_rows"] = list(feats.shape)
        extra["finite"] = bool(torch.isfinite(feats).all())
    else:
        extra.update(_reference_less(model, rows, exp_avg, exp_avg_sq, dim))
    seconds = time.perf_counter() - t0
    tokens = sum(len(r.input_ids) for r in rows)
    return {"case": case if case in ("A",) else f"{case}@{dim}", "kind": case, "dim": dim if case != "A" else None,
            "examples": len(rows), "tokens": tokens, "batch_size": 1 if case == "B" else a.batch_size,
            "seconds": round(seconds, 3), "examples_per_s": round(len(rows) / seconds, 3),
            "tokens_per_s": round(tokens / seconds, 1), "threads": torch.get_num_threads(),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_before_mb": round(rss_before, 1), "load_avg": {"before": load_before, "after": _load()}, **extra}


def _floor(model, batches) -> None:
    """Plain batched forward + loss.backward() of the LoRA model (eval mode, as C runs)."""
    model.eval()
    for b in batches:
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"], use_cache=False)
        out.loss.backward()
        model.zero_grad(set_to_none=True)


def _reference_less(model, rows, exp_avg, exp_avg_sq, dim: int, block: int = 128) -> dict:
    """LESS's loop: bs=1 backward, flat LoRA grad, Adam, block-generated dense Rademacher."""
    import torch

    from tselect.featurize.adam import BETAS, EPS

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    m = torch.cat([exp_avg[n].reshape(-1) for n, _ in named])  # [P], in .grad concatenation order
    v = torch.cat([exp_avg_sq[n].reshape(-1) for n, _ in named])
    n_params = m.numel()
    model.train()  # LESS collects gradients in train mode (LoRA dropout on)
    grads, t_grad = [], 0.0
    t0 = time.perf_counter()
    for r in rows:
        ids = torch.tensor([r.input_ids])
        labels = torch.tensor([r.labels])
        model(input_ids=ids, labels=labels, use_cache=False).loss.backward()
        g = torch.cat([p.grad.reshape(-1) for _, p in named])  # [P]
        model.zero_grad(set_to_none=True)
        m1 = BETAS[0] * m + (1 - BETAS[0]) * g
        v1 = BETAS[1] * v + (1 - BETAS[1]) * g * g
        grads.append(m1 / torch.sqrt(v1 + EPS))
    t_grad = time.perf_counter() - t0
    # One projection of the whole interval, TRAK BasicProjector style: for each block of
    # output columns, re-seed a generator, draw a [P, block] ±1 matrix, matmul, keep the slice.
    flat = torch.stack(grads)  # [G, P] fp32
    out = torch.zeros(flat.shape[0], dim)
    mat = torch.empty(n_params, block)
    t_gen = t_mm = 0.0
    for k in range(-(-dim // block)):
        t1 = time.perf_counter()
        mat.bernoulli_(0.5, generator=torch.Generator().manual_seed(SEED * 1_000_003 + k))
        mat.mul_(2.0).sub_(1.0)
        t2 = time.perf_counter()
        st, ed = k * block, min((k + 1) * block, dim)
        out[:, st:ed] = flat @ mat[:, : ed - st]
        t_mm += time.perf_counter() - t2
        t_gen += t2 - t1
    g_count = flat.shape[0]
    per_ex16 = t_grad / g_count + t_gen / 16 + t_mm / g_count
    return {"grad_seconds": round(t_grad, 3), "proj_generate_seconds": round(t_gen, 3),
            "proj_matmul_seconds": round(t_mm, 3), "project_interval": g_count, "n_params": n_params,
            "block": block, "interval16_seconds_per_example": round(per_ex16, 3),
            "interval16_examples_per_s": round(1 / per_ex16, 4), "finite": bool(torch.isfinite(out).all())}


# ---- the real CLI, peak RSS per pool size ----------------------------------------------

def _write_jsonl(path: Path, examples) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps({"messages": list(ex.messages)}) + "\n" for ex in examples))
    os.replace(tmp, path)


def prepare_cli(a: argparse.Namespace, sizes: list[int]) -> dict:
    """Pool/query JSONL files and their warmup artifacts (trained once, cached under --data)."""
    from tselect.data import load_dataset

    a.data.mkdir(parents=True, exist_ok=True)
    store = a.data / "store"
    query = a.data / f"query-sciq-{QUERY_ROWS}.jsonl"
    if not query.exists():
        _write_jsonl(query, load_dataset("builtin:sciq").examples[:QUERY_ROWS])
    out = {"store": store, "query": query, "pools": {}, "warmups": {}}
    for n in sizes:
        pool = a.data / f"pool-{n}-s{SEED}.jsonl"
        if not pool.exists():
            _write_jsonl(pool, sample_pool(n))
        out["pools"][n] = pool
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "tselect", "warmup", "--pool", str(pool), "--preset", "cpu",
                               "--store", str(store)], capture_output=True, text=True, cwd=ROOT, env=_env(a))
        if proc.returncode != 0:
            raise SystemExit(f"error: warmup for pool {n} failed:\n{proc.stderr[-3000:]}")
        out["warmups"][n] = {"id": proc.stdout.strip().splitlines()[-1], "seconds": round(time.perf_counter() - t0, 1)}
        print(f"warmup pool {n}: {out['warmups'][n]['id']} ({out['warmups'][n]['seconds']}s, "
              f"cached after the first run)", file=sys.stderr, flush=True)
    return out


def _env(a: argparse.Namespace) -> dict:
    return {**os.environ, "TSELECT_THREADS": str(a.threads), "OMP_NUM_THREADS": str(a.threads),
            "TSELECT_PROGRESS": "0"}


def run_cli(a: argparse.Namespace, cli: dict, n: int) -> dict:
    """`tselect featurize --rep less` in a fresh child over an n-row pool; peak RSS via wait4."""
    store = cli["store"]
    shutil.rmtree(store / "featurize", ignore_errors=True)  # the features themselves are always recomputed
    cmd = [sys.executable, "-m", "tselect", "featurize", "--rep", "less", "--pool", str(cli["pools"][n]),
           "--query", str(cli["query"]), "--max-length", str(a.max_length), "--batch-size", str(a.batch_size),
           "--param", f"dim={a.dim}", "--store", str(store)]
    log = a.data / f"featurize-{n}.log"
    load_before = _load()
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        child = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=_env(a))
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if child.returncode != 0:
        raise SystemExit(f"error: featurize on pool {n} failed:\n{log.read_text()[-3000:]}")
    feats = _read_features(store)
    rows = feats["n_checkpoints"] * (n + QUERY_ROWS)
    return {"case": f"rss-{n}", "kind": "rss", "dim": a.dim, "pool": n, "query": QUERY_ROWS, "command": cmd[1:],
            "seconds": round(seconds, 1), "gradient_rows": rows, "rows_per_s_incl_startup": round(rows / seconds, 3),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "load_avg": {"before": load_before, "after": _load()},
            "warmup": cli["warmups"][n], **feats}


def _read_features(store: Path) -> dict:
    done = [p for p in (store / "featurize").iterdir() if p.is_dir() and not p.name.endswith(".part")]
    manifest = json.loads((done[0] / "manifest.json").read_text())
    attrs = json.loads((done[0] / "features.zarr" / "zarr.json").read_text()).get("attributes", {})
    return {"artifact": done[0].name, "n_checkpoints": len(attrs.get("checkpoints", [])),
            "checkpoints": attrs.get("checkpoints"), "record": manifest.get("record", {})}


# ---- orchestration and report ----------------------------------------------------------

def run_case(a: argparse.Namespace, kind: str, dim: int) -> dict:
    cmd = [sys.executable, "-m", "bench.less_bench", "--worker", kind, "--case-dim", str(dim),
           "--n", str(a.n), "--n-rad", str(a.n_rad), "--b-examples", str(a.b_examples),
           "--batch-size", str(a.batch_size), "--max-length", str(a.max_length), "--threads", str(a.threads)]
    load_spawn = _load()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(a))
    if proc.returncode != 0:
        raise SystemExit(f"error: case {kind}@{dim} failed:\n{proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r["load_avg"]["at_spawn"] = load_spawn
    return r


def machine() -> dict:
    from importlib.metadata import version

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "torch": version("torch"), "transformers": version("transformers"), "peft": version("peft"),
            "mem_total_gb": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9, 1)}


def summarize(results: list[dict], a: argparse.Namespace, load_run: dict) -> dict:
    import statistics

    def rates(case: str, key: str = "examples_per_s") -> list[float]:
        return [r[key] for r in results if r["case"] == case]

    a_rate = rates("A")
    c_rate = rates(f"C-sjlt@{a.dim}")
    b_meas = rates(f"B@{a.dim}")
    b_16 = rates(f"B@{a.dim}", "interval16_examples_per_s")
    ratios: dict = {}
    if a_rate and c_rate:
        ratios["C_over_A_runs"] = [round(c / x, 3) for c, x in zip(c_rate, a_rate)]
        ratios["C_over_A_median"] = round(statistics.median(c_rate) / statistics.median(a_rate), 3)
    if c_rate and b_16:
        ratios["C_over_B_interval16"] = round(statistics.median(c_rate) / b_16[0], 1)
        ratios["C_over_B_measured"] = round(statistics.median(c_rate) / b_meas[0], 1)
    small_b = rates(f"B@{a.dim_small}", "interval16_examples_per_s")
    if c_rate and small_b:
        ratios[f"C@{a.dim}_over_B@{a.dim_small}_interval16"] = round(statistics.median(c_rate) / small_b[0], 1)
    rss = [r for r in results if r["kind"] == "rss"]
    if len(rss) >= 2:
        ratios["rss_growth_mb"] = round(rss[-1]["peak_rss_mb"] - rss[0]["peak_rss_mb"], 1)
    met = {}
    if "C_over_A_median" in ratios:
        met["C_over_A"] = ratios["C_over_A_median"] >= TARGETS["C_over_A"]
    if "C_over_B_interval16" in ratios:
        met["C_over_B"] = ratios["C_over_B_interval16"] >= TARGETS["C_over_B"]
    sizes = {"n": a.n, "n_rad": a.n_rad, "b_examples": a.b_examples, "batch_size": a.batch_size,
             "max_length": a.max_length, "dim": a.dim, "dim_small": a.dim_small, "threads": a.threads,
             "lora": "r=8 alpha=32 on q,k,v,o_proj (921,600 params), wrap_lora preset cpu",
             "model": "builtin:smollm2 (SmolLM2-135M, fp32, CPU)"}
    return {"machine": machine(), "sizes": sizes, "targets": TARGETS, "ratios": ratios, "targets_met": met,
            "command": "python -m bench.run less " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["less"] else []),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_avg_run": load_run,
            "cases": results}


def _fmt(x, nd=2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def markdown(doc: dict) -> str:
    s, m, rt = doc["sizes"], doc["machine"], doc["ratios"]
    a_med = _median([r["examples_per_s"] for r in doc["cases"] if r["case"] == "A"])
    lines = [f"SmolLM2-135M fp32 + LoRA {s['lora'].split(' (')[0]} (921,600 params), builtin:pool rows at "
             f"max_length {s['max_length']}, {s['threads']} torch threads; {m['cores']} cores ({m['cpu']}), "
             f"torch {m['torch']}. Load avg (1/5/15 min) at start {doc['load_avg_run']['start']}, "
             f"end {doc['load_avg_run']['end']}.",
             "", "| case | batch | examples | tok/ex | seconds | ex/s | tok/s | × A | peak RSS MB | load 1m (before→after) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in doc["cases"]:
        if r["kind"] == "rss":
            continue
        xa = r["examples_per_s"] / a_med if a_med else None
        lines.append(f"| {r['case']} | {r['batch_size']} | {r['examples']} | {r['tokens'] / r['examples']:.0f} | "
                     f"{r['seconds']:.1f} | {r['examples_per_s']:.3f} | {r['tokens_per_s']:.0f} | {_fmt(xa, 3)} | "
                     f"{r['peak_rss_mb']:.0f} | {r['load_avg']['before'][0]}→{r['load_avg']['after'][0]} |")
        if r["kind"] == "B":
            e16 = r["interval16_examples_per_s"]
            lines.append(f"| {r['case']} (interval 16, extrapolated) | 1 | – | – | "
                         f"{r['interval16_seconds_per_example']:.2f}/ex | {e16:.4f} | "
                         f"{e16 * r['tokens'] / r['examples']:.0f} | {_fmt(e16 / a_med if a_med else None, 4)} | – | – |")
    lines += ["", "B's time split (measured rows): " + "; ".join(
        f"{r['case']}: grads {r['grad_seconds']:.1f}s, matrix generation {r['proj_generate_seconds']:.1f}s, "
        f"matmul {r['proj_matmul_seconds']:.1f}s for {r['project_interval']} examples"
        for r in doc["cases"] if r["kind"] == "B")]
    rss = [r for r in doc["cases"] if r["kind"] == "rss"]
    if rss:
        lines += ["", "`tselect featurize --rep less` (real CLI, fresh child, warmup cached; "
                  f"dim {s['dim']}, {rss[0]['n_checkpoints']} checkpoints, {rss[0]['query']} query rows):", "",
                  "| pool rows | gradient rows | seconds (incl. model loads) | rows/s | peak RSS MB | load 1m (before→after) |",
                  "|---:|---:|---:|---:|---:|---|"]
        for r in rss:
            lines.append(f"| {r['pool']} | {r['gradient_rows']} | {r['seconds']:.1f} | {r['rows_per_s_incl_startup']:.2f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['load_avg']['before'][0]}→{r['load_avg']['after'][0]} |")
    lines += ["", "Ratios: " + ", ".join(f"{k} = {v}" for k, v in rt.items()),
              "Targets (dim {at_dim}): C ≥ {C_over_A}×A, C ≥ {C_over_B}×B; met: ".format(**doc["targets"])
              + (", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in doc["targets_met"].items()) or "–")]
    return "\n".join(lines) + "\n"


def _median(xs: list[float]):
    import statistics

    return statistics.median(xs) if xs else None


def main(argv: list[str]) -> int:
    a = parse(argv)
    if a.worker:
        print(json.dumps(measure(a)))
        return 0
    known = {"A", "B@small", "B@dim", "C-sjlt", "C-rad", "rss@small", "rss@large"}
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in known]
    if bad:
        raise SystemExit(f"error: unknown case(s) {bad}; choose from {sorted(known)}")
    sizes = [int(x) for x in a.rss_pools.split(",")]
    if len(sizes) != 2:
        raise SystemExit("error: --rss-pools takes two sizes, e.g. 32,128")
    load_run = {"start": _load()}
    t_run = time.perf_counter()
    cli = prepare_cli(a, sizes) if any(c.startswith("rss") for c in cases) else None
    results = []
    for c in cases:
        if c.startswith("rss"):
            r = run_cli(a, cli, sizes[0] if c == "rss@small" else sizes[1])
            print(f"{r['case']}: {r['seconds']:.0f}s, peak {r['peak_rss_mb']:.0f} MB, load {r['load_avg']['after'][0]}",
                  file=sys.stderr, flush=True)
        else:
            kind, dim = (c.split("@")[0], a.dim_small if c.endswith("@small") else a.dim)
            r = run_case(a, kind, dim)
            print(f"{r['case']}: {r['examples_per_s']:.3f} ex/s ({r['seconds']:.1f}s), peak {r['peak_rss_mb']:.0f} MB, "
                  f"load {r['load_avg']['before'][0]}→{r['load_avg']['after'][0]}", file=sys.stderr, flush=True)
        results.append(r)
    load_run["end"] = _load()
    load_run["wall_seconds"] = round(time.perf_counter() - t_run, 1)
    doc = summarize(results, a, load_run)
    if cli:
        doc["cli"] = {"store": str(cli["store"]), "warmups": cli["warmups"]}
    table = markdown(doc)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "less.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    (a.out / "less.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
