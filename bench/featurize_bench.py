"""Featurize at GPU scale: a 7B-shaped projection-only case and the embedded model with the LESS recipe.

    python -m bench.run featurize                  # CUDA: full sizes; CPU: scaled (see defaults)
    make gpu-check                                 # the same on one GPU, <= 10 minutes

proj7b  Projection only, the shapes of Llama-2-7B LoRA r=128 on q/k/v/o: per layer 4 modules x
        (A [128, 4096], B [4096, 128]), 32 layers = 134,217,728 parameters, d = 8192, batch 8.
        The per-factor gradients are random (cost does not depend on values). Tables/matrices
        are built once (timed apart as setup, once per checkpoint in featurize), then one
        batch is projected through every factor. On CPU --proj-layers defaults to 1 (4.2M
        parameters), so the number is a per-layer cost, not a 7B one: the row says so.
embedded  SmolLM2-135M with a fresh LoRA from the `less` preset (r=128 on q/k/v/o), --rows
        label-bearing rows of builtin:pool at --max-length, evenly spaced in length order, in
        token-budget batches (the planner's budget on CUDA, --max-tokens on CPU), so batches
        differ in width and row count. Cases on the SAME batches: a plain
        forward + loss.backward() (the floor), and `projected_grads` with the LESS Adam
        transform for sjlt and kronecker, run --reps times interleaved (the order rotates);
        ratios are per repetition (same load), reported as the median. The projection's share
        of featurize time is timed inside the hooks (synchronized on CUDA). Peak memory for the
        two largest batch shapes, one batch each, predicted for the batch's shape and its
        label-position count (the planner budgets for every position being a label): on CUDA
        the planner's whole-process peak
        against torch.cuda.max_memory_allocated; on CPU, which has no allocator peak counter,
        the planner's per-batch part (peak minus weights, moments and projector state) against
        the peak of live bytes that one batch allocates, read from the profiler's memory
        timeline (every tensor allocation and free, in time order).
CPU threads: $TSELECT_THREADS, else every core. The load average is recorded at start and end.
Results: <out>.json and <out>.md (default bench/results/featurize).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SEED = 0
QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")
KINDS = ("sjlt", "kronecker")


def parse(argv: list[str]) -> argparse.Namespace:
    import torch

    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(prog="bench.run featurize")
    p.add_argument("--proj-layers", type=int, default=32 if cuda else 1)
    p.add_argument("--proj-batch", type=int, default=8)
    p.add_argument("--dim", type=int, default=8192)
    p.add_argument("--rows", type=int, default=64 if cuda else 12)
    p.add_argument("--max-length", type=int, default=2048 if cuda else 128)
    p.add_argument("--max-tokens", type=int, default=0, help="0: the planner's budget (CUDA) or 512 (CPU)")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions of floor, sjlt, kronecker")
    p.add_argument("--skip", nargs="*", default=[], choices=["proj7b", "embedded"])
    p.add_argument("--out", default="bench/results/featurize")
    return p.parse_args(argv)


def clock() -> float:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def device() -> "object":
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def proj7b(layers: int, batch: int, dim: int, dev) -> list[dict]:
    """Seconds to project one batch through every 7B-shaped LoRA factor, per projection kind."""
    import torch

    from tselect.featurize.project import make_projector

    shapes = [(128, 4096), (4096, 128)] * (4 * layers)  # (out, in) of lora_A, lora_B per module
    gen = torch.Generator().manual_seed(SEED)
    grads = {s: torch.randn(batch, *s, generator=gen).to(dev) for s in sorted(set(shapes))}
    rows = []
    for kind in ("sjlt", "kronecker"):
        proj = make_projector(kind, dim, seed=SEED)
        t0 = clock()
        for i, s in enumerate(shapes):  # setup: hash tables / L, R per factor (once per checkpoint)
            proj.project(f"f{i}", grads[s][:1])
        setup = clock() - t0
        out = torch.zeros(batch, dim, device=dev)
        t0 = clock()
        for i, s in enumerate(shapes):
            out.add_(proj.project(f"f{i}", grads[s]))
        seconds = clock() - t0
        rows.append({"case": f"proj7b-{kind}", "layers": layers, "params": sum(o * i for o, i in shapes), "dim": dim,
                     "batch": batch, "setup_s": round(setup, 3), "batch_s": round(seconds, 4),
                     "per_example_ms": round(1000 * seconds / batch, 2), "finite": dev.type == "meta" or bool(torch.isfinite(out).all())})
        del proj
    return rows


def _model(dev):
    import torch

    from tselect.featurize.grads import lora_param_names
    from tselect.models import load_model, resolve_model
    from tselect.training import METHODS
    from tselect.warmup import WARMUP_PRESETS

    base, tok = load_model(resolve_model(None))
    model = METHODS["lora"](base, WARMUP_PRESETS["less"].train)
    model.to(dev)
    gen = torch.Generator().manual_seed(SEED)
    params = dict(model.named_parameters())
    names = lora_param_names(model)
    with torch.no_grad():
        for n in names:
            if ".lora_B." in n:  # zero-initialized: give it values so every gradient is non-trivial
                params[n].copy_(torch.randn(params[n].shape, generator=gen) * 0.01)
    m = {n: (torch.randn(params[n].shape, generator=gen) * 1e-4).to(dev) for n in names}
    v = {n: (torch.randn(params[n].shape, generator=gen).square() * 1e-7).to(dev) for n in names}
    return model, tok, m, v


class _Timed:
    """A projector wrapper that times project() (synchronized)."""

    def __init__(self, inner):
        self.inner, self.dim, self.seed, self.seconds = inner, inner.dim, inner.seed, 0.0

    def project(self, name, g):
        t0 = clock()
        out = self.inner.project(name, g)
        self.seconds += clock() - t0
        return out


def cpu_peak_bytes(fn) -> int:
    """Peak bytes allocated (net of frees) while fn() runs, from the profiler's memory timeline
    (every CREATE/DESTROY of a tensor allocation, in time order): CPU has no allocator peak
    counter like torch.cuda.max_memory_allocated. Tensors alive before fn() do not count."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    cur = peak = 0
    for _, action, _, size in sorted(prof._memory_profile().timeline, key=lambda e: e[0]):
        if action.name == "CREATE":
            cur += size
        elif action.name == "DESTROY":
            cur -= size
        peak = max(peak, cur)
    return peak


