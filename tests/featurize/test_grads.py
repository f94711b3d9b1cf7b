"""Batched per-example LoRA gradients must equal a batch-size-1 autograd loop."""

from __future__ import annotations

import pytest
import torch

from tselect.featurize.grads import (lora_linears, lora_param_names, per_example_grads, per_example_loss,
                                     projected_grads, run_with_grad_hooks)
from tselect.featurize.project import SparseJL

from .conftest import padded_batch, row, tiny_lora_model

RTOL = 1e-5


def bs1_grads(model, example: dict) -> dict[str, torch.Tensor]:
    """The reference: HF's own token-mean loss on one unpadded example, loss.backward()."""
    model.eval()
    model.zero_grad(set_to_none=True)
    model(input_ids=example["input_ids"], labels=example["labels"]).loss.backward()
    names = set(lora_param_names(model))
    out = {n: p.grad.detach().clone() for n, p in model.named_parameters() if n in names}
    model.zero_grad(set_to_none=True)
    return out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def test_param_names_cover_every_lora_factor_in_model_order():
    model = tiny_lora_model()
    names = lora_param_names(model)
    order = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert names == order
    assert len(names) == 2 * 2 * 2  # layers × (q, v) × (A, B)


def test_padded_batch_matches_batch_size_one_loop():
    model = tiny_lora_model()
    batch = padded_batch([9, 5, 12, 7], seed=1)
    grads = per_example_grads(model, batch)
    assert list(grads) == lora_param_names(model)
    for b in range(4):
        ref = bs1_grads(model, row(batch, b))
        for name, g in grads.items():
            assert g.shape[1:] == ref[name].shape
            assert ref[name].norm() > 0, f"{name}: reference gradient is zero, the test is vacuous"
            err = rel_err(g[b], ref[name])
            assert err < RTOL, f"example {b} {name}: relative error {err:.2e} vs bs=1 backward"


def test_trailing_padding_needs_no_truncation():
    # The same rows padded to width 12 and to width 20 give the same gradients: rows never
    # need their padding stripped (or re-truncated) before featurization.
    model = tiny_lora_model()
    tight = per_example_grads(model, padded_batch([9, 5, 12], seed=2))
    wide = per_example_grads(model, padded_batch([9, 5, 12], seed=2, width=20))
    for name in tight:
        assert rel_err(wide[name], tight[name]) < RTOL, name


def test_padded_positions_get_exactly_zero_loss_gradient():
    # The premise of batching: with right padding + causal attention no real token attends to a
    # pad, so ∂loss/∂(LoRA output) is exactly 0 at pads even before grads.py masks them.
    model = tiny_lora_model().eval()
    batch = padded_batch([4, 11], seed=3)
    lora_b = dict(model.named_modules())[[n for n in lora_param_names(model) if "lora_B" in n][0][: -len(".weight")]]
    seen = {}

    def keep_grad(module, inputs, output):
        output.register_hook(lambda g: seen.setdefault("g", g))  # returning None keeps the output

    handle = lora_b.register_forward_hook(keep_grad)
    try:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        per_example_loss(logits, batch["labels"]).sum().backward()
    finally:
        handle.remove()
    pads = batch["attention_mask"] == 0
    assert pads.any()
    assert seen["g"][pads].abs().max() == 0
    assert seen["g"][~pads].abs().max() > 0


def test_row_without_label_tokens_has_zero_gradient():
    model = tiny_lora_model()
    batch = padded_batch([6, 8], seed=4)
    batch["labels"][0] = -100
    grads = per_example_grads(model, batch)
    for name, g in grads.items():
        assert g[0].abs().max() == 0, name
        assert g[1].abs().max() > 0, name


def test_dropout_off_and_model_state_restored():
    model = tiny_lora_model(dropout=0.5).train()
    names = lora_param_names(model)
    params = dict(model.named_parameters())
    params[names[0]].requires_grad_(False)
    batch = padded_batch([7, 9], seed=5)
    first = per_example_grads(model, batch)
    second = per_example_grads(model, batch)
    for name in names:  # dropout 0.5 would make two runs differ
        assert torch.equal(first[name], second[name]), name
    assert model.training
    assert not params[names[0]].requires_grad and params[names[1]].requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_losses_are_per_example_token_means():
    model = tiny_lora_model()
    batch = padded_batch([9, 5, 12], seed=6)
    losses = run_with_grad_hooks(model, batch, lambda name, g: None)
    model.eval()  # the reference must run without dropout too
    for b in range(3):
        ex = row(batch, b)
        ref = model(input_ids=ex["input_ids"], labels=ex["labels"]).loss
        assert abs(float(losses[b]) - float(ref)) < 1e-5


