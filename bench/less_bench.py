"""LESS featurization: tselect's batched, projected per-example LoRA gradients against the plain
batched forward+backward floor and the reference LESS loop, plus peak RSS of the featurize
write path at two pool sizes.

    python -m bench.run less                        # defaults: ~18 min measured on 2 cores at load ~7
    python -m bench.run less --n 32 --b-examples 8 --b-max-blocks 0 --rad-sample 1   # nothing extrapolated (hours)

Model: the embedded SmolLM2-135M (fp32, CPU) with a fresh LoRA made by `training.METHODS["lora"]`,
preset cpu (r=8 on q,k,v,o_proj = 921,600 parameters). lora_B gets small seeded values (it is
zero-initialized) and the Adam moments are seeded synthetic tensors keyed by parameter name;
costs do not depend on the values. Examples: a seeded sample of `builtin:pool`, encoded with
`encode_example` at max_length 128 (rows without label tokens dropped), batched by length as
`less.gradient_rows` does. Every case runs in its own subprocess (peak RSS per case) with
torch.set_num_threads(--threads), after one untimed 2-row warm-up batch. Cases:

  A          plain forward + loss.backward() at batch 16, nothing per example: the floor.
  C-sjlt     `grads.projected_grads` with SparseJL(dim) and the LESS Adam transform, batch 16.
             SparseJL's hash tables are built once per process (timed apart as setup); the
             time inside the hooks is split into per-example gradients (the bmm), Adam and
             projection, the rest being the forward+backward itself.
  C-rad      the same with DenseRademacher(dim), one batch of --n-rad. It regenerates its
             [P, dim] matrix for every batch (beyond a 256 MB cache), which is far too slow to
             run whole on CPU at dim 8192, so only every --rad-sample-th LoRA parameter is
             really projected (the rest get zeros) and the projection time is scaled up by
             coordinates: EXTRAPOLATED, and labelled so.
  B@dim      the LESS reference, written here (not product code): batch size 1 in train mode
             (LoRA dropout on, as LESS), loss.backward(), the LoRA .grad concatenated to [P],
             the Adam direction on the flat vector, then one dense Rademacher projection
             P -> dim of the --b-examples gradients in fp32 (LESS: fp16, slower on CPU),
             generated block by block as TRAK's BasicProjector does (128 output columns at a
             time, each block redrawn with bernoulli_ from a seeded torch.Generator, matmul,
             accumulate). --b-examples rows are measured (every k-th of the length-sorted
             sample, so their mean length matches A's and C's). At most --b-max-blocks blocks
             are generated; the rest of the projection is EXTRAPOLATED per block (blocks are
             identical work). Per-example time is stated twice: with the measured interval
             (generation amortized over --b-examples) and at LESS's own interval of 16
             (amortized over 16) — the latter, kinder to B, is what C/B uses.
  rss@pool   peak RSS and time of one warmup checkpoint through the product's featurize path,
             `less.checkpoint_rows` + `featurize.write_checkpoint` (what `tselect featurize --rep less` runs per warmup
             checkpoint: load base + adapter + moments by name, query rows plain, pool rows
             Adam, `write_unit_rows` into a zarr group) on an N-row slice of the same sample plus
             4 builtin:sciq query rows, in a fresh process. The checkpoint is a real one written
             by `warmup.save_checkpoint` after one AdamW step (cached under --data): a full
             warmup (4 checkpoints, trained) costs more than this whole benchmark on a busy CPU.

A and C-sjlt run twice, interleaved with the others, because the machine is shared; every case
records os.getloadavg() before and after. Results: bench/results/less.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
DEFAULT_CASES = ("A", "C-sjlt", "B@small", "B@dim", "C-rad", "A", "C-sjlt", "rss@small", "rss@large")
KNOWN = {"A", "C-sjlt", "C-rad", "B@small", "B@dim", "rss@small", "rss@large"}
TARGETS = {"C_over_A": 0.7, "C_over_B": 5.0, "at_dim": 8192, "rss": "flat in pool size"}
SEED = 0
QUERY_ROWS = 4


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.run less", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="examples measured by A and C-sjlt")
    ap.add_argument("--n-rad", type=int, default=16, help="examples (one batch) measured by C-rad")
    ap.add_argument("--rad-sample", type=int, default=60, help="C-rad projects every k-th LoRA parameter (1 = all)")
    ap.add_argument("--b-examples", type=int, default=4, help="examples measured by B (= its projection interval)")
    ap.add_argument("--b-max-blocks", type=int, default=8, help="B generates at most this many 128-column blocks (0 = all)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--dim", type=int, default=8192, help="projection dim of the headline cases")
    ap.add_argument("--dim-small", type=int, default=1024, help="the smaller dim B is also stated at")
    ap.add_argument("--rss-pools", default="16,48", help="two pool sizes for the peak-RSS cases")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default=",".join(DEFAULT_CASES), help=f"comma list from {sorted(KNOWN)} (repeats allowed)")
    ap.add_argument("--data", type=Path, default=HERE / "data" / "less", help="cached warmup checkpoint")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: measure one case, print JSON
    ap.add_argument("--case-dim", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--pool-rows", type=int, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# ---- shared inputs ---------------------------------------------------------------------

def sample_pool(n: int) -> list:
    """The first n examples of a seeded permutation of builtin:pool (nested across n)."""
    import numpy as np

    from tselect.data import load_dataset

    pool = load_dataset("builtin:pool")
    order = np.random.default_rng([SEED, 11]).permutation(len(pool.examples))
    return [pool.examples[i] for i in order[: 2 * n + 16]]


def encoded_sample(tok, n: int, max_length: int) -> list:
    """n EncodedRows with at least one label token, in sample order."""
    from tselect.data.tokenize import IGNORE, encode_example

    rows = [r for r in (encode_example(ex, tok, max_length) for ex in sample_pool(n)) if any(t != IGNORE for t in r.labels)]
    if len(rows) < n:
        raise SystemExit(f"error: only {len(rows)} of the sampled pool rows keep label tokens at max_length {max_length}")
    return rows[:n]


def lora_model(threads: int):
    """(SmolLM2 + fresh LoRA as `wrap_lora` makes it, tokenizer, exp_avg, exp_avg_sq by name)."""
    import torch

    from tselect.featurize.grads import lora_param_names
    from tselect.models import load_model, resolve_model
    from tselect.training import METHODS
    from tselect.warmup import WARMUP_PRESETS

    torch.set_num_threads(threads)
    base, tok = load_model(resolve_model(None))
    model = METHODS["lora"](base, WARMUP_PRESETS["cpu"].train)
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


def to_device(batches: list, device) -> list:
    return [{k: v.to(device) for k, v in b.items()} for b in batches]


def _clock() -> float:
    """perf_counter after the device finished its queued work (CUDA kernels run asynchronously)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---- throughput cases, one per fresh process -------------------------------------------