def load_average() -> list[float]:
    import os

    return [round(x, 2) for x in os.getloadavg()]


def _median(xs: list[float]) -> float:
    import statistics

    return statistics.median(xs)


def _batches(a: argparse.Namespace, model, tok, dev) -> tuple[list[dict], int, int]:
    """(token-budget batches of a.rows label-bearing builtin:pool rows, budget, rows): rows at evenly
    spaced ranks of the length order, so batches differ in width and row count."""
    from tselect.data import load_dataset
    from tselect.data.tokenize import batches, encode_example
    from tselect.featurize.batching import row_groups
    from tselect.featurize.plan import auto_max_tokens

    pool = load_dataset("builtin:pool")
    rows = [r for r in (encode_example(ex, tok, a.max_length) for ex in pool.examples) if any(t != -100 for t in r.labels)]
    rows = sorted(rows, key=lambda r: -len(r.input_ids))
    rows = [rows[round(i * (len(rows) - 1) / max(a.rows - 1, 1))] for i in range(min(a.rows, len(rows)))]
    budget = a.max_tokens or auto_max_tokens(model, a.max_length, 128, QKVO, "sjlt", a.dim) or 512
    data = []
    for idx in row_groups([len(r.input_ids) for r in rows], 64, budget):
        _, ids, mask, labels = next(batches(rows, len(idx), tok.pad_token_id, order=idx))
        data.append({"input_ids": ids.to(dev), "attention_mask": mask.to(dev), "labels": labels.to(dev)})
    return data, budget, len(rows)


def _peaks(model, data: list[dict], mm, proj, transform, dev) -> list[dict]:
    """Predicted vs measured peak memory for the two largest batch shapes (one batch each)."""
    import torch

    from tselect.featurize.grads import projected_grads

    shapes = sorted({tuple(b["input_ids"].shape) for b in data}, key=lambda s: -s[0] * s[1])[:2]
    out = []
    for s in shapes:
        b = next(b for b in data if tuple(b["input_ids"].shape) == s)
        labels = int((b["labels"][:, 1:] != -100).sum())  # positions whose loss is taken (shifted)
        heads = int((b["labels"][:, 1:] != -100).any(0).sum())  # positions the output head runs at, per row
        if dev.type == "cuda":  # whole-process peak: weights, moments, tables and the batch
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            projected_grads(model, b, proj, transform)
            got, want, what = torch.cuda.max_memory_allocated(), mm.peak_bytes(*s, labels, heads), "process"
        else:  # what one batch allocates on top of the loaded model, moments and tables
            got = cpu_peak_bytes(lambda: projected_grads(model, b, proj, transform))
            want, what = mm.peak_bytes(*s, labels, heads) - mm.static_bytes, "batch"
        out.append({"shape": list(s), "labels": labels, "head_positions": heads, "part": what, "predicted_gib": round(want / 2**30, 4),
                    "measured_gib": round(got / 2**30, 4), "ratio": round(want / got, 3)})
    return out


