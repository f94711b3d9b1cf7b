"""A featurize plan before any GPU work: memory per batch shape, token budget, batches, time.

The memory model is built from the model CONFIG alone: one decoder layer of the LoRA-wrapped
model runs forward on the `meta` device (no weights, no FLOPs) under saved_tensors_hooks, which
records exactly the tensors autograd keeps for that architecture, dtype and peft version
(e.g. peft's fp32 copies of LoRA inputs). Attention is swapped for a stand-in that saves what
flash/memory-efficient SDPA saves (q, k, v, out in the model dtype + an fp32 log-sum-exp),
because meta's SDPA falls back to the math kernel, which saves a [H, T, T] matrix real
kernels never build. The vocab-sized loss tensors are counted analytically (worst case: every
position is a label). Peak = static (weights, LoRA, Adam moments, projector state)
+ tokens × per-token bytes + the largest hook's per-example temporaries.

Imports torch/transformers/peft inside functions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

GIB = 1 << 30
SAFETY = 0.9  # plan to 90% of device memory: allocator fragmentation, CUDA context, workspaces
MFU = 0.40  # model FLOPs utilisation assumed for time estimates on GPUs


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    memory_bytes: int
    peak_flops: float  # dense bf16 FLOP/s (GPUs); measured fp32 matmul rate (CPU)


DEVICES: dict[str, DeviceSpec] = {  # vendor datasheet numbers, dense bf16
    "h100": DeviceSpec("H100 80GB", 80 * 10**9, 989e12),
    "h200": DeviceSpec("H200 141GB", 141 * 10**9, 989e12),
    "a100": DeviceSpec("A100 80GB", 80 * 10**9, 312e12),
    "l40s": DeviceSpec("L40S 48GB", 48 * 10**9, 362e12),
}


@dataclass(frozen=True)
class MemoryModel:
    """Bytes as a function of batch shape (B rows padded to T tokens)."""

    static_bytes: int  # weights + LoRA + Adam moments + projector state
    layer_bytes_per_token: float  # autograd-saved bytes per token per decoder layer (meta-measured)
    n_layers: int
    head_bytes_per_token: float  # final norm input + logits/CE tensors and their grads
    hook_bytes_per_token: float  # largest hook: fp32 masked copies of x and g
    hook_bytes_per_example: float  # largest hook: [out, in] fp32 grad + Adam/projection temporaries
    base_params: int  # N, for FLOPs
    lora_params: int  # P
    label_bytes_per_token: float = 0.0  # the part of head_bytes_per_token that only label positions need
    vocab_bytes_per_token: float = 0.0  # its vocab-sized part: only positions the output head runs at need it

    def saved_bytes(self, batch: int, tokens: int) -> float:
        return batch * tokens * self.layer_bytes_per_token * self.n_layers

    def peak_bytes(self, batch: int, tokens: int, labels: int | None = None, positions: int | None = None) -> float:
        """Peak for B rows padded to T tokens, `labels` of the B·T positions carrying a label and
        the output head run at `positions` of each row's T (featurize runs it only where some
        row of the batch predicts a label). None: every position, the worst case the planner
        budgets for."""
        per_token = self.layer_bytes_per_token * self.n_layers + self.head_bytes_per_token + self.hook_bytes_per_token
        unlabelled = 0 if labels is None else batch * tokens - labels
        headless = 0 if positions is None else batch * (tokens - positions)  # no logits, no label
        return (self.static_bytes + batch * tokens * per_token - unlabelled * self.label_bytes_per_token
                - headless * (self.vocab_bytes_per_token - self.label_bytes_per_token)
                + batch * self.hook_bytes_per_example)

    def max_tokens(self, budget: float, max_length: int) -> int:
        """Largest B·T (T = max_length) whose peak fits `budget`; 0 if one row does not fit."""
        b = 0
        while self.peak_bytes(b + 1, max_length) <= budget:
            b += 1
            if b > 1 << 20:
                break
        return b * max_length


def _stand_in_attention():
    """An attention function saving what flash / mem-efficient SDPA saves, computing nothing."""
    import torch

    class _Flashlike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v):  # q [B, H, T, D], k/v [B, H, T, D] (GQA expanded, as sdpa does)
            out = torch.empty_like(q)
            lse = q.new_empty(q.shape[:3], dtype=torch.float32)  # [B, H, T]
            ctx.save_for_backward(q, k, v, out, lse)
            return out

        @staticmethod
        def backward(ctx, grad):  # never called: planning runs forward only
            raise NotImplementedError

    def attention(module, q, k, v, attention_mask, **kwargs):
        rep = q.shape[1] // k.shape[1]
        if rep > 1:
            k, v = (t.repeat_interleave(rep, dim=1) for t in (k, v))
        return _Flashlike.apply(q, k, v).transpose(1, 2).contiguous(), None

    return attention


def meta_lora_model(config: dict, lora_r: int, targets: tuple[str, ...], dtype: str, fp32_lora: bool = False,
                    dropout: float = 0.0):
    """The peft-wrapped causal LM built from a config dict on `meta` (no weights).

    fp32_lora: peft's default upcast (warmup training); featurize keeps LoRA in the base dtype."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AttentionInterface, AutoConfig, AutoModelForCausalLM

    AttentionInterface.register("tselect_plan", _stand_in_attention())
    cfg = AutoConfig.for_model(**{k: v for k, v in config.items() if k not in ("torch_dtype", "dtype")})
    cfg._attn_implementation = "tselect_plan"
    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(cfg).to(getattr(torch, dtype))
    lora = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules=list(targets), bias="none", lora_dropout=dropout)
    return get_peft_model(base, lora, autocast_adapter_dtype=fp32_lora)