def measure(a: argparse.Namespace) -> dict:
    import torch

    kind, dim = a.worker, a.case_dim
    model, tok, exp_avg, exp_avg_sq = lora_model(a.threads)
    n = {"A": a.n, "C-sjlt": a.n, "C-rad": a.n_rad, "B": a.b_examples}[kind]
    sample = encoded_sample(tok, max(a.n, n), a.max_length)
    if kind == "B":  # every k-th of the length-sorted sample: same mean length as A and C
        from tselect.data.tokenize import length_sorted

        order, step = length_sorted(sample), len(sample) / n
        rows = [sample[order[int(i * step + step / 2)]] for i in range(n)]
    else:
        rows = sample[:n]
    device = next(model.parameters()).device  # CUDA hosts: batches and moments follow the model
    batches = to_device(make_batches(rows, a.batch_size, tok.pad_token_id), device)
    warm = to_device(make_batches(sorted(rows, key=lambda r: len(r.input_ids))[:2], 2, tok.pad_token_id), device)
    exp_avg, exp_avg_sq = ({k: t.to(device) for k, t in d.items()} for d in (exp_avg, exp_avg_sq))
    extra: dict = {}
    if kind == "C-sjlt":
        from tselect.featurize.project import SparseJL

        projector = SparseJL(dim, seed=SEED)
    elif kind == "C-rad":
        from tselect.featurize.project import DenseRademacher

        projector = DenseRademacher(dim, seed=SEED, max_entries=1 << 62)  # past the product's budget, on purpose
    if kind.startswith("C-"):
        from tselect.featurize.adam import adam_transform
        from tselect.featurize.grads import projected_grads

        transform = adam_transform(exp_avg, exp_avg_sq)
    t0 = time.perf_counter()
    if kind == "C-sjlt":  # warm-up through the real path: also builds SparseJL's hash tables once
        projected_grads(model, warm[0], projector, transform)
    else:
        _floor(model, warm)
    extra["setup_seconds"] = round(time.perf_counter() - t0, 3)
    if kind.startswith("C-"):
        split = _Split(projector, transform, every=a.rad_sample if kind == "C-rad" else 1)
    rss_before, load_before = _rss_mb(), _load()
    t0 = time.perf_counter()
    if kind == "A":
        _floor(model, batches)
    elif kind.startswith("C-"):
        with split.patched():
            feats = torch.cat([projected_grads(model, b, split, split.transform) for b in batches])
        extra.update(feature_rows=list(feats.shape), finite=bool(torch.isfinite(feats).all()))
    else:
        extra.update(_reference_less(model, rows, exp_avg, exp_avg_sq, dim, a.b_max_blocks))
    seconds = time.perf_counter() - t0
    if kind.startswith("C-"):
        extra.update(split.report(seconds))
        seconds = extra.get("seconds_extrapolated", seconds)
    elif kind == "B":
        extra["seconds_measured"] = round(seconds, 3)
        seconds = extra["seconds_extrapolated"]
    tokens = sum(len(r.input_ids) for r in rows)
    padded = sum(b["input_ids"].numel() for b in batches) if kind != "B" else tokens
    return {"case": kind if kind == "A" else f"{kind}@{dim}", "kind": kind, "dim": None if kind == "A" else dim,
            "examples": len(rows), "tokens": tokens, "padded_tokens": padded,
            "batch_size": 1 if kind == "B" else a.batch_size, "seconds": round(seconds, 3),
            "examples_per_s": round(len(rows) / seconds, 4), "tokens_per_s": round(tokens / seconds, 2),
            "threads": torch.get_num_threads(), "peak_rss_mb": _peak_mb(), "rss_before_mb": round(rss_before, 1),
            "load_avg": {"before": load_before, "after": _load()}, **extra}


