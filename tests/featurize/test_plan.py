"""The featurize planner: memory model vs measured saved activations, budgets, 7B on meta, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tselect.featurize.batching import row_groups, run_split
from tselect.featurize.plan import DEVICES, MFU, SAFETY, memory_model, plan, token_batches

LLAMA2_7B = dict(model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                 max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False)
QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")
SMALL = dict(model_type="llama", vocab_size=512, hidden_size=256, intermediate_size=688, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def mm7b():
    return memory_model(LLAMA2_7B, 128, QKVO, "bfloat16", "sjlt", 8192)


def measured_saved_bytes(dtype: str, batch: int, tokens: int) -> int:
    """Bytes autograd saves in a real CPU forward of the SMALL Llama + LoRA (vocab-sized tensors excluded)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from tselect.featurize.grads import lora_linears

    cfg = LlamaConfig(**{k: v for k, v in SMALL.items() if k != "model_type"}, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM(cfg).to(getattr(torch, dtype)),  # LoRA in the base dtype, as featurize
                           LoraConfig(r=16, lora_alpha=32, target_modules=list(QKVO)), autocast_adapter_dtype=False).eval()
    for lin in lora_linears(model).values():
        lin.requires_grad_(True)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params and SMALL["vocab_size"] not in t.shape:
            seen[s.data_ptr()] = s.nbytes()
        return t

    ids = torch.randint(1, SMALL["vocab_size"], (batch, tokens), generator=torch.Generator().manual_seed(1))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    return sum(seen.values())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_memory_model_matches_measured_saved_activations(dtype):
    # bf16: the dtype featurize runs in on GPUs (base and LoRA in bf16, no fp32 input copies).
    mm = memory_model(SMALL, 16, QKVO, dtype)
    for batch, tokens in ((2, 96), (3, 160)):
        ratio = mm.saved_bytes(batch, tokens) / measured_saved_bytes(dtype, batch, tokens)
        # The model may over-predict (it expands GQA k/v as sdpa does with a padding mask) but
        # must never under-predict: an under-estimate is an OOM on the GPU.
        assert 1.0 <= ratio < 1.15, (
            f"{dtype} B={batch} T={tokens}: predicted/measured saved bytes = {ratio:.3f}; a dtype "
            "(peft fp32 LoRA copies?) or an activation the stand-in attention does not save is off")


def test_7b_on_meta_never_exceeds_the_budget(mm7b):
    device = DEVICES["h100"]
    budget = device.memory_bytes * SAFETY
    lengths = np.random.default_rng(0).integers(16, 2049, size=3000).tolist()
    p = plan(mm7b, lengths, 4, device, max_length=2048)
    assert p.peak_bytes <= budget
    for idx in token_batches(lengths, p.max_tokens):
        assert mm7b.peak_bytes(len(idx), max(lengths[i] for i in idx)) <= budget
    rows = p.max_tokens // 2048
    assert rows >= 1 and mm7b.peak_bytes(rows + 1, 2048) > budget, "the budget is the largest that fits"
    # The configuration the review measured at ~130 GB must not fit 80 GB.
    assert mm7b.peak_bytes(8, 2048) > device.memory_bytes
    per_token_layer_hidden = mm7b.layer_bytes_per_token / 4096
    # ≈52 B with peft's fp32 LoRA-input copies, ≈36 B without (bf16 LoRA, as featurize loads it)
    assert 30 < per_token_layer_hidden < 40, f"{per_token_layer_hidden:.1f} B per token·hidden·layer"


def test_7b_job_estimate_is_near_the_6NT_floor(mm7b):
    p = plan(mm7b, [2048] * 200_000, 4, DEVICES["h100"], max_length=2048)
    floor_h = 6 * 6.738e9 * 2048 * 200_000 * 4 / (MFU * 989e12) / 3600
    hours = p.seconds / 3600
    assert floor_h <= hours <= 1.5 * floor_h, f"{hours:.1f} H100-h vs floor {floor_h:.1f}"
    assert p.checkpoints == 4 and p.rows == 200_000


