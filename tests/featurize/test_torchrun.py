"""torchrun hygiene without GPUs: device index and set_device, adapters on the rank's device,
one base model per process, moments freed deterministically, one id on stdout."""

from __future__ import annotations

import weakref

import pytest
import torch

from tselect.cli.stages import resolve_shard


@pytest.fixture
def clean_env(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TSELECT_DEVICE_INDEX", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


@pytest.mark.parametrize("shard", [None, "1/4"])
def test_local_rank_sets_the_device_index_with_and_without_shard(clean_env, shard):
    import os

    clean_env.setenv("RANK", "3")
    clean_env.setenv("WORLD_SIZE", "4")
    clean_env.setenv("LOCAL_RANK", "3")
    assert resolve_shard(shard) == ((3, 4) if shard is None else (13, 16))
    assert os.environ["TSELECT_DEVICE_INDEX"] == "3", "an explicit --shard must not put every rank on cuda:0"


def test_explicit_shard_is_split_among_the_ranks_of_a_launch(clean_env):
    """Every rank of a launch gets the same --shard i/N: between them they cover exactly the
    chunks c = i (mod N), each once."""
    clean_env.setenv("WORLD_SIZE", "3")
    chunks = range(60)
    for i in range(4):
        owned = []
        for r in range(3):
            clean_env.setenv("RANK", str(r))
            clean_env.setenv("LOCAL_RANK", str(r))
            s, n = resolve_shard(f"{i}/4")
            assert n == 12
            owned += [c for c in chunks if c % n == s]
        assert sorted(owned) == [c for c in chunks if c % 4 == i]


def test_default_device_sets_the_current_cuda_device(clean_env):
    from tselect import models

    calls = []
    clean_env.setattr(torch.cuda, "is_available", lambda: True)
    clean_env.setattr(torch.cuda, "device_count", lambda: 4)
    clean_env.setattr(torch.cuda, "set_device", calls.append)
    clean_env.setenv("TSELECT_DEVICE_INDEX", "6")
    assert models.default_device() == "cuda:2"
    assert calls == [2], "peft and the CUDA caching allocator follow the current device"


def test_adapters_load_on_the_base_models_device_in_its_dtype(clean_env, tiny_model_dir, tmp_path):
    import peft

    from tselect.warmup import load_checkpoint

    seen = {}
    real = peft.PeftModel.from_pretrained.__func__

    def spy(cls, base, path, **kw):
        seen.update(kw)
        return real(cls, base, path, **kw)

    clean_env.setattr(peft.PeftModel, "from_pretrained", classmethod(spy))
    ckpt = _first_checkpoint(tiny_model_dir, tmp_path)
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    model, *_ = load_checkpoint(base, ckpt)
    assert seen["torch_device"] == "cpu" and seen["autocast_adapter_dtype"] is False
    assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.bfloat16}, \
        "LoRA stays in the base dtype; fp32 only inside the per-example math"


def _first_checkpoint(tiny_model_dir, tmp_path):
    from tselect.data import load_dataset
    from tselect.warmup import WARMUP_PRESETS, produce_warmup, read_checkpoints
    from tests.conftest import toy_rows
    import json

    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in toy_rows()))
    root = tmp_path / "store"
    wid = produce_warmup(root, str(tiny_model_dir), load_dataset(str(tmp_path / "pool.jsonl")), WARMUP_PRESETS["cpu"])
    return root / "warmup" / wid / read_checkpoints(root / "warmup" / wid)[0]["name"]


def test_one_base_model_per_process_and_moments_freed_without_gc(clean_env, tiny_model_dir, tmp_path):
    import gc

    from tselect.featurize import less
    from tselect.warmup import read_checkpoints
    from tselect import models

    ckpt1 = _first_checkpoint(tiny_model_dir, tmp_path)
    names = [c["name"] for c in read_checkpoints(ckpt1.parent)]
    loads = []
    real = models.load_model
    clean_env.setattr(models, "load_model", lambda *a, **k: loads.append(1) or real(*a, **k))
    shared: dict = {}
    gc.disable()  # nothing may depend on a cycle collection
    try:
        refs = []
        for name in names:
            ckpt = less._Checkpoint(str(tiny_model_dir), ckpt1.parent / name, shared)
            model, tok, m, v, state = ckpt.get()
            refs.append(weakref.ref(next(iter(m.values()))))
            del m, v, model
            ckpt.release()
            assert refs[-1]() is None, f"checkpoint {name}'s Adam moments outlive release()"
        assert len(loads) == 1, f"the base model was loaded {len(loads)} times for {len(names)} checkpoints"
        lora = {n: p.detach().clone() for n, p in shared["model"].named_parameters() if "lora_" in n}
        model_ref = weakref.ref(shared["model"])
    finally:
        gc.enable()
    from safetensors.torch import load_file

    last = load_file(str(ckpt1.parent / names[-1] / "adapter_model.safetensors"))
    keys = {n: n.replace(".weight", ".default.weight") for n in last}
    assert set(keys.values()) == set(lora), "saved adapter and model LoRA names line up"
    assert all(torch.equal(last[n].float(), lora[k].float()) for n, k in keys.items()), "the last adapter is in place"
    assert len(names) > 1 and not torch.equal(
        load_file(str(ckpt1 / "adapter_model.safetensors"))[next(iter(keys))], last[next(iter(keys))])
    assert model_ref() is not None  # held by `shared` until the stage drops it


def test_only_rank_zero_prints_the_id(clean_env, capsys):
    from tselect.cli.app import emit

    clean_env.setenv("WORLD_SIZE", "2")
    clean_env.setenv("RANK", "1")
    emit("featurize-abc")
    clean_env.setenv("RANK", "0")
    emit("featurize-def")
    assert capsys.readouterr().out == "featurize-def\n"


def test_a_shard_from_another_compute_setup_is_refused(tmp_path):
    from tselect.errors import UserError
    from tselect.featurize.compute import claim_setup, compute_setup

    setup = compute_setup()
    assert setup["compute_dtype"] == "float32" and setup["device"] == "cpu"
    assert {"torch", "transformers", "peft"} <= set(setup)
    group = tmp_path / "features.zarr"
    claim_setup(group, setup)
    claim_setup(group, setup)  # the same setup: fine, idempotent
    with pytest.raises(UserError, match="compute_dtype float32 here vs bfloat16"):
        claim_setup(group, {**setup, "compute_dtype": "bfloat16"})