def test_projected_grads_stream_equals_projecting_materialized_grads():
    model = tiny_lora_model()
    batch = padded_batch([9, 5, 12, 7], seed=7)
    proj = SparseJL(dim=64, seed=3)
    scale = {n: float(i + 1) for i, n in enumerate(lora_param_names(model))}

    def transform(name, g):  # any per-name map must be applied before projecting
        return g * scale[name]

    streamed = projected_grads(model, batch, proj, transform)
    grads = per_example_grads(model, batch)
    expected = sum(proj.project(n, transform(n, g)) for n, g in grads.items())
    assert streamed.shape == (4, 64) and streamed.dtype == torch.float32
    assert torch.allclose(streamed, expected, rtol=1e-5, atol=1e-7)


def test_labels_on_padding_are_rejected():
    model = tiny_lora_model()
    batch = padded_batch([3, 6], seed=8)
    batch["labels"][0, 5] = 7
    with pytest.raises(ValueError, match="-100"):
        per_example_grads(model, batch)


def test_model_without_lora_is_rejected():
    from transformers import LlamaConfig, LlamaForCausalLM

    base = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(ValueError, match="no active LoRA"):
        lora_param_names(base)


def test_gradient_checkpointing_gives_the_same_per_example_gradients():
    # Checkpointing needs train mode (eval() turns HF checkpointing off); dropout must still be
    # off, and x must be captured on the recompute pass. The LoRA dropout here is 0.1, so a
    # dropout left on would show as a large error.
    model = tiny_lora_model()
    batch = padded_batch([9, 5, 12, 7], seed=1)
    plain = per_example_grads(model, batch)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    calls: dict[str, int] = {}
    was_training = model.training
    lin = next(iter(lora_linears(model).values()))
    h = lin.register_forward_hook(lambda *a: calls.__setitem__("n", calls.get("n", 0) + 1))
    try:
        ckpt = per_example_grads(model, batch)
    finally:
        h.remove()
    assert calls["n"] == 2, "the layer did not run twice: checkpointing never engaged, the test is vacuous"
    assert model.training == was_training, "the model's mode is restored"
    for name, g in plain.items():
        err = rel_err(ckpt[name], g)
        assert err < RTOL, f"{name}: checkpointed per-example gradient differs by {err:.2e} (dropout on? x from the wrong pass?)"


def test_no_summed_parameter_gradient_is_computed():
    # The per-example hooks need only each factor's output gradient; the batch-summed
    # parameter gradient would cost one [out, in] matmul per factor and be thrown away.
    model = tiny_lora_model()
    fired = []
    params = [p for lin in lora_linears(model).values() for p in lin.parameters()]
    handles = [p.register_hook(lambda g: fired.append(g.shape)) for p in params]
    try:
        got = []
        run_with_grad_hooks(model, padded_batch([6, 9], seed=4), lambda n, v: got.append(n))
    finally:
        for h in handles:
            h.remove()
    assert len(got) == len(params), "every factor's per-example gradient still arrives"
    assert fired == [], f"autograd computed {len(fired)} summed LoRA parameter gradients"
    assert all(p.grad is None for p in params)


def test_per_factor_math_runs_on_one_thread_and_threads_come_back():
    # The per-factor ops are tiny: with several CPU threads their cost is fork/join, so the
    # hooks drop to one intra-op thread; the forward/backward and the caller keep theirs,
    # also when a hook raises.
    model, batch = tiny_lora_model(), padded_batch([6, 9], seed=4)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        inside: list[int] = []
        run_with_grad_hooks(model, batch, lambda n, v: inside.append(torch.get_num_threads()))
        assert inside and set(inside) == {1}
        assert torch.get_num_threads() == 2

        def boom(name, value):
            raise RuntimeError("hook failed")

        with pytest.raises(RuntimeError, match="hook failed"):
            run_with_grad_hooks(model, batch, boom)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


class _AllLogits(torch.nn.Module):
    """The same model without `logits_to_keep`: every position goes through the output head."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, input_ids, attention_mask, use_cache):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)


def test_the_head_sees_only_positions_that_predict_a_label_and_gradients_do_not_change():
    model = tiny_lora_model().eval()
    batch = padded_batch([9, 5, 12, 7], prompt=4, seed=8)
    widths = []
    hook = model.get_base_model().lm_head.register_forward_hook(lambda m, i, o: widths.append(i[0].shape[1]))
    try:
        fast = per_example_grads(model, batch)
    finally:
        hook.remove()
    expected = int((batch["labels"][:, 1:] != -100).any(0).sum())
    assert widths == [expected] and expected < batch["input_ids"].shape[1] - 1, (widths, expected)
    full = per_example_grads(_AllLogits(model), batch)
    assert len(full) == len(fast)
    for (name, g), g_full in zip(fast.items(), full.values()):
        assert torch.allclose(g, g_full, rtol=1e-5, atol=1e-7), f"{name}: head on label positions only changed the gradient"
