"""`tselect finetune --dry-run` and the memory options: the plan's arithmetic and its CLI."""

import json

import pytest

pytest.importorskip("torch")

from tests.test_cli_e2e import tselect  # noqa: E402
from tselect.featurize.plan import DEVICES  # noqa: E402
from tselect.finetune.plan import plan_finetune  # noqa: E402

# Llama-2-7B's published config.json fields (no weights needed: the plan builds one layer on meta)
LLAMA2_7B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
             "intermediate_size": 11008, "num_attention_heads": 32, "num_hidden_layers": 32,
             "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096}


def _plan(method, gpus, fsdp, ckpt=False, batch=1):
    return plan_finetune(LLAMA2_7B, method, 8, (), batch, 2048, 12_000_000, DEVICES["h100"], gpus, ckpt, fsdp)


def test_full_7b_needs_fsdp_and_lora_fits_one_gpu():
    one = _plan("full", 1, False)
    assert one.params == 6_738_415_616  # Llama-2-7B's parameter count
    assert one.static_bytes == 16 * one.params  # fp32 weights + grads + Adam m, v: the issue's ~108 GB
    assert "DOES NOT FIT" in one.render()
    eight = _plan("full", 8, True)
    assert eight.static_bytes < one.static_bytes / 7 and "fits" in eight.render()
    lora = _plan("lora", 8, False)
    assert lora.trainable == 32 * 4 * 8 * (4096 + 4096)  # r=8 on q/k/v/o: A [8, in] + B [out, 8]
    assert lora.static_bytes == 2 * lora.params + 16 * lora.trainable  # bf16 base + fp32 LoRA state


def test_checkpointing_trades_activation_memory_for_time():
    plain, ckpt = _plan("lora", 8, False, False, 4), _plan("lora", 8, False, True, 4)
    assert ckpt.activation_bytes < plain.activation_bytes / 2
    assert ckpt.seconds == pytest.approx(plain.seconds * 6 / 4)  # one more forward: 4N -> 6N per token
    assert _plan("full", 8, True).seconds == pytest.approx(12_000_000 * 8 * 6_738_415_616 / (8 * 989e12 * 0.40))


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, store, toy_data, tiny_model_dir):
    pool, _ = toy_data
    proc = tselect("finetune", "--selection", "full", "--pool", pool, "--budget", "8", "--model", tiny_model_dir,
                   "--method", "full", "--dry-run", "--plan-device", "h100", "--gpus", "8", store=store)
    assert proc.stdout == ""  # no id: nothing ran
    assert "rows 8 x 2 epochs" in proc.stderr and "full on 8 x H100 80GB (fsdp)" in proc.stderr
    assert not store.exists() or not list(store.glob("finetune/*"))


def test_eight_bit_optimizer_without_bitsandbytes_is_one_line(tmp_path, store, toy_data, tiny_model_dir):
    try:
        import bitsandbytes  # noqa: F401
        pytest.skip("bitsandbytes is installed here")
    except ImportError:
        pass
    pool, _ = toy_data
    proc = tselect("finetune", "--selection", "full", "--pool", pool, "--budget", "8", "--model", tiny_model_dir,
                   "--optim", "adamw_8bit", store=store, check=False)
    assert proc.returncode == 2 and "error: --optim adamw_8bit needs bitsandbytes" in proc.stderr
    assert not list(store.glob("finetune/*.part")) and not list(store.glob("finetune/finetune-*[!k]"))


def test_gradient_checkpointing_trains_the_same_adapter(tmp_path, toy_data, tiny_model_dir):
    """Recomputing activations changes memory, not math: same id, same LoRA weights (dropout 0)."""
    import torch
    from safetensors.torch import load_file

    from tselect.finetune import FinetuneConfig, run
    from tselect.runtime import Runtime
    from tselect.training import TrainConfig

    pool, _ = toy_data
    train = TrainConfig(lr=1e-2, epochs=1, batch_size=2, effective_batch_size=2, max_length=64, lora_dropout=0.0)
    out = {}
    for ckpt in (False, True):
        cfg = FinetuneConfig(selection="full", pool=str(pool), budget=16, model=str(tiny_model_dir), train=train,
                             runtime=Runtime(gradient_checkpointing=ckpt))
        store = tmp_path / f"s{ckpt}"
        aid = run(cfg, store)
        record = json.loads((store / "finetune" / aid / "manifest.json").read_text())["record"]
        assert record["cost"]["gradient_checkpointing"] is ckpt
        out[ckpt] = aid, load_file(str(store / "finetune" / aid / "adapter" / "adapter_model.safetensors"))
    assert out[False][0] == out[True][0]
    for k, v in out[False][1].items():
        torch.testing.assert_close(out[True][1][k], v, rtol=1e-5, atol=1e-6)