def _floor(model, batches) -> None:
    """Plain batched forward + loss.backward() of the LoRA model (eval mode, as C runs)."""
    model.eval()
    for b in batches:
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"], use_cache=False)
        out.loss.backward()
        model.zero_grad(set_to_none=True)


class _Split:
    """Wraps a projector and transform to time what runs inside C's gradient hooks.

    With every=k > 1 only every k-th parameter (in hook order) is really projected; the others
    get zeros, and report() scales the projection time up by coordinates (extrapolation).
    """

    def __init__(self, projector, transform, every: int = 1):
        self.inner, self.inner_transform, self.every = projector, transform, every
        self.dim, self.seed = projector.dim, projector.seed
        self.t = {"per_example_grads": 0.0, "adam": 0.0, "projection": 0.0}
        self.calls, self.projected, self.skipped = 0, 0, 0

    def transform(self, name, g):
        t0 = _clock()
        out = self.inner_transform(name, g)
        self.t["adam"] += _clock() - t0
        return out

    def project(self, name, g):
        import torch

        self.calls += 1
        numel = g[0].numel()
        if (self.calls - 1) % self.every:
            self.skipped += numel
            return torch.zeros(g.shape[0], self.dim, device=g.device)
        t0 = _clock()
        out = self.inner.project(name, g)
        self.t["projection"] += _clock() - t0
        self.projected += numel
        return out

    def patched(self):
        from contextlib import contextmanager

        from tselect.featurize import grads

        @contextmanager
        def cm():
            orig = grads._factor_grads

            def timed(*args):
                t0 = _clock()
                out = orig(*args)
                self.t["per_example_grads"] += _clock() - t0
                return out

            grads._factor_grads = timed
            try:
                yield
            finally:
                grads._factor_grads = orig

        return cm()

    def report(self, wall: float) -> dict:
        hooks = sum(self.t.values())
        out = {"split_seconds": {"forward_backward": round(wall - hooks, 3), **{k: round(v, 3) for k, v in self.t.items()}}}
        if self.skipped:
            scale = (self.projected + self.skipped) / self.projected
            out.update(projected_coords=self.projected, total_coords=self.projected + self.skipped,
                       projection_seconds_extrapolated=round(self.t["projection"] * scale, 1),
                       seconds_measured=round(wall, 3),
                       seconds_extrapolated=round(wall + self.t["projection"] * (scale - 1), 1), extrapolated=True)
        return out


