"""The featurize bench's projection-only case runs (scaled) and keeps every op on one device."""

from __future__ import annotations

import torch

from .dispatch import OneDevice


def test_proj7b_case_runs_scaled_on_cpu():
    from bench.featurize_bench import proj7b

    rows = proj7b(layers=1, batch=2, dim=256, dev=torch.device("cpu"))
    assert [r["case"] for r in rows] == ["proj7b-sjlt", "proj7b-kronecker"]
    assert all(r["finite"] and r["params"] == 4 * 2 * 128 * 4096 for r in rows)


def test_proj7b_case_never_mixes_devices():
    # On meta, a CPU tensor (an accumulator, a table) in the bench's math is flagged here,
    # which is what crashed `make bench` on CUDA hosts before.
    from bench.featurize_bench import proj7b

    with OneDevice():
        proj7b(layers=1, batch=2, dim=256, dev=torch.device("meta"))
