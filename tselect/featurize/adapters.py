"""One base model per process, warmup adapters swapped in per checkpoint.

Loading a 7B base for every checkpoint re-reads 13.5 GB per rank, and the previous
checkpoint's PeftModel stays alive through reference cycles until a gc pass, so two models
share the GPU while the next one loads. Instead, the first checkpoint wraps the base once and
later checkpoints copy their adapter weights into the same LoRA parameters (every checkpoint
of one warmup has the same adapter config, which is checked).

Imports torch/peft inside functions.
"""

from __future__ import annotations

import json
from pathlib import Path


def _lora_shape(config: dict) -> tuple:
    return (config.get("r"), config.get("lora_alpha"), sorted(config.get("target_modules") or []),
            config.get("use_dora", False), config.get("bias", "none"))


def swap_adapter(model, ckpt_dir: Path) -> None:
    """Copy the adapter weights of `ckpt_dir` into the loaded PeftModel's default adapter, in place."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    loaded = model.peft_config["default"].to_dict()
    wanted = json.loads((Path(ckpt_dir) / "adapter_config.json").read_text())
    if _lora_shape(loaded) != _lora_shape(wanted):
        raise ValueError(f"adapter in {ckpt_dir} has config {_lora_shape(wanted)}, the loaded one "
                         f"{_lora_shape(loaded)}; checkpoints of one warmup must share their LoRA config")
    device = next(model.parameters()).device
    weights = load_peft_weights(str(ckpt_dir), device=str(device))
    before = {n: p.data_ptr() for n, p in model.named_parameters() if "lora_" in n}
    result = set_peft_model_state_dict(model, weights)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"adapter in {ckpt_dir} has unexpected weights, e.g. {result.unexpected_keys[0]}")
    after = {n: p.data_ptr() for n, p in model.named_parameters() if "lora_" in n}
    if before != after:  # weights must be copied into the existing tensors, not replace them
        raise RuntimeError("swapping the adapter replaced LoRA parameters instead of copying into them")
