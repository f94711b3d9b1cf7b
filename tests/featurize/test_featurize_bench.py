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


def test_cpu_peak_is_the_most_bytes_alive_at_once():
    # The bench's CPU "measured peak": allocations net of frees in time order, from the
    # profiler's memory timeline. Exact on known allocations; what existed before is not counted.
    from bench.featurize_bench import cpu_peak_bytes

    before = torch.ones(10_000)  # 40 kB alive throughout: not part of the call's peak

    def fn():
        a = torch.ones(1000)  # 4 kB
        b = torch.ones(2000)  # 8 kB -> 12 kB alive
        del a
        c = torch.ones(2500)  # 10 kB -> 18 kB alive
        del b, c
        d = torch.ones(3000)  # 12 kB alone
        d.add_(before[:3000])  # in place: no allocation

    assert cpu_peak_bytes(fn) == 18_000
