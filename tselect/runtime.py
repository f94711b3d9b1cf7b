"""How a training run uses the hardware: optimizer kernel, gradient checkpointing, DDP or FSDP.

None of this changes what is computed (up to float summation order), so it never enters an
artifact id — except the 8-bit optimizer, whose quantized moments change the trained weights;
`identity_extra` names it for the id. A shared core: the finetune stage builds a `Runtime`, the
trainer (`tselect.training`) turns it into TrainingArguments fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

# auto: fused AdamW on CUDA (one kernel per step), plain AdamW elsewhere.
OPTIMIZERS = ("auto", "adamw_torch", "adamw_torch_fused", "adamw_8bit")
# auto: FSDP full shard for --method full under a multi-process launch, DDP otherwise.
SHARDING = ("auto", "ddp", "fsdp")


@dataclass(frozen=True)
class Runtime:
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass (less memory, ~30% more time)."""
    optim: str = "auto"
    """auto, adamw_torch, adamw_torch_fused (CUDA), adamw_8bit (needs bitsandbytes)."""
    sharding: str = "auto"
    """How ranks split the model under torchrun: auto (FSDP for full, DDP for LoRA), ddp, fsdp."""

    NOT_HASHED: ClassVar[dict[str, str]] = {}

    def __post_init__(self):
        if self.optim not in OPTIMIZERS:
            raise ValueError(f"--optim {self.optim!r} is unknown; use one of {', '.join(OPTIMIZERS)}")
        if self.sharding not in SHARDING:
            raise ValueError(f"--sharding {self.sharding!r} is unknown; use one of {', '.join(SHARDING)}")


def identity_extra(rt: Runtime) -> dict[str, Any]:
    """What of the runtime changes the trained weights, for the artifact id (empty by default)."""
    return {"optimizer_8bit": True} if rt.optim == "adamw_8bit" else {}


def optimizer_name(rt: Runtime, cuda: bool) -> str:
    """The Trainer's `optim` value; 8-bit needs bitsandbytes, fused needs CUDA (one line otherwise)."""
    from tselect.errors import UserError

    if rt.optim == "auto":
        return "adamw_torch_fused" if cuda else "adamw_torch"
    if rt.optim == "adamw_torch_fused" and not cuda:
        raise UserError("--optim adamw_torch_fused needs a CUDA GPU; use --optim adamw_torch on this machine")
    if rt.optim == "adamw_8bit":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise UserError("--optim adamw_8bit needs bitsandbytes: pip install bitsandbytes "
                            "(or use --optim auto)") from None
        return "adamw_bnb_8bit"
    return rt.optim


def uses_fsdp(rt: Runtime, method: str, world: int) -> bool:
    """FSDP for this run? Full shard under a multi-process launch for --method full (auto) or when
    asked (--sharding fsdp), on GPUs (nccl) and on CPU (gloo) alike: on CPU the trainer points
    accelerate at its FSDP code (tselect.training), which it otherwise enables only for GPU-like
    devices. LoRA with FSDP is refused: peft saves an empty adapter from an FSDP-sharded model."""
    from tselect.errors import UserError

    if rt.sharding == "fsdp" and method == "lora":
        raise UserError("--sharding fsdp is for --method full: LoRA trains with DDP (peft cannot save an adapter "
                        "from FSDP shards); use --sharding auto or ddp")
    return world > 1 and (rt.sharding == "fsdp" or (rt.sharding == "auto" and method == "full"))


def sharding_args(rt: Runtime, method: str, world: int, model) -> dict[str, Any]:
    """TrainingArguments fields for DDP / FSDP and activation checkpointing.

    FSDP: full shard, one unit per decoder layer (the model's `_no_split_modules`), activation
    checkpointing inside FSDP (the Trainer refuses both FSDP's and its own), full state dict
    gathered on rank 0 for saving. DDP: LoRA leaves the frozen base out of the reducer.
    """
    if uses_fsdp(rt, method, world):
        # FSDP2 (transformers' default version): reshard_after_forward = full shard
        config = {"version": 2, "reshard_after_forward": True, "activation_checkpointing": True,
                  "state_dict_type": "FULL_STATE_DICT"}
        layers = list(getattr(model, "_no_split_modules", None) or [])
        if layers:
            config.update(auto_wrap_policy="TRANSFORMER_BASED_WRAP", transformer_layer_cls_to_wrap=layers)
        return {"fsdp": True, "fsdp_config": config}
    out: dict[str, Any] = {"ddp_find_unused_parameters": False} if world > 1 else {}
    if rt.gradient_checkpointing:
        # non-reentrant: works with a frozen base (LoRA) without forcing input grads
        out.update(activation_checkpointing=True, activation_checkpointing_kwargs={"use_reentrant": False})
    return out
