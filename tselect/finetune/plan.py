"""`tselect finetune --dry-run`: memory per GPU and time of a fine-tune, from the model's config.json.

No weights are read. Activation bytes per token come from featurize's meta-device memory model
(one decoder layer run on `meta` under saved_tensors_hooks); static memory is counted per method:
- LoRA (DDP: every GPU holds the whole base): base weights in the load dtype + fp32 LoRA
  weights, grads and Adam moments (16 bytes per LoRA parameter).
- full (FSDP full shard over G GPUs): fp32 master weights, grads and Adam moments are sharded
  (16 N / G bytes) + two gathered decoder layers in bf16 (the one computing, the one prefetched);
  FSDP always checkpoints activations. One GPU without FSDP holds all 16 N bytes.
Time: forward+backward FLOPs per token (full 6N, LoRA 4N: no weight grads for the frozen base;
+2N when activations are recomputed) over the rows' tokens at featurize's assumed MFU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tselect.featurize.plan import GIB, MFU, SAFETY, DeviceSpec


@dataclass(frozen=True)
class FinetunePlan:
    device: DeviceSpec
    gpus: int
    method: str
    sharding: str  # "ddp", "fsdp" or "single"
    params: int  # N, base parameters
    trainable: int  # parameters that train
    static_bytes: float  # per GPU: weights, grads, optimizer state
    activation_bytes: float  # per GPU: one micro-batch of batch_size x max_length
    tokens: int  # tokens over all epochs
    seconds: float  # wall time on `gpus` devices

    @property
    def peak_bytes(self) -> float:
        return self.static_bytes + self.activation_bytes

    def render(self) -> str:
        usable = self.device.memory_bytes * SAFETY
        fits = "fits" if self.peak_bytes <= usable else "DOES NOT FIT: lower --batch-size/--max-length, add GPUs or --gradient-checkpointing"
        return "\n".join([
            f"finetune plan: {self.method} on {self.gpus} x {self.device.name} ({self.sharding}), "
            f"{self.params / 1e9:.2f}B params, {self.trainable:,} trainable",
            f"  memory per GPU: {self.static_bytes / GIB:.1f} GiB weights/grads/optimizer + "
            f"{self.activation_bytes / GIB:.1f} GiB activations = {self.peak_bytes / GIB:.1f} GiB "
            f"(of {usable / GIB:.1f} GiB usable): {fits}",
            f"  {self.tokens:,} tokens -> estimate {self.seconds / 3600:,.2f} h wall "
            f"({self.seconds * self.gpus / 3600:,.1f} GPU-hours) at {MFU:.0%} MFU",
        ])


def plan_finetune(config: dict, method: str, lora_r: int, targets: tuple[str, ...], batch_size: int,
                  max_length: int, tokens: int, device: DeviceSpec, gpus: int, checkpointing: bool,
                  fsdp: bool) -> FinetunePlan:
    """The plan for a causal-LM config dict (config.json); `tokens` = row tokens x epochs."""
    import torch

    from tselect.featurize.plan import head_bytes_per_token, layer_bytes_per_token, model_sizes

    n_layers = int(config["num_hidden_layers"])
    dtype = "float32" if device.name.startswith("CPU") else "bfloat16"
    el = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    lora_targets = targets or ("q_proj", "k_proj", "v_proj", "o_proj")
    model, per_token = layer_bytes_per_token(config, lora_r, lora_targets, dtype)
    _, lora, n, _ = model_sizes(model, n_layers)  # LoRA params (the A, B factors), base params
    head = head_bytes_per_token(config, el)
    if method == "full":
        checkpointing = checkpointing or fsdp  # FSDP runs with activation checkpointing
        shards = gpus if fsdp else 1
        layer_params = (n - 2 * int(config["vocab_size"]) * int(config["hidden_size"])) / n_layers
        static = 16 * n / shards + (2 * 2 * layer_params if fsdp else 0)
        trainable, flops = n, 6 * n
    else:
        static, trainable, flops = el * n + 16 * lora, lora, 4 * n
    hidden = int(config["hidden_size"])
    if checkpointing:
        per_layer = float(hidden * el)  # each layer keeps its input; one layer's full set is recomputed
        extra = per_token
        flops += 2 * n
    else:
        per_layer, extra = per_token, 0.0
    act = batch_size * max_length * (per_layer * n_layers + head + extra)
    seconds = tokens * flops / (gpus * device.peak_flops * MFU)
    sharding = "fsdp" if fsdp else ("ddp" if gpus > 1 else "single")
    return FinetunePlan(device, gpus, method, sharding, n, trainable, static, act, tokens, seconds)


def dry_run(cfg, root, device_name: str | None = None, gpus: int | None = None) -> str:
    """The rendered plan of a finetune config: its rows tokenized with the model's tokenizer."""
    from tselect import distributed
    from tselect.errors import UserError
    from tselect.featurize.plan import DEVICES, detect_device
    from tselect.finetune import _training_set
    from tselect.models import resolve_model
    from tselect.runtime import uses_fsdp

    if device_name is not None and device_name not in DEVICES:
        raise UserError(f"--plan-device {device_name!r} is unknown; choose one of {', '.join(DEVICES)}")
    if gpus is not None and gpus < 1:
        raise UserError(f"--gpus must be >= 1, got {gpus}")
    gpus = gpus or distributed.world_size()
    ref = resolve_model(cfg.model)
    config = json.loads((ref.path / "config.json").read_text())
    examples, _, _ = _training_set(cfg, root)
    from tselect.featurize.dryrun import row_lengths

    class _Rows:  # row_lengths takes datasets (objects with .examples and len)
        def __init__(self, ex):
            self.examples = ex

        def __len__(self):
            return len(self.examples)

    lengths, note = row_lengths([_Rows(examples)], ref, cfg.train.max_length)
    t = cfg.train
    device = detect_device(device_name)
    fsdp = uses_fsdp(cfg.runtime, t.method, gpus)
    p = plan_finetune(config, t.method, t.lora_r, t.target_modules, t.batch_size, t.max_length,
                      sum(lengths) * t.epochs, device, gpus, cfg.runtime.gradient_checkpointing, fsdp)
    return "\n".join(line for line in (f"rows {len(lengths):,} x {t.epochs} epochs", p.render(), note) if line)