def _reference_less(model, rows, exp_avg, exp_avg_sq, dim: int, max_blocks: int, block: int = 128) -> dict:
    """LESS's loop: bs=1 backward, flat LoRA grad, Adam, block-generated dense Rademacher."""
    import torch

    from tselect.featurize.adam import BETAS, EPS

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    m = torch.cat([exp_avg[n].reshape(-1) for n, _ in named])  # [P], in .grad concatenation order
    v = torch.cat([exp_avg_sq[n].reshape(-1) for n, _ in named])
    model.train()  # LESS collects gradients in train mode (LoRA dropout on)
    grads = []
    t0 = time.perf_counter()
    device = m.device
    for r in rows:
        ids, labels = torch.tensor([r.input_ids], device=device), torch.tensor([r.labels], device=device)
        model(input_ids=ids, labels=labels, use_cache=False).loss.backward()
        g = torch.cat([p.grad.reshape(-1) for _, p in named])  # [P]
        model.zero_grad(set_to_none=True)
        m1 = BETAS[0] * m + (1 - BETAS[0]) * g
        v1 = BETAS[1] * v + (1 - BETAS[1]) * g * g
        grads.append(m1 / torch.sqrt(v1 + EPS))
    t_grad = time.perf_counter() - t0
    # TRAK BasicProjector: per block of output columns, re-seed a generator, draw a [P, block]
    # ±1 matrix, multiply, keep the slice. The full [P, dim] matrix never exists.
    flat = torch.stack(grads)  # [G, P] fp32
    out = torch.zeros(flat.shape[0], dim, device=device)
    mat = torch.empty(m.numel(), block, device=device)
    n_blocks = -(-dim // block)
    done = n_blocks if max_blocks <= 0 else min(n_blocks, max_blocks)
    t_gen = t_mm = 0.0
    for k in range(done):
        t1 = time.perf_counter()
        mat.bernoulli_(0.5, generator=torch.Generator(device).manual_seed(SEED * 1_000_003 + k))
        mat.mul_(2.0).sub_(1.0)
        t2 = time.perf_counter()
        st, ed = k * block, min((k + 1) * block, dim)
        out[:, st:ed] = flat @ mat[:, : ed - st]
        t_mm += time.perf_counter() - t2
        t_gen += t2 - t1
    scale = n_blocks / done
    gen, mm, g_count = t_gen * scale, t_mm * scale, flat.shape[0]
    per_ex16 = t_grad / g_count + gen / 16 + mm / g_count
    return {"grad_seconds": round(t_grad, 3), "blocks_total": n_blocks, "blocks_measured": done,
            "proj_generate_seconds": round(gen, 2), "proj_matmul_seconds": round(mm, 2),
            "extrapolated": done < n_blocks, "project_interval": g_count, "n_params": m.numel(), "block": block,
            "seconds_extrapolated": round(t_grad + gen + mm, 3),
            "interval16_seconds_per_example": round(per_ex16, 3), "interval16_examples_per_s": round(1 / per_ex16, 5),
            "finite": bool(torch.isfinite(out).all())}


# ---- featurize write path, peak RSS per pool size --------------------------------------

def ensure_checkpoint(a: argparse.Namespace) -> Path:
    """A real warmup checkpoint dir (save_checkpoint layout) after one AdamW step; cached."""
    ckpt = a.data / "ckpt-1"
    if (ckpt / "state.json").exists():
        return ckpt
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.less_bench", "--worker", "ckpt", "--threads", str(a.threads),
                           "--data", str(a.data)], capture_output=True, text=True, cwd=ROOT, env=_env(a))
    if proc.returncode != 0:
        raise SystemExit(f"error: making the warmup checkpoint failed:\n{proc.stderr[-3000:]}")
    print(f"made warmup checkpoint {ckpt} in {time.perf_counter() - t0:.0f}s (cached)", file=sys.stderr, flush=True)
    return ckpt


