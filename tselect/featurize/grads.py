"""Per-example gradients of LoRA parameters from ONE batched forward/backward.

For a LoRA factor y = x Wᵀ (nn.Linear, x [B, T, in], y [B, T, out]) the gradient of example
b's loss is Σ_t g[b,t] x[b,t]ᵀ with g = ∂loss/∂y: a forward hook keeps x, a hook on y catches
g during backward, and one bmm gives all B gradients [B, out, in]. Backpropagating the SUM of
per-example losses keeps the examples separate, because example b's loss depends only on row
b: with right padding and causal attention no real token ever attends to a pad, so the loss
gradient at padded positions is exactly zero (we also zero x and g there, so activations at
pads can never leak in).

Each example's loss is its own token-mean cross-entropy over its label tokens, so its
gradient equals what `model(ids, labels=labels).loss.backward()` gives for it alone.
Dropout is OFF while featurizing (eval mode, or p = 0 under gradient checkpointing): features
are deterministic and rerunnable.
The LESS reference runs bs=1 in train mode, so LoRA dropout (0.1) perturbs its gradients.

Imports torch and peft at module top: only the featurize stage imports this module, lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from tselect.data.tokenize import IGNORE

OnGrad = Callable[[str, torch.Tensor], None]  # (param name, per-example grad [B, *shape])


def lora_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Qualified module name → LoRA factor Linear (lora_A / lora_B) of every active adapter."""
    from peft.tuners.lora import LoraLayer

    found: dict[str, nn.Linear] = {}
    for mname, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if module.merged:
            raise ValueError(f"LoRA layer {mname} is merged into its base weight; unmerge it first")
        for adapter in module.active_adapters:
            if adapter not in module.lora_A:
                continue
            if adapter in getattr(module, "lora_variant", {}):
                raise ValueError(f"{mname} uses a LoRA variant (e.g. DoRA); only plain LoRA is supported")
            for part in ("lora_A", "lora_B"):
                lin = getattr(module, part)[adapter]
                if type(lin) is not nn.Linear:
                    raise ValueError(f"{mname}.{part}.{adapter} is {type(lin).__name__}; only Linear LoRA is supported")
                found[f"{mname}.{part}.{adapter}"] = lin
    if not found:
        raise ValueError("the model has no active LoRA layers; wrap it with peft.get_peft_model first")
    return found


def lora_param_names(model: nn.Module) -> list[str]:
    """Names of all LoRA factor parameters, in model.named_parameters() order."""
    wanted = {f"{m}.{p}" for m, lin in lora_linears(model).items() for p, _ in lin.named_parameters()}
    return [n for n, _ in model.named_parameters() if n in wanted]


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] token-mean CE over each row's label tokens (position t predicts token t+1), fp32.

    Only label positions are gathered and upcast, so prompt and padding logits never get an
    fp32 copy. A row without label tokens gets loss 0, hence a zero gradient.
    """
    return loss_at(logits[:, :-1], labels[:, 1:])


def predicting_positions(labels: torch.Tensor) -> torch.Tensor:
    """[K] int64, sorted: positions t < T-1 whose next token is a label in some row of the batch.

    The loss reads logits only there, so the vocabulary projection (and its backward) can skip
    every other position: prompts and padding are most of a batch's tokens.
    """
    return (labels[:, 1:] != IGNORE).any(0).nonzero().flatten()


def logits_at_positions(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """[B, K, V] logits at positions pos [K], with gradient. HF causal LMs project only those
    (`logits_to_keep`); a model without the argument gives all T, which are then indexed."""
    try:
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=pos).logits
    except TypeError:  # no logits_to_keep
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # [B, T, V]
    return logits if logits.shape[1] == pos.numel() else logits[:, pos]


def loss_at(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B] token-mean CE of logits [B, K, V] against target [B, K] (IGNORE off-loss), fp32; the
    K positions must hold every label of each row (see predicting_positions)."""
    valid = target != IGNORE  # [B, K]
    picked = logits[valid].float()  # [n_label, V]
    ce = F.cross_entropy(picked, target[valid], reduction="none")  # [n_label]
    rows = torch.arange(target.shape[0], device=target.device)[:, None].expand_as(target)[valid]  # [n_label]
    total = torch.zeros(target.shape[0], dtype=ce.dtype, device=ce.device).index_add(0, rows, ce)
    return total / valid.sum(1).clamp(min=1)


