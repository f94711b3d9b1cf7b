"""LESS warmup on the tiny model: checkpoints per epoch, moments keyed by name, exact lr means."""

from __future__ import annotations

import pytest
import torch

from tselect.data import load_dataset
from tselect.featurize.adam import check_moments
from tselect.featurize.grads import lora_param_names
from tselect.training import TrainConfig
from tselect.warmup import WarmupRecipe, load_checkpoint, produce_warmup, read_checkpoints, sample_indices
from tselect.store import load_tensors, read_json

# 24 toy rows: fraction 0.5 → 12 rows; 3 micro-batches of 4 per epoch, all in one step.
CFG = WarmupRecipe(train=TrainConfig(epochs=2, lora_r=4, lora_alpha=8, lora_dropout=0.1, lr=1e-3, warmup_ratio=0.0,
                                     batch_size=4, effective_batch_size=12, max_length=64,
                                     target_modules=("q_proj", "k_proj", "v_proj", "o_proj")),
                   fraction=0.5, min_examples=8)


@pytest.fixture(scope="module")
def warmup(tiny_model_dir, tmp_path_factory):
    import json

    from tests.conftest import toy_rows

    d = tmp_path_factory.mktemp("warm")
    (d / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in toy_rows()))
    pool = load_dataset(str(d / "pool.jsonl"))
    root = d / "store"
    wid = produce_warmup(root, str(tiny_model_dir), pool, CFG)
    return root, wid, pool


def base(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


def test_sample_size_rule_and_determinism():
    cfg = WarmupRecipe()
    assert len(sample_indices(1000, cfg)) == 50  # 5%
    assert len(sample_indices(100, cfg)) == 32  # floor
    assert sample_indices(10, cfg).tolist() == list(range(10))  # capped at the pool
    a = sample_indices(1000, cfg)
    assert a.tolist() == sorted(set(a.tolist()))  # sorted, no repeats
    assert a.tolist() == sample_indices(1000, cfg).tolist()  # seeded


def test_one_checkpoint_per_epoch_with_exact_lr_means(warmup):
    root, wid, _ = warmup
    ckpts = read_checkpoints(root / "warmup" / wid)
    assert [c["name"] for c in ckpts] == ["ckpt-1", "ckpt-2"]
    # No warmup, linear decay over 2 steps: step 1 uses lr, step 2 uses lr/2.
    assert [c["mean_lr"] for c in ckpts] == pytest.approx([1e-3, 5e-4], rel=1e-9)
    assert read_json(root / "warmup" / wid / "sample.json")["indices"] == sample_indices(24, CFG).tolist()


def test_moments_are_keyed_by_parameter_name(warmup, tiny_model_dir):
    root, wid, _ = warmup
    model, exp_avg, exp_avg_sq, state = load_checkpoint(base(tiny_model_dir), root / "warmup" / wid / "ckpt-1")
    names = lora_param_names(model)
    assert sorted(exp_avg) == sorted(names) and state["step"] == 1
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    check_moments({n: shapes[n] for n in names}, exp_avg, exp_avg_sq)
    # After one AdamW step from zero, m = 0.1·g and v = 0.001·g², so v = 0.1·m² for the SAME tensor.
    # lora_B starts at zero, so every lora_A gradient (hence moment) of step 1 is exactly zero.
    for n in names:
        m, v = exp_avg[n], exp_avg_sq[n]
        assert (m.abs().max() > 0) == ("lora_B" in n), n
        assert torch.allclose(v, 0.1 * m * m, rtol=1e-4, atol=1e-20), n


def test_rerun_is_a_noop_and_training_is_deterministic(warmup, tiny_model_dir, tmp_path):
    root, wid, pool = warmup
    assert produce_warmup(root, str(tiny_model_dir), pool, CFG) == wid
    again = produce_warmup(tmp_path / "other", str(tiny_model_dir), pool, CFG)
    assert again == wid
    for f in ("adapter_model.safetensors", "exp_avg.safetensors", "exp_avg_sq.safetensors"):
        a = load_tensors(root / "warmup" / wid / "ckpt-2" / f)
        b = load_tensors(tmp_path / "other" / "warmup" / wid / "ckpt-2" / f)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f


def test_config_rules_name_the_fields():
    with pytest.raises(ValueError, match="effective_batch_size"):
        TrainConfig(batch_size=3, effective_batch_size=8)
    with pytest.raises(ValueError, match="fraction"):
        WarmupRecipe(fraction=0.0)
    with pytest.raises(ValueError, match="method='full' must be 'lora'"):
        WarmupRecipe(train=TrainConfig(method="full"))


def test_presets_are_train_configs():
    from tselect.warmup import WARMUP_PRESETS

    less, cpu = WARMUP_PRESETS["less"].train, WARMUP_PRESETS["cpu"].train
    assert (less.lora_r, less.lora_alpha, less.lr, less.batch_size, less.effective_batch_size) == (128, 512, 2e-5, 1, 128)
    assert (cpu.lora_r, cpu.lora_alpha, cpu.lr, cpu.batch_size, cpu.effective_batch_size) == (8, 32, 1e-4, 8, 16)
    assert less.epochs == cpu.epochs == 4 and less.lora_dropout == cpu.lora_dropout == 0.1