def make_checkpoint(a: argparse.Namespace) -> None:
    """One optimizer step of the cpu warmup recipe on 4 rows, saved by the warmup's own on_epoch hook."""
    import dataclasses
    import shutil

    import torch

    from tselect.models import load_model, resolve_model
    from tselect.warmup import WARMUP_PRESETS, train_warmup

    torch.set_num_threads(a.threads)
    cfg = WARMUP_PRESETS["cpu"]
    one_step = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1, batch_size=2, effective_batch_size=4))
    base, tok = load_model(resolve_model(None))
    rows = encoded_sample(tok, 4, 64)
    a.data.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ckpt-1.", dir=a.data))
    train_warmup(base, rows, tok.pad_token_id, one_step, tmp)  # writes tmp/ckpt-1
    shutil.rmtree(a.data / "ckpt-1", ignore_errors=True)
    os.replace(tmp / "ckpt-1", a.data / "ckpt-1")
    shutil.rmtree(tmp, ignore_errors=True)


def measure_write(a: argparse.Namespace) -> dict:
    """One LESS checkpoint through the product's path: `less.checkpoint_rows` + `featurize.write_checkpoint`."""
    import numpy as np
    import torch

    from tselect import store
    from tselect.data import load_dataset
    from tselect.data.tokenize import encode_example
    from tselect.featurize.config import FeaturizeConfig
    from tselect.featurize import write_checkpoint
    from tselect.featurize.less import _Checkpoint, checkpoint_rows, less_config
    from tselect.models import load_tokenizer, resolve_model

    torch.set_num_threads(a.threads)
    n = a.pool_rows
    cfg = FeaturizeConfig(rep="less", pool="builtin:pool", query="builtin:sciq", max_length=a.max_length,
                          batch_size=a.batch_size, params=(("dim", str(a.case_dim)),))
    lc = less_config(cfg)
    tok = load_tokenizer(resolve_model(None))
    pool = [encode_example(ex, tok, cfg.max_length) for ex in sample_pool(n)[:n]]
    query = [encode_example(ex, tok, cfg.max_length) for ex in load_dataset("builtin:sciq").examples[:QUERY_ROWS]]
    rss_before, load_before = _rss_mb(), _load()
    with tempfile.TemporaryDirectory(prefix="less-bench-") as tmp:
        group = Path(tmp) / store.FEATURES
        store.open_group(group)
        t0 = time.perf_counter()
        loaded = _Checkpoint(None, a.data / "ckpt-1")
        loaded.get()  # fixed cost, timed apart: base model + adapter + moments by name (what the rows load first)
        t_load = time.perf_counter()
        ck = checkpoint_rows(cfg, lc, loaded, {"query": query, "pool": pool}, "ckpt-1")
        write_checkpoint(group, ck, (len(query), len(pool)), cfg.dtype, "less ckpt-1")
        seconds = time.perf_counter() - t0
        load_seconds = t_load - t0
        import zarr

        g = zarr.open_group(str(group / "ckpt-1"), mode="r")
        pool_rows = np.asarray(g["pool"][:], dtype=np.float32)
        norms = np.linalg.norm(pool_rows, axis=1)
        disk = sum(f.stat().st_size for f in group.rglob("*") if f.is_file())
    rows = n + QUERY_ROWS
    return {"case": f"rss-{n}", "kind": "rss", "dim": a.case_dim, "pool": n, "query": QUERY_ROWS,
            "gradient_rows": rows, "longest_row": max(len(r.input_ids) for r in pool + query),
            "tokens": sum(len(r.input_ids) for r in pool + query), "seconds": round(seconds, 2),
            "rows_per_s_incl_model_load": round(rows / seconds, 4), "load_seconds": round(load_seconds, 2),
            "rows_seconds": round(seconds - load_seconds, 2), "peak_rss_mb": _peak_mb(),
            "rss_before_mb": round(rss_before, 1), "store_bytes": disk, "pool_shape": list(pool_rows.shape),
            "unit_norm_rows": bool(np.allclose(norms, 1.0, atol=1e-2)), "threads": torch.get_num_threads(),
            "load_avg": {"before": load_before, "after": _load()}}