def _check_batch(batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    if ids.dim() != 2 or ids.shape != mask.shape or ids.shape != labels.shape:
        raise ValueError(f"input_ids, attention_mask and labels must share one [B, T] shape, got "
                         f"{tuple(ids.shape)}, {tuple(mask.shape)}, {tuple(labels.shape)}")
    if bool(((mask == 0) & (labels != IGNORE)).any()):
        raise ValueError("labels must be -100 wherever attention_mask is 0 (padding carries no loss)")
    return ids, mask.bool(), labels


def _factor_grads(lin: nn.Linear, x: torch.Tensor, g: torch.Tensor, keep: torch.Tensor) -> dict[str, torch.Tensor]:
    pad = ~keep[..., None]  # [B, T, 1]
    x = x.float().masked_fill(pad, 0.0)  # [B, T, in]
    g = g.float().masked_fill(pad, 0.0)  # [B, T, out]
    out = {"weight": torch.bmm(g.transpose(1, 2), x)}  # [B, out, in] = Σ_t g_t x_tᵀ
    if lin.bias is not None:
        out["bias"] = g.sum(1)  # [B, out]
    return out


@contextmanager
def _one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """One intra-op thread for the per-factor math on CPU, restored afterwards.

    Its ops are small (a [B, out, in] bmm, masked copies, the Adam transform and the projection
    of ~10^4-10^5 entries, ~10 ops x 240 factors per batch at 135M), so with several threads
    each op's cost is the parallel region's fork/join, not its arithmetic: on a loaded 2-core
    machine (bench/factor_threads.py) 240 factors took 5.4-5.9 s with 2 threads against
    0.6-0.9 s with 1, and Adam + SJLT 1.0-2.1 s against 0.05 s, with bit-identical results.
    The forward and backward themselves keep every thread.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def _hooks(linears: dict[str, nn.Linear], keep: torch.Tensor, on_grad: OnGrad,
           recompute: bool = False) -> Iterator[list[torch.Tensor]]:
    """Forward hooks that attach a gradient hook to each LoRA factor's output.

    Each factor's math needs its input x and its output gradient g; they meet in a rendezvous,
    and whichever arrives second triggers the math. Without checkpointing x is kept from the
    forward pass. With (non-reentrant) gradient checkpointing, `recompute=True`: the forward
    pass only attaches the gradient hook and keeps nothing, and x is captured when the layer
    is recomputed during backward (hooks fire again then, inside the autograd engine), so
    the [B, T, in] inputs are never held across the whole forward.
    """
    seen: set[str] = set()
    # What run_with_grad_hooks differentiates: lora_A outputs [B, T, r] only. autograd.grad keeps
    # the gradient of every tensor it is asked for until it returns, so asking for lora_B outputs
    # too would hold a [B, T, out] gradient per factor (2 MB per token at 7B); every lora_B output
    # lies on the path to its lora_A output, so its hook fires anyway.
    outputs: list[torch.Tensor] = []
    xs: dict[str, torch.Tensor] = {}
    gs: dict[str, torch.Tensor] = {}

    def emit(mname: str, lin: nn.Linear, x: torch.Tensor, g: torch.Tensor) -> None:
        with _one_thread_on_cpu(g.device):
            for pname, value in _factor_grads(lin, x, g, keep).items():
                on_grad(f"{mname}.{pname}", value)

    def attach(mname: str, lin: nn.Linear):
        def deliver_x(x: torch.Tensor) -> None:
            if mname in gs:
                emit(mname, lin, x, gs.pop(mname))
            else:
                xs[mname] = x

        def grad_hook(g):  # g [B, T, out]
            if mname in xs:
                emit(mname, lin, xs.pop(mname), g)
            else:
                gs[mname] = g  # the recompute has not reached this layer yet

        def forward_hook(module, inputs, output):
            x = inputs[0].detach()  # [B, T, in]
            if torch._C._current_graph_task_id() != -1:  # inside backward: a checkpoint recompute
                if recompute and mname in seen:
                    deliver_x(x)
                return
            if not output.requires_grad:
                return
            if mname in seen:  # a second call would need its gradients summed before `transform`
                raise ValueError(f"{mname} ran twice in one forward; shared LoRA modules are not supported")
            seen.add(mname)
            if x.dim() != 3 or x.shape[:2] != keep.shape:
                raise ValueError(f"{mname} saw input {tuple(x.shape)}; "
                                 f"expected [B, T, in] with [B, T]={tuple(keep.shape)}")
            if not recompute:
                xs[mname] = x
            output.register_hook(grad_hook)
            if ".lora_A." in f"{mname}.":
                outputs.append(output)

        return forward_hook

    handles = [lin.register_forward_hook(attach(m, lin)) for m, lin in linears.items()]
    try:
        yield outputs
        if gs or (recompute and xs):
            raise RuntimeError(f"per-example hooks left {sorted(gs) or sorted(xs)} unmatched; is gradient "
                               "checkpointing reentrant? use gradient_checkpointing_kwargs={'use_reentrant': False}")
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _dropout_off(model: nn.Module) -> Iterator[None]:
    """p = 0 on every Dropout and attention_dropout, without eval() (which disables checkpointing)."""
    saved = []
    for module in model.modules():
        for attr in ("p", "attention_dropout"):
            if isinstance(getattr(module, attr, None), float) and (attr != "p" or isinstance(module, nn.Dropout)):
                saved.append((module, attr, getattr(module, attr)))
                setattr(module, attr, 0.0)
    try:
        yield
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)


def _checkpointing(model: nn.Module) -> bool:
    """Whether HF gradient checkpointing is enabled (transformers 5 renamed the property)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for attr in ("is_activation_checkpointing", "is_gradient_checkpointing"):
            value = getattr(model, attr, None)
            if value is not None:
                return bool(value)
    return False


def run_with_grad_hooks(model: nn.Module, batch: Mapping[str, torch.Tensor], on_grad: OnGrad) -> torch.Tensor:
    """One forward + backward of Σ per-example losses with dropout off; on_grad(name, [B, *shape])
    fires once per LoRA parameter. Leaves .grad untouched and restores the model's mode and
    requires_grad flags. Returns the per-example losses [B].

    A model with gradient checkpointing enabled (non-reentrant) runs in train mode with every
    dropout probability set to 0, and its LoRA inputs are captured on the recompute pass;
    otherwise the model runs in eval mode."""
    ids, keep, labels = _check_batch(batch)
    linears = lora_linears(model)
    params = [p for lin in linears.values() for p in lin.parameters()]
    flags, was_training = [p.requires_grad for p in params], model.training
    recompute = _checkpointing(model)
    model.train(recompute)  # train mode only so HF checkpointing engages; dropout is zeroed below
    try:
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad(), _dropout_off(model), _hooks(linears, keep, on_grad, recompute) as outputs:
            pos = predicting_positions(labels)  # [K]
            logits = logits_at_positions(model, ids, keep.long(), pos)  # [B, K, V]
            losses = loss_at(logits, labels[:, 1:][:, pos])  # [B]
            # Differentiate w.r.t. the factor OUTPUTS, not the parameters: the hooks see every
            # output gradient, nothing accumulates in .grad, and autograd skips the summed
            # parameter gradients (one [out, in] matmul per factor) that would be thrown away.
            torch.autograd.grad(losses.sum(), outputs, allow_unused=True)
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was_training)
    return losses.detach()


