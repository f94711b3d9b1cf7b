"""Per-example overhead of LESS featurization, timed apart from the forward+backward.

    python -m bench.hook_overhead [--threads 2] [--rows 16] [--dim 8192]

One batch of the embedded SmolLM2-135M with the cpu LoRA preset (r=8 on q/k/v/o, 240 factor
modules; `bench.less_bench.lora_model`: seeded lora_B and synthetic moments by name) runs once
through `grads.run_with_grad_hooks`, keeping every factor's per-example gradient [B, *shape].
Then the LESS Adam transform and the SparseJL projection (what `projected_grads` does inside
each hook) are timed over those gradients, twice: the first pass includes building the hash
tables (a fixed cost per process), the second is the per-batch cost. Prints seconds; writes
nothing. A quick check of the per-factor work without repeating a minute-long backward.
"""

from __future__ import annotations

import argparse
import os
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hook_overhead", description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--dim", type=int, default=8192)
    a = ap.parse_args(argv)

    import torch

    from bench.less_bench import encoded_sample, lora_model, make_batches
    from tselect.featurize.adam import adam_transform
    from tselect.featurize.grads import run_with_grad_hooks
    from tselect.featurize.project import SparseJL

    model, tok, exp_avg, exp_avg_sq = lora_model(a.threads)
    batch = make_batches(encoded_sample(tok, a.rows, 128), a.rows, tok.pad_token_id)[0]
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
    print(f"batch {tuple(batch['input_ids'].shape)}, {len(caught)} factors, threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"forward+backward with per-example gradients (bmm): {fwd_bwd:.2f} s")
    print(f"Adam + SJLT, first pass (hash tables built): {first:.3f} s; per batch: {second:.3f} s "
          f"(Adam alone {adam:.3f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