# ---- orchestration and report ----------------------------------------------------------

def _env(a: argparse.Namespace) -> dict:
    return {**os.environ, "TSELECT_THREADS": str(a.threads), "TSELECT_PROGRESS": "0"}


def run_case(a: argparse.Namespace, case: str, rss_sizes: list[int]) -> dict:
    kind = case.split("@")[0]
    dim = a.dim_small if case == "B@small" else a.dim
    cmd = [sys.executable, "-m", "bench.less_bench", "--worker", kind, "--case-dim", str(dim),
           "--n", str(a.n), "--n-rad", str(a.n_rad), "--rad-sample", str(a.rad_sample),
           "--b-examples", str(a.b_examples), "--b-max-blocks", str(a.b_max_blocks), "--batch-size", str(a.batch_size),
           "--max-length", str(a.max_length), "--threads", str(a.threads), "--data", str(a.data)]
    if kind == "rss":
        cmd += ["--pool-rows", str(rss_sizes[0] if case == "rss@small" else rss_sizes[1])]
    load_spawn = _load()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(a))
    if proc.returncode != 0:
        raise SystemExit(f"error: case {case} failed:\n{proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r["load_avg"]["at_spawn"] = load_spawn
    r["process_seconds"] = round(time.perf_counter() - t0, 1)
    return r


def machine() -> dict:
    from importlib.metadata import version

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "torch": version("torch"),
            "transformers": version("transformers"), "peft": version("peft"),
            "mem_total_gb": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9, 1)}


