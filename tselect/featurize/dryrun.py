"""`tselect featurize --rep less --dry-run`: the plan from the model's config.json, before any GPU work.

No weights are read: the memory model runs on the `meta` device (plan.py). Row lengths come
from the pool and query tokenized with the model's tokenizer; without a tokenizer in the model
directory every row is assumed to fill --max-length (the worst case), and the plan says so.
"""

from __future__ import annotations

import json
import os


def row_lengths(datasets: list, ref, max_length: int) -> tuple[list[int], str]:
    """Token count of every row (the model's tokenizer), or max_length each with a note if it has none."""
    from tselect.data.tokenize import encode_example
    from tselect.models import load_tokenizer

    try:
        tok = load_tokenizer(ref)
    except Exception:  # noqa: BLE001 - any tokenizer problem falls back to the worst case
        n = sum(len(d) for d in datasets)
        return [max_length] * n, f"  (no tokenizer in {ref.path}: every row assumed {max_length} tokens)"
    return [len(encode_example(ex, tok, max_length).input_ids) for d in datasets for ex in d.examples], ""


def dry_run(cfg, device_name: str | None = None) -> str:
    """The rendered plan for a less featurize job (all checkpoints, pool + query rows)."""
    from tselect.errors import UserError
    from tselect.featurize.less import less_config
    from tselect.featurize.plan import DEVICES, detect_device, memory_model, plan
    from tselect.featurize.project import check_dense_budget
    from tselect.warmup import WARMUP_PRESETS
    from tselect.models import resolve_model

    if cfg.rep != "less":
        raise UserError(f"--dry-run plans --rep less jobs; --rep {cfg.rep} needs no plan")
    if device_name is not None and device_name not in DEVICES:
        raise UserError(f"--plan-device {device_name!r} is unknown; choose one of {', '.join(DEVICES)}")
    lc = less_config(cfg)
    preset = WARMUP_PRESETS[lc.warmup].train
    ref = resolve_model(cfg.model)
    config = json.loads((ref.path / "config.json").read_text())
    device = detect_device(device_name)
    dtype = "float32" if device.name.startswith("CPU") else "bfloat16"
    mm = memory_model(config, preset.lora_r, preset.target_modules, dtype, lc.projection, lc.dim)
    if lc.projection == "rademacher":
        check_dense_budget(mm.lora_params, lc.dim)
    from tselect.data import load_dataset

    lengths, note = row_lengths([load_dataset(spec, cfg.fmt) for spec in (cfg.pool, cfg.query)], ref, cfg.max_length)
    p = plan(mm, lengths, preset.epochs, device, cfg.max_length, lc.max_tokens or None, cfg.batch_size)
    ranks = int(os.environ.get("WORLD_SIZE", "8" if device_name else "1"))
    head = (f"model {config.get('model_type', '?')} {mm.base_params / 1e9:.2f}B params, LoRA r={preset.lora_r} on "
            f"{'/'.join(preset.target_modules)} ({mm.lora_params:,} params), {dtype}, projection={lc.projection} "
            f"dim={lc.dim}; {mm.layer_bytes_per_token * mm.n_layers / 2**20:.2f} MiB saved per token")
    return "\n".join(line for line in (head, p.render(ranks), note) if line)