def _layer_saved_bytes(model, tokens: int) -> float:
    """Autograd-saved bytes of decoder layer 0 for one row of `tokens` tokens, on meta."""
    import torch

    from tselect.featurize.grads import lora_linears

    inner = model.get_base_model().model
    for lin in lora_linears(model).values():
        lin.requires_grad_(True)
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s._cdata not in params:  # dedupe by storage: views of one buffer count once
            seen[s._cdata] = s.nbytes()
        return t

    dtype = inner.embed_tokens.weight.dtype
    h = torch.empty(1, tokens, model.config.hidden_size, dtype=dtype, device="meta", requires_grad=True)
    pos = torch.arange(tokens, device="meta")[None]
    emb = inner.rotary_emb(h, pos)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        inner.layers[0](h, attention_mask=None, position_ids=pos, position_embeddings=emb)
    return float(sum(seen.values()))


def layer_bytes_per_token(config: dict, lora_r: int, targets: tuple[str, ...], dtype: str,
                          fp32_lora: bool = False, dropout: float = 0.0):
    """(one-layer meta model, autograd-saved bytes per token of a decoder layer).

    Layers are alike, so one is built; train mode when dropout > 0 (its masks are saved too)."""
    with warnings.catch_warnings():  # transformers' deprecation chatter from peft's wrapper
        warnings.simplefilter("ignore", FutureWarning)
        model = meta_lora_model({**config, "num_hidden_layers": 1}, lora_r, targets, dtype, fp32_lora, dropout)
    model.train(dropout > 0)
    t1, t2 = 64, 128
    s1, s2 = _layer_saved_bytes(model, t1), _layer_saved_bytes(model, t2)
    return model, max(s2 - s1, 0) / (t2 - t1)  # linear part; stand-in attention has no T² term


def memory_model(config: dict, lora_r: int, targets: tuple[str, ...], dtype: str = "bfloat16",
                 projection: str = "sjlt", dim: int = 8192) -> MemoryModel:
    """MemoryModel for a causal-LM config dict (e.g. config.json) with LoRA r on `targets`."""
    import torch

    from tselect.featurize.project import kron_split

    n_layers = int(config["num_hidden_layers"])
    model, per_token = layer_bytes_per_token(config, lora_r, targets, dtype)
    factors, lora, base, wbytes = model_sizes(model, n_layers)
    proj = {"sjlt": 12 * lora,  # int64 bucket + fp32 sign per coordinate
            "kronecker": 4 * sum(kron_split(dim, o, i)[0] * o + kron_split(dim, o, i)[1] * i for o, i in factors),
            "rademacher": 4 * lora * dim}[projection]
    static = wbytes + 2 * 4 * lora + proj  # Adam m, v fp32 on device
    el = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    o, i = max(factors, key=lambda f: f[0] * f[1])
    hook_tok = 4 * (max(o for o, _ in factors) + max(i for _, i in factors))
    hook_ex = 4 * o * i * 5  # grad, m', v', Γ, projection input/temporary
    return MemoryModel(int(static), per_token, n_layers, float(head_bytes_per_token(config, el)), float(hook_tok),
                       float(hook_ex), int(base), int(lora), float(label_bytes_per_token(config, el)),
                       float(vocab_bytes_per_token(config, el)))