def summarize(results: list[dict], a: argparse.Namespace, load_run: dict) -> dict:
    def col(case: str, key: str = "examples_per_s") -> list[float]:
        return [r[key] for r in results if r["case"] == case]

    a_rate, c_rate = col("A"), col(f"C-sjlt@{a.dim}")
    b16, bsmall = col(f"B@{a.dim}", "interval16_examples_per_s"), col(f"B@{a.dim_small}", "interval16_examples_per_s")
    ratios: dict = {}
    if a_rate and c_rate:
        ratios["C_over_A_pairs"] = [round(c / x, 3) for c, x in zip(c_rate, a_rate)]
        ratios["C_over_A_median"] = round(statistics.median(c_rate) / statistics.median(a_rate), 3)
    if c_rate and b16:
        ratios["C_over_B_interval16"] = round(statistics.median(c_rate) / b16[0], 1)
        ratios["C_over_B_measured_interval"] = round(statistics.median(c_rate) / col(f"B@{a.dim}")[0], 1)
    if c_rate and bsmall:
        ratios[f"C@{a.dim}_over_B@{a.dim_small}_interval16"] = round(statistics.median(c_rate) / bsmall[0], 1)
    rad = col(f"C-rad@{a.dim}")
    if c_rate and rad:
        ratios["C_sjlt_over_C_rad_extrapolated"] = round(statistics.median(c_rate) / rad[0], 1)
    rss = [r for r in results if r["kind"] == "rss"]
    if len(rss) >= 2:
        ratios["rss_growth_mb"] = round(rss[-1]["peak_rss_mb"] - rss[0]["peak_rss_mb"], 1)
    met = {}
    if "C_over_A_median" in ratios:
        met["C_over_A"] = ratios["C_over_A_median"] >= TARGETS["C_over_A"]
    if "C_over_B_interval16" in ratios:
        met["C_over_B"] = ratios["C_over_B_interval16"] >= TARGETS["C_over_B"]
    sizes = {k: getattr(a, k) for k in ("n", "n_rad", "rad_sample", "b_examples", "b_max_blocks", "batch_size",
                                          "max_length", "dim", "dim_small", "rss_pools", "threads")}
    sizes.update(lora="r=8 alpha=32 on q,k,v,o_proj (921,600 params), training.METHODS['lora'] with the warmup preset cpu",
                 model="builtin:smollm2 (SmolLM2-135M, fp32, CPU)", query_rows_rss=QUERY_ROWS)
    argv = sys.argv[2:] if sys.argv[1:2] == ["less"] else sys.argv[1:]
    return {"machine": machine(), "sizes": sizes, "targets": TARGETS, "ratios": ratios, "targets_met": met,
            "command": "python -m bench.run less " + " ".join(argv), "load_avg_run": load_run,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cases": results}


def markdown(doc: dict) -> str:
    s, m, rt = doc["sizes"], doc["machine"], doc["ratios"]
    a_rates = [r["examples_per_s"] for r in doc["cases"] if r["case"] == "A"]
    a_med = statistics.median(a_rates) if a_rates else None
    lr = doc["load_avg_run"]
    lines = [f"SmolLM2-135M fp32 + LoRA r=8 on q,k,v,o (921,600 params); builtin:pool rows at max_length "
             f"{s['max_length']}; torch.set_num_threads({s['threads']}); {m['cores']} cores ({m['cpu']}), torch {m['torch']}. "
             f"Load average (1/5/15 min): start {lr['start']}, end {lr['end']}; wall {lr['wall_seconds']:.0f} s. "
             "Rows marked * are partly extrapolated (see notes).", "",
             "| case | batch | examples | tok/ex | seconds | ex/s | tok/s | × A | peak RSS MB | load 1m before→after |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in doc["cases"]:
        if r["kind"] == "rss":
            continue
        star = "*" if r.get("extrapolated") else ""
        xa = f"{r['examples_per_s'] / a_med:.3g}" if a_med else "–"
        lines.append(f"| {r['case']}{star} | {r['batch_size']} | {r['examples']} | {r['tokens'] / r['examples']:.0f} | "
                     f"{r['seconds']:.1f} | {r['examples_per_s']:.4g} | {r['tokens_per_s']:.4g} | {xa} | "
                     f"{r['peak_rss_mb']:.0f} | {r['load_avg']['before'][0]}→{r['load_avg']['after'][0]} |")
        if r["kind"] == "B":
            e16 = r["interval16_examples_per_s"]
            xa16 = f"{e16 / a_med:.3g}" if a_med else "–"
            lines.append(f"| {r['case']}{star}, LESS interval 16 | 1 | – | {r['tokens'] / r['examples']:.0f} | "
                         f"{r['interval16_seconds_per_example']:.1f} /ex | {e16:.4g} | {e16 * r['tokens'] / r['examples']:.4g} | "
                         f"{xa16} | – | – |")
    notes = []
    for r in doc["cases"]:
        if r["kind"] == "B":
            notes.append(f"{r['case']}: {r['examples']} bs=1 gradients {r['grad_seconds']:.1f} s; projection of all "
                         f"{r['examples']} at once: matrix generation {r['proj_generate_seconds']:.1f} s + matmul "
                         f"{r['proj_matmul_seconds']:.1f} s ({r['blocks_measured']} of {r['blocks_total']} blocks of "
                         f"{r['block']} columns measured{', the rest extrapolated per block' if r['extrapolated'] else ''}).")
        elif r["kind"].startswith("C-"):
            sp = r["split_seconds"]
            txt = (f"{r['case']}: forward+backward {sp['forward_backward']:.1f} s, per-example grads (bmm) "
                   f"{sp['per_example_grads']:.2f} s, Adam {sp['adam']:.2f} s, projection {sp['projection']:.2f} s")
            if r.get("extrapolated"):
                txt += (f" for {r['projected_coords']:,} of {r['total_coords']:,} coordinates, i.e. "
                        f"≈{r['projection_seconds_extrapolated']:.0f} s for all; measured wall {r['seconds_measured']:.1f} s")
            notes.append(txt + f"; setup (warm-up batch{', SJLT tables' if r['kind'] == 'C-sjlt' else ''}) "
                         f"{r['setup_seconds']:.1f} s, not counted.")
    rss = [r for r in doc["cases"] if r["kind"] == "rss"]
    if rss:
        lines += ["", f"Featurize write path, one warmup checkpoint (`less.checkpoint_rows` + `featurize.write_checkpoint`, dim {s['dim']}, "
                  f"{rss[0]['query']} query rows, fresh process each):", "",
                  "| pool rows | longest row (tok) | seconds incl. model load | of which load (fixed) | rows/s | peak RSS MB "
                  "| unit rows | load 1m before→after |",
                  "|---:|---:|---:|---:|---:|---:|---|---|"]
        for r in rss:
            lines.append(f"| {r['pool']} | {r['longest_row']} | {r['seconds']:.1f} | {r.get('load_seconds', float('nan')):.1f} | "
                         f"{r['rows_per_s_incl_model_load']:.3g} | "
                         f"{r['peak_rss_mb']:.0f} | {r['unit_norm_rows']} | {r['load_avg']['before'][0]}→{r['load_avg']['after'][0]} |")
    lines += ["", "Notes:"] + [f"- {x}" for x in notes]
    lines += ["", "Ratios: " + "; ".join(f"{k} = {v}" for k, v in rt.items()),
              "Targets (dim {at_dim}): C ≥ {C_over_A}×A and C ≥ {C_over_B}×B (B at LESS interval 16). Met: ".format(**doc["targets"])
              + (", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in doc["targets_met"].items()) or "–")]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    a = parse(argv)
    if a.worker == "ckpt":
        make_checkpoint(a)
        return 0
    if a.worker == "rss":
        print(json.dumps(measure_write(a)))
        return 0
    if a.worker:
        print(json.dumps(measure(a)))
        return 0
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in KNOWN]
    if bad:
        raise SystemExit(f"error: unknown case(s) {bad}; choose from {sorted(KNOWN)}")
    sizes = [int(x) for x in a.rss_pools.split(",")]
    if len(sizes) != 2:
        raise SystemExit("error: --rss-pools takes two sizes, e.g. 16,48")
    load_run = {"start": _load()}
    t_run = time.perf_counter()
    if any(c.startswith("rss") for c in cases):
        ensure_checkpoint(a)
    results = []
    for c in cases:
        r = run_case(a, c, sizes)
        results.append(r)
        rate = f"{r['examples_per_s']:.4g} ex/s" if "examples_per_s" in r else f"{r['rows_per_s_incl_model_load']:.3g} rows/s"
        print(f"{r['case']}: {rate} ({r['seconds']:.1f}s), peak {r['peak_rss_mb']:.0f} MB, "
              f"load {r['load_avg']['before'][0]}→{r['load_avg']['after'][0]}", file=sys.stderr, flush=True)
    load_run["end"] = _load()
    load_run["wall_seconds"] = round(time.perf_counter() - t_run, 1)
    doc = summarize(results, a, load_run)
    table = markdown(doc)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "less.json").write_text(json.dumps(doc, indent=1) + "\n")
    (a.out / "less.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
