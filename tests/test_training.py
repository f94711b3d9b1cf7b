"""Fine-tuning on a tiny random Llama: determinism, adapter round-trip, learning, accumulation."""

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from tselect.errors import UserError  # noqa: E402
from tselect.training import (  # noqa: E402
    TrainConfig,
    default_target_modules,
    expected_steps,
    save_adapter,
    train,
)

PAIRS = [("Add 2 and 3.", " 5"), ("What is the capital of France?", " Paris"),
         ("Say hi", " hello there"), ("Color of the sky", " blue"), ("2 times 3", " 6")]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def rows(tok):
    out = []
    for prompt, answer in PAIRS:
        p = tok(prompt)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        out.append({"input_ids": p + a, "labels": [-100] * len(p) + a})
    return out


def fresh(path, head_scale: float = 1.0):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        # The random head (std 0.02) keeps logits near uniform whatever the hidden state, so a
        # LoRA on attention alone cannot move the loss; a sharper head lets it.
        model.lm_head.weight.mul_(head_scale)
    return model


def adapter_tensors(model) -> dict:
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k}


def test_config_validation():
    with pytest.raises(ValueError, match="effective_batch_size=6"):
        TrainConfig(batch_size=4, effective_batch_size=6)
    with pytest.raises(ValueError, match="method='qlora'"):
        TrainConfig(method="qlora")
    with pytest.raises(ValueError, match="warmup_ratio"):
        TrainConfig(warmup_ratio=1.0)
    assert TrainConfig(batch_size=2, effective_batch_size=8).grad_accum == 4


def test_default_targets(tiny_model_dir):
    assert default_target_modules(fresh(tiny_model_dir)) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert default_target_modules(torch.nn.Linear(2, 2)) == "all-linear"


def test_two_runs_are_identical(tiny_model_dir, rows, tok):
    cfg = TrainConfig(lr=1e-2, epochs=2, batch_size=1, effective_batch_size=2, lora_dropout=0.1, seed=3)
    a = train(fresh(tiny_model_dir, 20.0), rows, cfg, tok.pad_token_id)
    b = train(fresh(tiny_model_dir, 20.0), rows, cfg, tok.pad_token_id)
    assert len(a.losses) == expected_steps(len(rows), cfg) == 6  # 5 rows / 2 per step → 3 steps × 2 epochs
    assert a.losses == b.losses
    ta, tb = adapter_tensors(a.model), adapter_tensors(b.model)
    assert ta.keys() == tb.keys() and len(ta) == 16  # 2 layers × q,k,v,o × (A, B)
    assert all(torch.equal(ta[k], tb[k]) for k in ta), "same seed gave different adapters"
    c = train(fresh(tiny_model_dir, 20.0), rows, TrainConfig(**{**cfg.__dict__, "seed": 4}), tok.pad_token_id)
    assert c.losses != a.losses  # the seed reaches init, dropout and order


def test_cost_record_and_schedule(tiny_model_dir, rows, tok):
    cfg = TrainConfig(lr=1e-2, epochs=1, batch_size=1, effective_batch_size=1, warmup_ratio=0.0)
    r = train(fresh(tiny_model_dir), rows, cfg, tok.pad_token_id)
    n = len(rows)
    # linear decay from the peak to 0 over n steps; the lr logged is the one used at that step
    assert r.lrs == pytest.approx([1e-2 * (1 - k / n) for k in range(n)])
    assert r.cost["tokens_seen"] == sum(len(x["input_ids"]) for x in rows)
    assert r.cost["device"] == "cpu" and r.cost["optimizer_steps"] == n
    assert r.cost["trainable_params"] == 3584  # r=8 on q(32→32), k,v(32→16), o(32→32) × 2 layers
    assert r.cost["wall_seconds"] > 0 and r.cost["examples_per_second"] > 0


def test_adapter_round_trip_through_plain_peft(tiny_model_dir, rows, tok, tmp_path):
    from peft import PeftModel

    cfg = TrainConfig(lr=1e-2, epochs=2, batch_size=2, effective_batch_size=2, lora_dropout=0.0)
    trained = train(fresh(tiny_model_dir, 20.0), rows, cfg, tok.pad_token_id).model
    out = save_adapter(trained, tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    loaded = PeftModel.from_pretrained(fresh(tiny_model_dir, 20.0), str(out)).eval()
    x = torch.tensor([rows[1]["input_ids"]])
    with torch.no_grad():
        want, got = trained(input_ids=x).logits, loaded(input_ids=x).logits
        base = fresh(tiny_model_dir, 20.0)(input_ids=x).logits
    assert torch.allclose(want, got, atol=1e-6)
    assert not torch.allclose(want, base, atol=1e-3), "the adapter did not change the model"


def test_save_adapter_rejects_full_model(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="save_full"):
        save_adapter(fresh(tiny_model_dir), tmp_path)


@pytest.mark.parametrize("method, head_scale", [("lora", 20.0), ("full", 1.0)])
def test_loss_decreases_on_memorization(tiny_model_dir, rows, tok, method, head_scale):
    cfg = TrainConfig(method=method, lr=1e-2, epochs=20, batch_size=5, effective_batch_size=5,
                      lora_dropout=0.0, warmup_ratio=0.0)
    losses = train(fresh(tiny_model_dir, head_scale), rows, cfg, tok.pad_token_id).losses
    assert len(losses) == 20
    assert losses[-1] < 0.5 * losses[0], f"{method}: loss went {losses[0]:.3f} → {losses[-1]:.3f}"


def test_accumulation_matches_larger_batch(tiny_model_dir, rows, tok):
    # Rows differ in length, so this also checks that padding and the token-count
    # normalization across micro-batches agree: 2 × batch 1 must equal 1 × batch 2.
    base = dict(lr=1e-2, epochs=2, effective_batch_size=2, lora_dropout=0.0)
    a = train(fresh(tiny_model_dir, 20.0), rows, TrainConfig(batch_size=1, **base), tok.pad_token_id)
    b = train(fresh(tiny_model_dir, 20.0), rows, TrainConfig(batch_size=2, **base), tok.pad_token_id)
    assert a.losses == pytest.approx(b.losses, rel=1e-4)
    ta, tb = adapter_tensors(a.model), adapter_tensors(b.model)
    worst = max(float((ta[k] - tb[k]).abs().max()) for k in ta)
    assert worst < 1e-4, f"accumulated and batched adapters differ by {worst}"


def test_epoch_hook_gives_named_adam_moments(tiny_model_dir, rows, tok):
    seen = []
    cfg = TrainConfig(lr=1e-2, epochs=2, batch_size=2, effective_batch_size=2, lora_dropout=0.0)
    r = train(fresh(tiny_model_dir), rows, cfg, tok.pad_token_id,
              on_epoch=lambda e, model, moments, lr: seen.append((e, moments, lr)))
    per_epoch = expected_steps(len(rows), cfg) // 2  # 3
    assert [e for e, _, _ in seen] == [1, 2]
    for e, moments, lr in seen:
        assert len(moments) == 16 and all("lora_" in name for name in moments)
        assert {m["step"] for m in moments.values()} == {e * per_epoch}
        assert lr == pytest.approx(sum(r.lrs[(e - 1) * per_epoch : e * per_epoch]) / per_epoch)
    name = next(iter(seen[1][1]))
    assert seen[1][1][name]["exp_avg"].shape == dict(r.model.named_parameters())[name].shape