def model_sizes(model, n_layers: int) -> tuple[list[tuple[int, int]], int, int, int]:
    """(LoRA factor shapes [(out, in)], LoRA params, base params, weight bytes) of the full model
    from its one-layer meta build: decoder-layer parameters count n_layers times."""
    from tselect.featurize.grads import lora_linears

    factors = [tuple(lin.weight.shape) for lin in lora_linears(model).values()] * n_layers

    def count(params, size=False):
        return sum(p.numel() * (p.element_size() if size else 1) * (n_layers if ".layers." in n else 1)
                   for n, p in params)

    base = count((n, p) for n, p in model.named_parameters() if "lora_" not in n)
    return factors, sum(o * i for o, i in factors), base, count(model.named_parameters(), size=True)


def head_bytes_per_token(config: dict, el: int) -> int:
    """Per-token bytes beyond the decoder layers' saved activations, at the start of backward,
    with every position a label (the worst case; label_bytes_per_token is the label part)."""
    hidden = int(config["hidden_size"])
    # Loss tensors per label token: logits (model dtype) and the saved fp32 log-softmax live
    # through backward start; log-softmax backward then holds its output grad and input grad
    # (fp32) at once: el + 3·4 bytes per vocab entry at the peak. Plus the final norm's fp32 input.
    # And the backward working set of the layer being differentiated (MLP activation grads):
    # measured on CPU at about one fp32 [intermediate] vector per token.
    inter = int(config.get("intermediate_size") or 4 * hidden)
    return vocab_bytes_per_token(config, el) + 4 * hidden + 4 * inter


def vocab_bytes_per_token(config: dict, el: int) -> int:
    """The vocab-sized part of head_bytes_per_token: only positions the output head runs at hold it."""
    return int(config["vocab_size"]) * (el + 3 * 4)


def label_bytes_per_token(config: dict, el: int) -> int:
    """The part of head_bytes_per_token that a position WITHOUT a label does not need: one fp32
    vocab vector (the loss math runs on label positions only; measured on CPU in fp32, the peak
    grows by 4.3-4.4 bytes per vocab entry per label position, at B x T = 2 x 64 and 4 x 128).
    Every position still holds its logits and their gradient."""
    return int(config["vocab_size"]) * 4


@dataclass(frozen=True)
class Plan:
    device: DeviceSpec
    rows: int
    tokens: int  # padded tokens over all batches of one checkpoint
    batches: int
    max_tokens: int
    peak_bytes: float  # largest batch's predicted peak
    checkpoints: int
    seconds: float  # whole job (all checkpoints) on one device
    floor_seconds: float  # 6·N·T at MFU over the same unpadded tokens

    def render(self, ranks: int = 1) -> str:
        h = self.seconds / 3600
        return "\n".join([
            f"plan for {self.device.name} ({self.device.memory_bytes / 1e9:.0f} GB, budget {SAFETY:.0%}):",
            f"  rows {self.rows:,} x {self.checkpoints} checkpoints, {self.tokens:,} padded tokens per checkpoint",
            f"  token budget {self.max_tokens:,} per batch -> {self.batches:,} batches per checkpoint",
            f"  predicted peak {self.peak_bytes / GIB:.1f} GiB per device "
            f"(of {self.device.memory_bytes * SAFETY / GIB:.1f} GiB usable)",
            f"  estimate {h:,.1f} device-hours ({h / ranks:,.2f} h wall on {ranks}); floor 6NT at {MFU:.0%} MFU: "
            f"{self.floor_seconds / 3600:,.1f} h",
        ])


