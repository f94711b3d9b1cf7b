"""Supervised fine-tuning on encoded rows (LoRA or full), through the HF Trainer.

Rows carry `input_ids` and `labels` (-100 outside the response). The objective is the token-mean
cross-entropy over all label tokens of an optimizer step: the Trainer counts label tokens across
the accumulated micro-batches, so 2 accumulation steps of batch 1 optimize the same loss as one
batch of 2. Data order comes from a numpy Generator seeded by (seed, epoch), independent of the
torch RNG, so the order is the same on any device.
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tselect.data.tokenize import MAX_LENGTH
from tselect.errors import UserError
from tselect.runtime import Runtime
from tselect.tokens import right_pad

# Attention projections are LoRA's classic targets in these families; others get peft's
# "all-linear" (every linear layer except the output head).
_ATTENTION_FAMILIES = {"llama", "qwen2", "qwen3", "mistral", "smollm3"}
_ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class TrainConfig:
    method: str = "lora"
    """"lora" (adapter on a frozen base) or "full" (every weight trains)."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: tuple[str, ...] = ()
    """Module names LoRA wraps; empty = q/k/v/o_proj for llama/qwen/mistral/smollm, else all-linear."""
    lr: float = 1e-4
    """Peak learning rate of AdamW (linear warmup, then linear decay to 0)."""
    epochs: int = 2
    """Passes over the rows."""
    batch_size: int = 4
    """Rows per forward pass (micro-batch)."""
    effective_batch_size: int = 16
    """Rows per optimizer step; a multiple of batch_size (gradient accumulation makes up the rest)."""
    warmup_ratio: float = 0.03
    """Fraction of optimizer steps spent warming up, in [0, 1)."""
    weight_decay: float = 0.0
    """AdamW weight decay (not applied to biases and norms)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables clipping."""
    max_length: int = MAX_LENGTH
    """Tokens kept per row (right-truncated)."""
    seed: int = 0
    """Seeds LoRA init, dropout and the data order."""

    NOT_HASHED: ClassVar[dict[str, str]] = {}

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is unknown; use one of {sorted(METHODS)}")
        if self.batch_size < 1 or self.effective_batch_size < self.batch_size or self.effective_batch_size % self.batch_size:
            raise ValueError(f"effective_batch_size={self.effective_batch_size} must be a positive multiple of "
                            f"batch_size={self.batch_size}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if self.epochs < 1 or not 0 < self.lr < math.inf or self.max_length < 2:
            raise ValueError(f"epochs={self.epochs}, lr={self.lr}, max_length={self.max_length}: "
                            "need epochs >= 1, a finite lr > 0, max_length >= 2")
        _check_ranges(self)

    @property
    def grad_accum(self) -> int:
        return self.effective_batch_size // self.batch_size


MAX_SEED = 2**32 - 1  # numpy's legacy seeding (called by transformers' set_seed) takes 32 bits


def _check_ranges(cfg: TrainConfig) -> None:
    """Every number finite and within what torch/numpy accept: one line instead of a crash mid-run."""
    checks = [("seed", cfg.seed, 0 <= cfg.seed <= MAX_SEED, f"an integer in 0..{MAX_SEED}"),
              ("lora_dropout", cfg.lora_dropout, 0.0 <= cfg.lora_dropout < 1.0, "in [0, 1)"),
              ("weight_decay", cfg.weight_decay, 0.0 <= cfg.weight_decay < math.inf, "finite and >= 0"),
              ("max_grad_norm", cfg.max_grad_norm, 0.0 <= cfg.max_grad_norm < math.inf, "finite and >= 0"),
              ("lora_r", cfg.lora_r, 1 <= cfg.lora_r <= 1 << 16, "in 1..65536"),
              ("lora_alpha", cfg.lora_alpha, 0 < cfg.lora_alpha < 1 << 31, "a positive integer"),
              ("epochs", cfg.epochs, cfg.epochs <= 1 << 20, "at most 1048576"),
              ("effective_batch_size", cfg.effective_batch_size, cfg.effective_batch_size <= 1 << 31, "below 2^31"),
              ("max_length", cfg.max_length, cfg.max_length <= 1 << 31, "below 2^31")]
    for name, value, ok, rule in checks:
        if not ok:
            raise ValueError(f"{name}={value} is out of range; it must be {rule}")


def floor_warmup_linear(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """LR multiplier of optimizer step s (0-based) for a run of `total_steps` steps.

    warmup = floor(ratio x steps) steps climb (s + 1) / (warmup + 1), so the first step already
    trains; the rest decay linearly to 1 / (steps - warmup) at the last step, never to 0. With
    HF's "linear" (ceil warmup starting at 0) a one-step run trains at lr 0.
    """
    warmup = warmup_steps(total_steps, warmup_ratio)

    def multiplier(s: int) -> float:
        if s < warmup:
            return (s + 1) / (warmup + 1)
        return max(0.0, (total_steps - s) / max(1, total_steps - warmup))

    return multiplier


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """Warmup steps of floor_warmup_linear: floor(ratio x steps), never all of them."""
    return min(int(math.floor(warmup_ratio * total_steps)), max(0, total_steps - 1))


@dataclass
class TrainResult:
    model: Any  # the trained model (a PeftModel for "lora"), in eval mode
    losses: list[float]  # token-mean training loss of each optimizer step
    lrs: list[float]  # learning rate used at each optimizer step
    cost: dict[str, Any] = field(default_factory=dict)  # wall_seconds, tokens_seen, examples_per_second, device, ...
    state_dict: dict | None = None  # FSDP only: the full weights gathered on rank 0 (save with these)


def default_target_modules(model) -> list[str] | str:
    family = getattr(getattr(model, "config", None), "model_type", "")
    return list(_ATTENTION_MODULES) if family in _ATTENTION_FAMILIES else "all-linear"


def _prepare_lora(model, cfg: TrainConfig):
    """Wrap in a LoRA adapter; only the adapter trains. Init is seeded without touching global RNG."""
    import torch
    from peft import LoraConfig, get_peft_model

    targets = list(cfg.target_modules) or default_target_modules(model)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft 0.21 reads a property transformers 5 deprecated; the warning is noise for users.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        torch.manual_seed(cfg.seed)
        return get_peft_model(model, lora)


def _prepare_full(model, cfg: TrainConfig):
    """Full fine-tuning: every parameter trains."""
    model.requires_grad_(True)
    return model


METHODS: dict[str, Callable] = {"lora": _prepare_lora, "full": _prepare_full}


def _as_row(row, max_length: int) -> dict[str, list[int]]:
    ids = row["input_ids"] if isinstance(row, dict) else row.input_ids
    labels = row["labels"] if isinstance(row, dict) else row.labels
    return {"input_ids": list(ids)[:max_length], "labels": list(labels)[:max_length]}


class _Collator:
    """Right-pads a micro-batch; counts the real tokens it hands out (for the cost record)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id
        self.tokens_seen = 0

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        ids, mask, labels = right_pad([(r["input_ids"], r["labels"]) for r in rows], self.pad_id)  # [B, T] each
        self.tokens_seen += int(mask.sum()) - sum(1 for r in rows if r is _PAD_ROW)  # padding rows: 1 token each
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# Data-parallel padding: one token, no label, so it adds no loss term, no label-token count and
# no gradient; it only evens out the ranks' last micro-batches of an epoch.
_PAD_ROW: dict[str, list[int]] = {"input_ids": [0], "labels": [-100]}


def _epoch_sampler(n: int, seed: int, multiple: int = 1):
    """A sampler whose epoch-e order is numpy default_rng((seed, e)).permutation(n).

    multiple > 1 (ranks x micro-batch under DDP): the order is followed by index n (_PAD_ROW)
    up to a multiple of it, so accelerate's sharding never repeats real rows to even out the
    ranks, and every optimizer step holds the rows one process would put in it.
    """
    from torch.utils.data import Sampler

    class EpochPermutation(Sampler):
        def __init__(self):
            self.epoch = 0

        def set_epoch(self, epoch: int):  # called by the Trainer/accelerate before each epoch
            self.epoch = epoch

        def __len__(self):
            return -(-n // multiple) * multiple

        def __iter__(self):
            return iter(np.random.default_rng((seed, self.epoch)).permutation(n).tolist() + [n] * (len(self) - n))

    return EpochPermutation()


Schedule = Callable[[int, float], Callable[[int], float]]


def checkpoint_every(total_steps: int) -> int:
    """Optimizer steps between resumable checkpoints: ~10 per run, none for runs under 10 steps."""
    return max(10, math.ceil(total_steps / 10))


def local_grad_accum(cfg: TrainConfig, world: int) -> int:
    """Accumulation steps per rank: effective_batch_size counts rows over ALL ranks of a step."""
    per_step = cfg.batch_size * world
    if cfg.effective_batch_size % per_step:
        raise UserError(f"--effective-batch-size {cfg.effective_batch_size} is not a multiple of --batch-size "
                        f"{cfg.batch_size} x {world} processes; pick a multiple of {per_step}")
    return cfg.effective_batch_size // per_step


def _training_args(cfg: TrainConfig, out_dir: str, save_steps: int | None = None, runtime: Runtime | None = None,
                   model=None):
    import torch
    from transformers import TrainingArguments

    from tselect.runtime import optimizer_name, sharding_args

    rt = runtime or Runtime()
    cuda = torch.cuda.is_available()
    world = _ranks(runtime)
    saving = {"save_strategy": "no"} if save_steps is None else \
        {"save_strategy": "steps", "save_steps": save_steps, "save_total_limit": 1, "save_only_model": False}
    return TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=local_grad_accum(cfg, world), num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr, lr_scheduler_type="linear",
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float < 1 is a ratio of total steps
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        optim=optimizer_name(rt, cuda),
        bf16=cuda and torch.cuda.is_bf16_supported(),  # autocast; fp32 on CPU
        use_cpu=not cuda, seed=cfg.seed, data_seed=cfg.seed,
        logging_strategy="steps", logging_steps=1, eval_strategy="no", **saving,
        report_to=[], disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=cuda,
        remove_unused_columns=False,
        # DDP averages gradients over ranks; counting label tokens over all ranks keeps the
        # objective the token mean of the whole optimizer step, as in one process.
        average_tokens_across_devices=True,
        **sharding_args(rt, cfg.method, world, model),
    )


def adam_moments(model, optimizer) -> dict[str, dict[str, Any]]:
    """Trainable parameter NAME → {exp_avg, exp_avg_sq, step} (CPU copies) of an Adam(W) state.

    Keyed by name, never by position: LESS's Adam features need the moments of each weight,
    and the positional order of an optimizer state is not a stable contract.
    """
    out = {}
    for name, p in model.named_parameters():
        st = optimizer.state.get(p, {}) if p.requires_grad else {}
        if "exp_avg" in st:
            out[name] = {"exp_avg": st["exp_avg"].detach().cpu().clone(),
                         "exp_avg_sq": st["exp_avg_sq"].detach().cpu().clone(), "step": int(st["step"])}
    return out


def _make_trainer(model, rows, cfg: TrainConfig, collator: _Collator, out_dir: str, on_step, on_epoch,
                  save_steps: int | None = None, schedule: Schedule | None = None, runtime: Runtime | None = None):
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    class SeededTrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            return _epoch_sampler(len(rows), cfg.seed, multiple)

        def create_scheduler(self, num_training_steps: int, optimizer=None):
            if schedule is None:  # HF's "linear" with warmup_ratio
                return super().create_scheduler(num_training_steps, optimizer)
            if self.lr_scheduler is None:
                from torch.optim.lr_scheduler import LambdaLR

                self.lr_scheduler = LambdaLR(optimizer or self.optimizer, schedule(num_training_steps, cfg.warmup_ratio))
            return self.lr_scheduler

    class Hooks(TrainerCallback):
        def __init__(self):
            self.lrs: list[float] = []  # lr of each step of the current epoch

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.lrs.append(logs["learning_rate"])
                if on_step is not None:
                    on_step(state.global_step, state.max_steps, logs["loss"])

        def on_epoch_end(self, args, state, control, model=None, optimizer=None, **kwargs):
            if on_epoch is not None:  # every step of the epoch has been logged by now
                mean_lr = float(np.mean(self.lrs)) if self.lrs else 0.0
                on_epoch(round(state.epoch), model, adam_moments(model, optimizer), mean_lr)
            self.lrs = []

    multiple = cfg.batch_size * _ranks(runtime) if _ranks(runtime) > 1 else 1
    args = _training_args(cfg, out_dir, save_steps, runtime, model)
    if args.fsdp and args.use_cpu:
        _accelerate_fsdp_on_cpu()
    trainer = SeededTrainer(model=model, args=args, train_dataset=rows + [_PAD_ROW] if multiple > 1 else rows,
                            data_collator=collator, callbacks=[Hooks()])
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout
    return trainer


def _accelerate_fsdp_on_cpu() -> None:
    """Let accelerate shard with FSDP on CPU processes (gloo), as it does on GPUs.

    accelerate sorts a gloo job as MULTI_CPU, which it always runs as DDP: its FSDP branch is taken
    only for GPU-like process groups. Marking the (already joined) group multi-device before the
    Trainer builds its Accelerator sends it down that branch, so the sharding (fully_shard per
    decoder layer), the FSDP checkpoints and the rank-0 full state dict run accelerate's own GPU
    code on CPU tensors; nothing else differs from a GPU run.
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    state = PartialState(cpu=True)
    if state.distributed_type == DistributedType.MULTI_CPU:
        PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU


def train(model, rows: Sequence, cfg: TrainConfig, pad_id: int,
          on_step: Callable[[int, int, float], None] | None = None,
          on_epoch: Callable[[int, Any, dict, float], None] | None = None,
          checkpoints: Path | None = None, schedule: Schedule | None = None,
          runtime: Runtime | None = None) -> TrainResult:
    """Fine-tune `model` on `rows` (EncodedRow or {"input_ids","labels"} dicts) per `cfg`.

    on_step(step, total_steps, loss) runs after each optimizer step (progress output);
    on_epoch(epoch, model, adam_moments, mean_lr) after each epoch (1-based), e.g. to save
    LESS warmup checkpoints: the moments are keyed by parameter name, mean_lr is the epoch's η̄.
    checkpoints: a directory for resumable Trainer checkpoints (weights, optimizer, scheduler,
    RNG states) every `checkpoint_every` steps; a run finding one there continues from it.
    schedule(total_steps, warmup_ratio) -> multiplier(step) replaces HF's linear schedule
    (finetune passes floor_warmup_linear). runtime: optimizer kernel, gradient checkpointing,
    DDP/FSDP under a multi-process launch (every rank calls train; only rank 0 should save).
    """
    import torch

    from tselect import distributed

    data = [_as_row(r, cfg.max_length) for r in rows]
    if not data:
        raise UserError("no training rows: the selection is empty or every row was skipped; check the selection")
    model = METHODS[cfg.method](model, cfg)
    collator = _Collator(pad_id)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tselect-train-") as scratch:
        out_dir = scratch if checkpoints is None else str(checkpoints)
        save = None if checkpoints is None else checkpoint_every(expected_steps(len(data), cfg))
        trainer = _make_trainer(model, data, cfg, collator, out_dir, on_step, on_epoch, save, schedule, runtime)
        # rank 0 picks (and cleans) the checkpoint; every rank resumes from the same one
        collective = _ranks(runtime) > 1
        resume = _last_checkpoint(checkpoints, _ranks(runtime)) if distributed.is_main() or not collective else None
        resume = distributed.broadcast(resume) if collective else resume
        trainer.train(resume_from_checkpoint=resume)
        state_dict = _gathered_state_dict(trainer)
    wall = time.perf_counter() - start
    tokens = distributed.gather(collator.tokens_seen) if collective else None  # every rank's share, on rank 0
    held = distributed.gather(_held_numel(trainer.model_wrapped)) if collective else None
    logs = [h for h in trainer.state.log_history if "loss" in h]
    trained = trainer.model.eval()
    cost = {
        "wall_seconds": round(wall, 3),
        "tokens_seen": sum(tokens) if tokens else collator.tokens_seen,
        "world_size": _ranks(runtime),
        "sharding": "fsdp" if trainer.is_fsdp_enabled else ("ddp" if collective else "none"),
        "params_held": held,  # parameter elements each rank holds: shards under FSDP, whole copies under DDP
        "gradient_checkpointing": bool(trainer.args.activation_checkpointing or trainer.is_fsdp_enabled),
        "optim": str(trainer.args.optim.value if hasattr(trainer.args.optim, "value") else trainer.args.optim),
        "examples_seen": len(data) * cfg.epochs,
        "examples_per_second": round(len(data) * cfg.epochs / max(wall, 1e-9), 3),
        "optimizer_steps": trainer.state.global_step,
        "trainable_params": sum(p.numel() for p in trained.parameters() if p.requires_grad),
        "device": str(next(trained.parameters()).device),
        "dtype": "bf16-autocast" if trainer.args.bf16 else "fp32",
        "torch_threads": torch.get_num_threads(),
    }
    return TrainResult(trained, [float(h["loss"]) for h in logs], [float(h["learning_rate"]) for h in logs], cost,
                       state_dict)


def _ranks(runtime: Runtime | None) -> int:
    """Processes training together: the launch's world size when the caller passes a Runtime
    (finetune and the warmup: every rank calls train); 1 otherwise."""
    from tselect import distributed

    return distributed.world_size() if runtime is not None else 1


def _held_numel(model) -> int:
    """Parameter elements this process holds: its local shards of FSDP's DTensors, else every element."""
    return sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())


def _gathered_state_dict(trainer) -> dict | None:
    """Under FSDP the weights are sharded: gather the full state dict (a collective: every rank
    calls it; rank 0 receives it, on CPU). None without FSDP: the model itself is whole."""
    if not getattr(trainer, "is_fsdp_enabled", False):
        return None
    return trainer.accelerator.get_state_dict(trainer.model_wrapped)


def _last_checkpoint(directory: Path | None, ranks: int = 1) -> str | None:
    """The newest complete checkpoint-<step> (the Trainer writes trainer_state.json last); half-written ones go.

    With several ranks each writes its own rng_state_<rank>.pth, possibly after rank 0's
    trainer_state.json: a checkpoint counts only when every rank's file is there and loads."""
    import shutil

    if directory is None or not Path(directory).is_dir():
        return None
    found = sorted((int(p.name.split("-")[1]), p) for p in Path(directory).glob("checkpoint-*")
                   if p.name.split("-")[1].isdigit())
    complete = [p for _, p in found if (p / "trainer_state.json").is_file() and _rng_states_load(p, ranks)]
    for _, p in found:
        if p not in complete[-1:]:
            shutil.rmtree(p, ignore_errors=True)
    return str(complete[-1]) if complete else None


def _rng_states_load(checkpoint: Path, ranks: int) -> bool:
    if ranks <= 1:
        return True
    import torch

    try:
        for r in range(ranks):
            torch.load(checkpoint / f"rng_state_{r}.pth", weights_only=False)  # a few KB each
    except Exception:  # noqa: BLE001 - missing or cut short by an interruption
        return False
    return True


def expected_steps(n_rows: int, cfg: TrainConfig) -> int:
    """Optimizer steps a run takes: the last accumulation of an epoch may be short."""
    return cfg.epochs * math.ceil(math.ceil(n_rows / cfg.batch_size) / cfg.grad_accum)


def save_adapter(model, directory: str | Path) -> Path:
    """Write adapter_config.json + adapter_model.safetensors, loadable by PeftModel.from_pretrained."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        raise UserError("save_adapter needs a LoRA-trained model; a method='full' model is saved with save_full")
    directory = Path(directory)
    # save_embedding_layers=False: embeddings never train here, and "auto" may query the Hub.
    model.save_pretrained(str(directory), safe_serialization=True, save_embedding_layers=False)
    from safetensors import safe_open

    with safe_open(str(directory / "adapter_model.safetensors"), framework="pt") as f:
        if not list(f.keys()):  # e.g. an FSDP-sharded PeftModel: peft finds no adapter weights in it
            raise RuntimeError(f"the adapter written to {directory} holds no weights; refusing to publish it")
    return directory


def save_full(model, directory: str | Path, state_dict: dict | None = None) -> Path:
    """Write the whole fine-tuned model as safetensors (loadable with from_pretrained);
    `state_dict` = the weights gathered from FSDP shards (the model's own when None)."""
    directory = Path(directory)
    model.save_pretrained(str(directory), safe_serialization=True, state_dict=state_dict)
    return directory


SAVERS: dict[str, Callable] = {"lora": save_adapter, "full": save_full}


# peft keeps these as Python sets and writes them in hash order, which differs between processes.
_SET_VALUED = ("target_modules", "modules_to_save", "exclude_modules")


def canonical_adapter_config(adapter_dir: Path) -> None:
    """Rewrite adapter_config.json with set-valued fields sorted, so identical runs give identical bytes."""
    import json

    from tselect.files import atomic_write

    path = Path(adapter_dir) / "adapter_config.json"
    config = json.loads(path.read_text())
    for key in _SET_VALUED:
        if isinstance(config.get(key), list) and all(isinstance(v, str) for v in config[key]):
            config[key] = sorted(config[key])
    atomic_write(path, json.dumps(config, indent=2, sort_keys=True))  # peft's own layout