def per_example_grads(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{param name: per-example gradient [B, *param.shape] fp32}, in lora_param_names order.

    batch: right-padded "input_ids", "attention_mask", "labels" [B, T] (labels -100 off-loss).
    """
    grads: dict[str, torch.Tensor] = {}

    def collect(name: str, value: torch.Tensor) -> None:
        grads[name] = value

    run_with_grad_hooks(model, batch, collect)
    return {n: grads[n] for n in lora_param_names(model)}


def projected_grads(model: nn.Module, batch: Mapping[str, torch.Tensor], projector,
                    transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """[B, dim] fp32 projection of each example's (optionally transformed) LoRA gradient.

    Streams: each parameter's [B, *shape] gradient is transformed (e.g. Adam-preconditioned),
    projected and added into the output inside its hook, then freed; the concatenated [B, P]
    gradient never exists. Equals Σ_name projector.project(name, transform(name, g_name)).
    """
    out = torch.zeros(batch["input_ids"].shape[0], projector.dim, dtype=torch.float32,
                      device=batch["input_ids"].device)

    def accumulate(name: str, value: torch.Tensor) -> None:
        if transform is not None:
            value = transform(name, value)
        out.add_(projector.project(name, value))

    run_with_grad_hooks(model, batch, accumulate)
    return out