def token_batches(lengths: list[int], max_tokens: int, max_rows: int | None = None) -> list[list[int]]:
    """Length-sorted batches whose rows × padded width stays within max_tokens (indices)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:  # ascending: the newest row sets the width
        if cur and ((len(cur) + 1) * lengths[i] > max_tokens or (max_rows and len(cur) >= max_rows)):
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


def plan(mm: MemoryModel, lengths: list[int], checkpoints: int, device: DeviceSpec, max_length: int,
         max_tokens: int | None = None, max_rows: int | None = None, mfu: float = MFU) -> Plan:
    """Batches under the token budget (default: the most that fits the device) and the job's time."""
    from tselect.errors import UserError

    budget = device.memory_bytes * SAFETY
    fit = mm.max_tokens(budget, max_length)
    if fit == 0:
        need = mm.peak_bytes(1, max_length) / GIB
        raise UserError(f"one row of {max_length} tokens needs ~{need:.1f} GiB, more than {budget / GIB:.1f} GiB "
                        f"usable on {device.name}; lower --max-length or use a larger device")
    cap = min(max_tokens or fit, fit)
    groups = token_batches(lengths, cap, max_rows)
    widths = [max(lengths[i] for i in g) for g in groups]
    padded = sum(w * len(g) for g, w in zip(groups, widths))
    peak = max(mm.peak_bytes(len(g), w) for g, w in zip(groups, widths))
    rate = device.peak_flops * mfu
    flops_per_token = 6 * mm.base_params + 8 * mm.lora_params  # fwd+bwd; LoRA fwd, grads, per-example bmm
    seconds = checkpoints * padded * flops_per_token / rate
    floor = checkpoints * sum(lengths) * 6 * mm.base_params / (device.peak_flops * MFU)
    return Plan(device, len(lengths), padded, len(groups), cap, peak, checkpoints, seconds, floor)


def detect_device(name: str | None = None) -> DeviceSpec:
    """`name` from DEVICES, else the current CUDA device (memory from the driver), else this CPU."""
    import torch

    if name:
        return DEVICES[name]
    if torch.cuda.is_available():
        idx = torch.cuda.current_device()
        label = torch.cuda.get_device_name(idx)
        free, total = torch.cuda.mem_get_info(idx)
        flops = next((d.peak_flops for k, d in DEVICES.items() if k in label.lower()), 100e12)
        return DeviceSpec(label, int(total), flops)
    import os
    import time

    a = torch.randn(512, 512)
    start = time.perf_counter()
    for _ in range(4):
        a @ a
    rate = 4 * 2 * 512**3 / (time.perf_counter() - start) / MFU  # so that rate·MFU = measured
    return DeviceSpec(f"CPU ({os.cpu_count()} cores)", os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), rate)



def checkpointed(mm: MemoryModel, hidden: int, el: int) -> MemoryModel:
    """The memory model under gradient checkpointing: each layer keeps only its input [T, hidden]
    until backward, and one layer at a time is recomputed with its full saved activations."""
    import dataclasses

    return dataclasses.replace(mm, layer_bytes_per_token=float(hidden * el),
                               head_bytes_per_token=mm.head_bytes_per_token + mm.layer_bytes_per_token)


def choose_budget(mm: MemoryModel, budget: float, max_length: int, hidden: int, el: int) -> tuple[int, bool]:
    """(token budget, use gradient checkpointing): plain if one full-length row fits, else checkpointed."""
    fit = mm.max_tokens(budget, max_length)
    if fit:
        return fit, False
    return max(checkpointed(mm, hidden, el).max_tokens(budget, max_length), max_length), True


def auto_max_tokens(model, max_length: int, lora_r: int, targets: tuple[str, ...], projection: str,
                    dim: int) -> int | None:
    """Token budget from FREE device memory (weights already loaded) and the bytes-per-token model.

    None on CPU (batches are sized by --batch-size there). At least one full-length row: when
    even one does not fit, gradient checkpointing is switched on (non-reentrant, which the
    per-example hooks support) and the budget is planned for it.
    """
    import dataclasses

    import torch

    device = next(model.parameters()).device
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    config = model.get_base_model().config.to_dict() if hasattr(model, "get_base_model") else model.config.to_dict()
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    mm = memory_model(config, lora_r, targets, dtype, projection, dim)
    loaded = sum(p.numel() * p.element_size() for p in model.parameters())
    rest = max(mm.static_bytes - loaded, 0)  # moments and projector state not allocated yet
    mm = dataclasses.replace(mm, static_bytes=rest)
    tokens, ckpt = choose_budget(mm, free * SAFETY, max_length, config["hidden_size"],
                                 next(model.parameters()).element_size())
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return tokens