def test_one_row_that_cannot_fit_is_a_user_error(mm7b):
    from tselect.errors import UserError

    tiny = DEVICES["h100"].__class__("tiny", 20 * 10**9, 1e12)
    with pytest.raises(UserError, match="lower --max-length"):
        plan(mm7b, [2048], 1, tiny, max_length=2048)


def test_token_batches_cover_every_row_within_the_budget():
    lengths = np.random.default_rng(1).integers(1, 300, size=500).tolist()
    groups = token_batches(lengths, 1000, max_rows=16)
    assert sorted(i for g in groups for i in g) == list(range(500))
    for g in groups:
        assert len(g) <= 16
        assert len(g) == 1 or len(g) * max(lengths[i] for i in g) <= 1000
    assert row_groups(lengths, 16, None) == [sorted(range(500), key=lambda i: (lengths[i], i))[s:s + 16]
                                            for s in range(0, 500, 16)]


def test_oom_splits_in_halves_and_gives_the_same_rows():
    calls = []

    def fn(idx):
        calls.append(len(idx))
        if len(idx) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return np.array([[i, 2 * i] for i in idx], dtype=np.float32)

    out, done = np.zeros((7, 2), np.float32), []
    run_split(fn, list(range(7)), out, done.append)
    assert np.array_equal(out, np.array([[i, 2 * i] for i in range(7)], np.float32))
    assert sum(done) == 7 and calls[0] == 7 and max(calls[1:]) <= 4


def test_oom_on_a_single_row_is_a_user_error_and_other_errors_pass_through():
    from tselect.errors import UserError

    def oom(idx):
        raise torch.cuda.OutOfMemoryError("fake")

    with pytest.raises(UserError, match="runs out of device memory on its own"):
        run_split(oom, [0, 1], np.zeros((2, 1)))

    def bug(idx):
        raise RuntimeError("a real bug")

    with pytest.raises(RuntimeError, match="a real bug"):
        run_split(bug, [0, 1], np.zeros((2, 1)))


def test_gradient_rows_with_a_token_budget_and_fake_oom_match_plain_batches(monkeypatch):
    from tselect.data.tokenize import EncodedRow
    from tselect.featurize import grads, less
    from tselect.featurize.project import SparseJL

    from .conftest import tiny_lora_model

    model = tiny_lora_model()
    gen = torch.Generator().manual_seed(3)
    rows = []
    for n in (5, 17, 9, 30, 12, 8, 25, 6):
        ids = torch.randint(1, 64, (n,), generator=gen).tolist()
        rows.append(EncodedRow(ids, [-100] * 2 + ids[2:]))
    proj = SparseJL(64, seed=0)
    plain = less.gradient_rows(model, rows, 0, 4, proj)
    real, sizes = grads.projected_grads, []

    def flaky(model, batch, *a, **k):  # a "GPU" that cannot hold more than 40 padded tokens
        sizes.append(tuple(batch["input_ids"].shape))
        if batch["input_ids"].numel() > 40:
            raise torch.cuda.OutOfMemoryError("fake")
        return real(model, batch, *a, **k)

    monkeypatch.setattr(grads, "projected_grads", flaky)
    budgeted = less.gradient_rows(model, rows, 0, 4, proj, max_tokens=64)
    assert any(b * t > 40 for b, t in sizes), "the fake OOM never fired; the test is vacuous"
    assert all(b * t <= 64 or b == 1 for b, t in sizes)
    np.testing.assert_allclose(budgeted, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch, tokens", [(2, 64), (4, 128)])
def test_predicted_batch_peak_matches_the_measured_cpu_peak(batch, tokens):
    # What one batch allocates on top of the loaded model (activations, loss tensors, hook
    # temporaries), measured from the profiler's memory timeline of a real projected_grads call.
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from bench.featurize_bench import cpu_peak_bytes
    from tselect.featurize.adam import adam_transform
    from tselect.featurize.grads import lora_param_names, projected_grads
    from tselect.featurize.project import SparseJL

    mha = {**SMALL, "num_key_value_heads": 4}  # no GQA: the memory model is exact there, not conservative
    cfg = LlamaConfig(**{k: v for k, v in mha.items() if k != "model_type"}, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=16, lora_alpha=32, target_modules=list(QKVO))).eval()
    params = dict(model.named_parameters())
    moments = {n: torch.rand(params[n].shape) for n in lora_param_names(model)}
    ids = torch.randint(1, SMALL["vocab_size"], (batch, tokens), generator=torch.Generator().manual_seed(2))
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    proj, transform = SparseJL(64), adam_transform(moments, moments)
    projected_grads(model, b, proj, transform)  # builds the projection tables (static, not per batch)
    got = cpu_peak_bytes(lambda: projected_grads(model, b, proj, transform))
    mm = memory_model(mha, 16, QKVO, "float32")
    ratio = (mm.peak_bytes(batch, tokens) - mm.static_bytes) / got
    assert 1.0 <= ratio < 1.15, f"predicted/measured per-batch peak {ratio:.3f} at B={batch}, T={tokens}"


