"""The per-factor math of LESS featurization with 2 intra-op threads against 1, on synthetic tensors.

    python -m bench.factor_threads

Shapes of the embedded model's 240 LoRA factors (r=8 on q/k/v/o of SmolLM2-135M) at batch 16,
128 tokens: (1) `grads._factor_grads` (masked copies + the per-example bmm) for 4 lora_A-shaped
and 4 lora_B-shaped factors, 30 times over = 240 factors; (2) the LESS Adam transform + SparseJL
projection of 240 per-example gradients [16, *shape]. Each is timed with torch.set_num_threads(2)
and (1), alternately, and compared bit for bit with the 2-thread result. Prints seconds; writes
nothing. Why `grads._one_thread_on_cpu` exists: on a loaded machine, fork/join dominates ops this small.
"""

from __future__ import annotations

import os
import time


def main(argv: list[str] | None = None) -> int:
    import torch
    from torch import nn

    from tselect.featurize.adam import adam_transform
    from tselect.featurize.grads import _factor_grads
    from tselect.featurize.project import SparseJL

    gen = torch.Generator().manual_seed(0)
    keep = torch.ones(16, 128, dtype=torch.bool)
    keep[8:, 100:] = False  # some right padding
    lin_a, lin_b = nn.Linear(576, 8, bias=False), nn.Linear(8, 576, bias=False)
    xa = [torch.randn(16, 128, 576, generator=gen) for _ in range(4)]
    ga = [torch.randn(16, 128, 8, generator=gen) for _ in range(4)]
    xb = [torch.randn(16, 128, 8, generator=gen) for _ in range(4)]
    gb = [torch.randn(16, 128, 576, generator=gen) for _ in range(4)]
    shapes = [(8, 576)] * 120 + [(576, 8)] * 60 + [(192, 8)] * 60
    names = [f"f{i}" for i in range(len(shapes))]
    grads = {n: torch.randn(16, *s, generator=gen) for n, s in zip(names, shapes)}
    m = {n: torch.randn(*s, generator=gen) * 1e-4 for n, s in zip(names, shapes)}
    v = {n: torch.randn(*s, generator=gen).square() * 1e-7 for n, s in zip(names, shapes)}
    transform, projector = adam_transform(m, v), SparseJL(8192)

    def factors() -> list:
        return [_factor_grads(lin, x[i], g[i], keep)["weight"] for _ in range(30) for i in range(4)
                for lin, x, g in ((lin_a, xa, ga), (lin_b, xb, gb))]

    def adam_sjlt() -> list:
        out = torch.zeros(16, 8192)
        for n in names:
            out.add_(projector.project(n, transform(n, grads[n])))
        return [out]

    for label, fn in (("240 factors' masked bmm", factors), ("Adam + SJLT of 240 factors", adam_sjlt)):
        torch.set_num_threads(2)
        ref = fn()
        for rep in range(2):
            for threads in (2, 1):
                torch.set_num_threads(threads)
                t = time.perf_counter()
                got = fn()
                dt = time.perf_counter() - t
                same = all(torch.equal(a, b) for a, b in zip(got, ref))
                print(f"{label}: rep {rep}, {threads} thread(s): {dt:.3f} s, bit-identical {same}, "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
