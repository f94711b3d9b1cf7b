"""`tselect warmup --dry-run`: rows, tokens, peak memory and time of the LESS warmup, from config.json.

Warmup trains LoRA with peft's default fp32 adapters and LoRA dropout in train mode, so its
saved activations are measured on `meta` that way (plan.layer_bytes_per_token), and its
static memory holds the LoRA weights, their gradients and AdamW's two moments in fp32.
"""

from __future__ import annotations

import dataclasses
import json


def warmup_memory_model(config: dict, preset, dtype: str):
    """plan.MemoryModel of one warmup micro-batch (no per-example hooks)."""
    import torch

    from tselect.featurize.plan import MemoryModel, head_bytes_per_token, layer_bytes_per_token, model_sizes

    n_layers = int(config["num_hidden_layers"])
    model, per_token = layer_bytes_per_token(config, preset.lora_r, preset.target_modules, dtype, fp32_lora=True,
                                             dropout=preset.lora_dropout)
    _, lora, base, wbytes = model_sizes(model, n_layers)  # wbytes counts fp32 LoRA weights
    el = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    static = wbytes + 3 * 4 * lora  # LoRA grads + AdamW exp_avg, exp_avg_sq (fp32)
    return MemoryModel(int(static), per_token, n_layers, float(head_bytes_per_token(config, el)), 0.0, 0.0,
                       int(base), int(lora))


def warmup_dry_run(pool_spec: str, model_spec: str | None, preset_name: str, fmt: str | None = None,
                   device_name: str | None = None) -> str:
    """The rendered warmup plan: sampled rows at the preset's batch size, for all epochs."""
    from tselect.data import load_dataset
    from tselect.errors import UserError
    from tselect.featurize.dryrun import row_lengths
    from tselect.featurize.plan import DEVICES, SAFETY, detect_device, plan
    from tselect.warmup import WARMUP_PRESETS, sample_indices
    from tselect.models import resolve_model

    if device_name is not None and device_name not in DEVICES:
        raise UserError(f"--plan-device {device_name!r} is unknown; choose one of {', '.join(DEVICES)}")
    recipe = WARMUP_PRESETS[preset_name]
    preset = recipe.train
    ref = resolve_model(model_spec)
    config = json.loads((ref.path / "config.json").read_text())
    device = detect_device(device_name)
    dtype = "float32" if device.name.startswith("CPU") else "bfloat16"
    pool = load_dataset(pool_spec, fmt)
    picked = dataclasses.replace(pool, examples=[pool.examples[i] for i in sample_indices(len(pool), recipe)])
    lengths, note = row_lengths([picked], ref, preset.max_length)
    mm = warmup_memory_model(config, preset, dtype)
    p = plan(mm, lengths, preset.epochs, device, preset.max_length, preset.batch_size * preset.max_length,
             preset.batch_size)
    head = (f"warmup: {len(lengths):,} of {len(pool):,} pool rows x {preset.epochs} epochs at batch {preset.batch_size}, "
            f"LoRA r={preset.lora_r} (fp32 adapters, dropout {preset.lora_dropout}), {dtype}; "
            f"{mm.layer_bytes_per_token * mm.n_layers / 2**20:.2f} MiB saved per token; per device (under torchrun each rank trains its share: wall time divides by the ranks)")
    fits = "fits" if p.peak_bytes <= device.memory_bytes * SAFETY else "DOES NOT FIT"
    return "\n".join(line for line in (head, p.render(1), f"  {fits}", note) if line)