def embedded(a: argparse.Namespace, dev) -> list[dict]:
    """Floor, sjlt and kronecker on the same batches, interleaved a.reps times (the load changes)."""
    from tselect.featurize.adam import adam_transform
    from tselect.featurize.grads import projected_grads
    from tselect.featurize.plan import memory_model
    from tselect.featurize.project import make_projector

    model, tok, m, v = _model(dev)
    data, budget, n_rows = _batches(a, model, tok, dev)
    tokens = sum(b["input_ids"].numel() for b in data)
    config = model.get_base_model().config.to_dict()
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    transform = adam_transform(m, v)
    projs = {kind: _Timed(make_projector(kind, a.dim, seed=SEED)) for kind in KINDS}

    def floor():
        model.eval()
        for b in data:
            model(**b, use_cache=False).loss.backward()
            model.zero_grad(set_to_none=True)

    def featurize(kind):
        for b in data:
            projected_grads(model, b, projs[kind], transform)

    cases = {"floor": floor, **{k: (lambda k=k: featurize(k)) for k in KINDS}}
    for fn in cases.values():  # warm-up: kernels, allocator, projection tables / matrices
        fn()
    seconds: dict[str, list[float]] = {c: [] for c in cases}
    share: dict[str, list[float]] = {k: [] for k in KINDS}
    names = list(cases)
    for r in range(a.reps):
        for c in names[r % len(names):] + names[: r % len(names)]:  # rotate: no case always runs first
            if c in projs:
                projs[c].seconds = 0.0
            t0 = clock()
            cases[c]()
            seconds[c].append(clock() - t0)
            if c in projs:
                share[c].append(projs[c].seconds / seconds[c][-1])
    base = _median(seconds["floor"])
    out = [{"case": "embedded-floor", "rows": n_rows, "batches": len(data), "padded_tokens": tokens,
            "max_tokens": budget, "reps": a.reps, "seconds": round(base, 3), "seconds_all": [round(s, 3) for s in seconds["floor"]],
            "tokens_per_s": round(tokens / base, 1)}]
    for kind in KINDS:
        ratios = [f / s for f, s in zip(seconds["floor"], seconds[kind])]  # same repetition: same load
        mm = memory_model(config, 128, QKVO, dtype, kind, a.dim)
        out.append({"case": f"embedded-{kind}", "seconds": round(_median(seconds[kind]), 3),
                    "seconds_all": [round(s, 3) for s in seconds[kind]],
                    "tokens_per_s": round(tokens / _median(seconds[kind]), 1),
                    "ratio_to_floor": round(_median(ratios), 3), "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
                    "projection_share": round(_median(share[kind]), 3), "share_max": round(max(share[kind]), 3),
                    "peak_memory": _peaks(model, data, mm, projs[kind], transform, dev)})
    return out


def markdown(doc: dict) -> str:
    lines = [f"# featurize bench ({doc['device']})", "", f"`{doc['command']}`", "",
             f"load average (1, 5, 15 min): {doc['load_average']}; CPU threads: {doc.get('threads')}", ""]
    for r in doc["rows"]:
        lines.append("- " + ", ".join(f"{k}={v}" for k, v in r.items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    import sys

    import torch

    from tselect.models import set_threads

    a = parse(argv)
    dev = device()
    threads = set_threads() if dev.type == "cpu" else None  # $TSELECT_THREADS, else every core
    load = {"start": load_average()}
    rows = []
    if "proj7b" not in a.skip and a.proj_layers > 0:
        rows += proj7b(a.proj_layers, a.proj_batch, a.dim, dev)
    if "embedded" not in a.skip:
        rows += embedded(a, dev)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    doc = {"device": name, "torch": torch.__version__, "command": "python -m bench.run featurize " + " ".join(argv),
           "threads": threads,
           "load_average": {**load, "end": load_average()}, "rows": rows}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc), file=sys.stderr)
    return 0
