"""Featurize at GPU scale: a 7B-shaped projection-only case and the embedded model with the LESS recipe.

    python -m bench.run featurize                  # CUDA: full sizes; CPU: scaled (see defaults)
    make gpu-check                                 # the same on one GPU, <= 10 minutes

proj7b  Projection only, the shapes of Llama-2-7B LoRA r=128 on q/k/v/o: per layer 4 modules x
        (A [128, 4096], B [4096, 128]), 32 layers = 134,217,728 parameters, d = 8192, batch 8.
        The per-factor gradients are random (cost does not depend on values). Tables/matrices
        are built once (timed apart as setup, once per checkpoint in featurize), then one
        batch is projected through every factor. On CPU --proj-layers defaults to 1 (4.2M
        parameters), so the number is a per-layer cost, not a 7B one: the row says so.
embedded  SmolLM2-135M with a fresh LoRA from the `less` preset (r=128 on q/k/v/o), rows of
        builtin:pool at --max-length, token-budget batches (the planner's budget on CUDA,
        --max-tokens on CPU). Cases on the SAME batches: a plain forward + loss.backward()
        (the floor), and `projected_grads` with the LESS Adam transform for sjlt and
        kronecker; the projection's share of featurize time is timed inside the hooks
        (synchronized on CUDA). On CUDA the planner's predicted peak memory is compared with
        torch.cuda.max_memory_allocated for the two largest batch shapes; on CPU there is no
        allocator peak to read, and the rows say "n/a".
Results: <out>.json and <out>.md (default bench/results/featurize).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SEED = 0
QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")


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


def cpu_peak_bytes(fn) -> int:
    """Peak bytes of tensors allocated (net of frees) while fn() runs, from the profiler's memory
    timeline: CPU has no allocator peak counter like torch.cuda.max_memory_allocated."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    cur = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        name = action.name
        if name in ("CREATE", "INCREMENT_VERSION"):
            cur += size if name == "CREATE" else 0
        elif name == "DESTROY":
            cur -= size
        peak = max(peak, cur)
    return peak


class _Timed:
    """A projector wrapper that times project() (synchronized)."""

    def __init__(self, inner):
        self.inner, self.dim, self.seed, self.seconds = inner, inner.dim, inner.seed, 0.0

    def project(self, name, g):
        t0 = clock()
        out = self.inner.project(name, g)
        self.seconds += clock() - t0
        return out


def embedded(a: argparse.Namespace, dev) -> list[dict]:
    import torch

    from tselect.data.tokenize import batches, encode_example
    from tselect.featurize.adam import adam_transform
    from tselect.featurize.batching import row_groups
    from tselect.featurize.grads import projected_grads
    from tselect.featurize.plan import auto_max_tokens, memory_model
    from tselect.featurize.project import make_projector
    from tselect.data import load_dataset

    model, tok, m, v = _model(dev)
    pool = load_dataset("builtin:pool")
    rows = [r for r in (encode_example(ex, tok, a.max_length) for ex in pool.examples) if any(t != -100 for t in r.labels)]
    rows = sorted(rows, key=lambda r: -len(r.input_ids))[: a.rows]  # the longest rows: the memory-bound end
    budget = a.max_tokens or auto_max_tokens(model, a.max_length, 128, QKVO, "sjlt", a.dim) or 512
    groups = row_groups([len(r.input_ids) for r in rows], 64, budget)
    data = []
    for idx in groups:
        _, ids, mask, labels = next(batches(rows, len(idx), tok.pad_token_id, order=idx))
        data.append({"input_ids": ids.to(dev), "attention_mask": mask.to(dev), "labels": labels.to(dev)})
    tokens = sum(b["input_ids"].numel() for b in data)
    config = model.get_base_model().config.to_dict()
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    out = []

    def floor():
        model.eval()
        for b in data:
            model(**b, use_cache=False).loss.backward()
            model.zero_grad(set_to_none=True)

    floor()  # warm-up (kernels, allocator)
    t0 = clock()
    floor()
    base_s = clock() - t0
    out.append({"case": "embedded-floor", "rows": len(rows), "batches": len(data), "padded_tokens": tokens,
                "max_tokens": budget, "seconds": round(base_s, 3), "tokens_per_s": round(tokens / base_s, 1)})
    for kind in ("sjlt", "kronecker"):
        proj = _Timed(make_projector(kind, a.dim, seed=SEED))
        transform = adam_transform(m, v)
        projected_grads(model, data[0], proj, transform)  # setup: tables / matrices
        proj.seconds = 0.0
        peaks = []
        t0 = clock()
        for b in data:
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            projected_grads(model, b, proj, transform)
            if dev.type == "cuda":
                peaks.append((tuple(b["input_ids"].shape), torch.cuda.max_memory_allocated()))
        seconds = clock() - t0
        mm = memory_model(config, 128, QKVO, dtype, kind, a.dim)
        shapes = sorted({tuple(b["input_ids"].shape) for b in data}, key=lambda s: -s[0] * s[1])[:2]
        if dev.type == "cuda":  # whole-process peak: weights, moments, tables and the batch
            mem = [{"shape": list(s), "predicted_gib": round(mm.peak_bytes(*s) / 2**30, 3),
                    "measured_gib": round(max(p for sh, p in peaks if sh == s) / 2**30, 3)} for s in shapes]
        else:  # CPU: what one batch allocates on top of the loaded model (the token-dependent part)
            mem = []
            for s in shapes:
                b = next(b for b in data if tuple(b["input_ids"].shape) == s)
                got = cpu_peak_bytes(lambda: projected_grads(model, b, proj, transform))
                want = mm.peak_bytes(*s) - mm.static_bytes
                mem.append({"shape": list(s), "predicted_batch_gib": round(want / 2**30, 3),
                            "measured_batch_gib": round(got / 2**30, 3), "ratio": round(want / got, 3)})
        out.append({"case": f"embedded-{kind}", "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1),
                    "ratio_to_floor": round(base_s / seconds, 3), "projection_share": round(proj.seconds / seconds, 3),
                    "peak_memory": mem})
    return out


def markdown(doc: dict) -> str:
    lines = [f"# featurize bench ({doc['device']})", "", f"`{doc['command']}`", ""]
    for r in doc["rows"]:
        lines.append("- " + ", ".join(f"{k}={v}" for k, v in r.items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    import sys

    import torch

    a = parse(argv)
    dev = device()
    rows = []
    if "proj7b" not in a.skip and a.proj_layers > 0:
        rows += proj7b(a.proj_layers, a.proj_batch, a.dim, dev)
    if "embedded" not in a.skip:
        rows += embedded(a, dev)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    doc = {"device": name, "torch": torch.__version__, "command": "python -m bench.run featurize " + " ".join(argv),
           "rows": rows}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc), file=sys.stderr)
    return 0
