"""Per-example overhead of LESS featurization on the checkpoint path, timed apart from the forward+backward.

    python -m bench.hook_overhead [--threads 2] [--rows 16] [--dim 8192]

The cached warmup checkpoint of the LESS benches (bench/ckpt_workers.py: the embedded SmolLM2-135M,
LoRA r=8 on q/k/v/o = 240 factor modules, one real AdamW step) is loaded as the featurize stage
loads it (`less._Checkpoint`: frozen adapter, moments by name). One batch of the first --rows
builtin:pool-small rows runs once through `grads.run_with_grad_hooks`, keeping every factor's
per-example gradient [B, *shape]. Then the LESS Adam transform and the SparseJL projection (what
`projected_grads` does inside each hook) are timed over those gradients, twice: the first pass
includes building the hash tables (a fixed cost per process), the second is the per-batch cost.
Prints seconds; writes nothing. A quick check of the per-factor work without repeating a
minute-long backward.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hook_overhead", description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--dim", type=int, default=8192)
    ap.add_argument("--ckpt-data", type=Path, default=Path(__file__).parent / "data" / "less")
    a = ap.parse_args(argv)

    import torch

    from bench.ckpt_workers import ensure_checkpoint, pool_rows
    from tselect.data.tokenize import batches, length_sorted
    from tselect.featurize.adam import adam_transform
    from tselect.featurize.grads import run_with_grad_hooks
    from tselect.featurize.less import _Checkpoint
    from tselect.featurize.project import SparseJL

    torch.set_num_threads(a.threads)
    model, tok, exp_avg, exp_avg_sq, _ = _Checkpoint(None, ensure_checkpoint(a.ckpt_data, a.threads)).get()
    rows = [r for _, r in pool_rows(tok, a.rows, 128)]
    _, ids, mask, labels = next(batches(rows, a.rows, tok.pad_token_id, order=length_sorted(rows)))
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    caught: list = []  # (name, per-example gradient [B, *shape])
    t0 = time.perf_counter()
    run_with_grad_hooks(model, batch, lambda name, g: caught.append((name, g)))
    fwd_bwd = time.perf_counter() - t0
    projector, transform = SparseJL(a.dim), adam_transform(exp_avg, exp_avg_sq)

    def one_pass() -> float:
        out = torch.zeros(a.rows, a.dim)
        t = time.perf_counter()
        for name, g in caught:
            out.add_(projector.project(name, transform(name, g)))
        return time.perf_counter() - t

    first, second = one_pass(), one_pass()
    t = time.perf_counter()
    for name, g in caught:
        transform(name, g)
    adam = time.perf_counter() - t
    print(f"batch {tuple(ids.shape)}, {len(caught)} factors, threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"forward+backward with per-example gradients (bmm): {fwd_bwd:.2f} s")
    print(f"Adam + SJLT, first pass (hash tables built): {first:.3f} s; per batch: {second:.3f} s "
          f"(Adam alone {adam:.3f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