def test_a_row_that_does_not_fit_plans_gradient_checkpointing(mm7b):
    from tselect.featurize.plan import checkpointed, choose_budget

    roomy, plain = choose_budget(mm7b, 67e9, 2048, 4096, 2)
    assert not plain and roomy >= 2048
    static = mm7b.static_bytes
    tight = static + 0.8 * (mm7b.peak_bytes(1, 2048) - static)  # one full row no longer fits
    tokens, ckpt = choose_budget(mm7b, tight, 2048, 4096, 2)
    assert ckpt and tokens >= 2048
    assert checkpointed(mm7b, 4096, 2).peak_bytes(tokens // 2048, 2048) <= tight
    dynamic = checkpointed(mm7b, 4096, 2).peak_bytes(1, 2048) - static
    assert dynamic < 0.5 * (mm7b.peak_bytes(1, 2048) - static), "checkpointing keeps one layer's activations"


def test_the_peak_for_few_label_positions_counts_their_loss_tensors_only():
    # The vocab-sized loss tensors exist for LABEL positions only (a pool row's prompt carries
    # none): the peak predicted from the batch's label count matches the measured one, and the
    # worst case (every position a label, what the planner budgets for) is an upper bound.
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from bench.featurize_bench import cpu_peak_bytes
    from tselect.featurize.adam import adam_transform
    from tselect.featurize.grads import lora_param_names, projected_grads
    from tselect.featurize.project import SparseJL

    big_vocab = {**SMALL, "num_key_value_heads": 4, "vocab_size": 8192}
    cfg = LlamaConfig(**{k: v for k, v in big_vocab.items() if k != "model_type"}, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=16, lora_alpha=32, target_modules=list(QKVO))).eval()
    params = dict(model.named_parameters())
    moments = {n: torch.rand(params[n].shape) for n in lora_param_names(model)}
    ids = torch.randint(1, 8192, (2, 64), generator=torch.Generator().manual_seed(2))
    labels = torch.full_like(ids, -100)
    labels[:, 48:] = ids[:, 48:]  # the last quarter: the response
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    proj, transform = SparseJL(64), adam_transform(moments, moments)
    projected_grads(model, b, proj, transform)
    got = cpu_peak_bytes(lambda: projected_grads(model, b, proj, transform))
    mm = memory_model(big_vocab, 16, QKVO, "float32")
    n_labels = int((labels[:, 1:] != -100).sum())
    heads = int((labels[:, 1:] != -100).any(0).sum())  # the output head runs only at these positions
    ratio = (mm.peak_bytes(2, 64, n_labels, heads) - mm.static_bytes) / got
    worst = (mm.peak_bytes(2, 64) - mm.static_bytes) / got
    assert 1.0 <= ratio < 1.15, f"predicted/measured per-batch peak {ratio:.3f} with {n_labels} label positions"
    assert worst - ratio > 0.1, f"the label term is too small to matter here ({worst:.3f} vs {ratio:.3f})"
