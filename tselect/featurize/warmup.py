"""LESS warmup: a short LoRA fine-tune on a seeded random slice of the pool, one checkpoint per epoch.

The warmup is its own artifact (stage "warmup"), keyed by (model, pool content, WarmupConfig)
and not by the query set, so every target featurized against the same pool reuses it.
Layout of `<root>/warmup/<id>/`:

    sample.json                           pool indices trained on (sorted) + skipped rows
    checkpoints.json                      [{name, step, epoch, mean_lr, loss}], in epoch order
    ckpt-<step>/adapter_config.json       LoRA weights in the standard PEFT layout
    ckpt-<step>/adapter_model.safetensors
    ckpt-<step>/exp_avg.safetensors       AdamW moments keyed by parameter NAME
    ckpt-<step>/exp_avg_sq.safetensors    (model.named_parameters() names, adapter "default")
    ckpt-<step>/state.json                step, epoch, per-step learning rates, mean lr, loss

The objective per optimizer step is the token-mean cross-entropy over all label tokens of its
micro-batches (so accumulation never changes the loss), with AdamW, linear warmup then linear
decay to 0, as in the HF Trainer setup LESS uses. torch/peft are imported inside functions:
the featurize package may import this module at CLI start-up.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tselect import artifacts, progress, store
from tselect.data.tokenize import IGNORE, batches
from tselect.data.types import Dataset


@dataclass(frozen=True)
class WarmupConfig:
    fraction: float = 0.05
    """Share of the pool trained on (seeded random sample)."""
    min_examples: int = 32
    """Floor on the sample size for small pools (capped at the pool size)."""
    epochs: int = 4
    """Epochs; one checkpoint after each."""
    lora_r: int = 128
    """LoRA rank."""
    lora_alpha: int = 512
    """LoRA scaling numerator (update scaled by alpha / r)."""
    lora_dropout: float = 0.1
    """Dropout on the LoRA input during warmup (featurization runs without it)."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Modules LoRA wraps."""
    lr: float = 2e-5
    """Peak AdamW learning rate."""
    warmup_ratio: float = 0.03
    """Share of optimizer steps spent ramping the learning rate up from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables it."""
    batch_size: int = 1
    """Rows per forward pass."""
    effective_batch_size: int = 128
    """Rows per optimizer step; a multiple of batch_size."""
    max_length: int = 2048
    """Tokens kept per row (right-truncated)."""
    seed: int = 0
    """Seeds the sample, the LoRA init, dropout and the data order."""

    def __post_init__(self):
        if not 0.0 < self.fraction <= 1.0 or self.min_examples < 1:
            raise ValueError(f"fraction={self.fraction} must be in (0, 1] and min_examples={self.min_examples} >= 1")
        if self.batch_size < 1 or self.effective_batch_size % self.batch_size:
            raise ValueError(f"effective_batch_size={self.effective_batch_size} must be a positive multiple "
                             f"of batch_size={self.batch_size}")
        if self.epochs < 1 or self.lr <= 0 or not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"epochs={self.epochs}, lr={self.lr}, warmup_ratio={self.warmup_ratio}: "
                             f"need epochs >= 1, lr > 0 and warmup_ratio in [0, 1)")


# "less": the LESS/TIS recipe for 7B models on GPUs. "cpu": sized for the embedded 135M model.
WARMUP_PRESETS: dict[str, WarmupConfig] = {
    "less": WarmupConfig(),
    "cpu": WarmupConfig(lora_r=8, lora_alpha=32, lr=1e-4, batch_size=8, effective_batch_size=16, max_length=256),
}


def sample_indices(n_pool: int, cfg: WarmupConfig) -> np.ndarray:
    """Sorted int64 indices of the warmup sample: max(min_examples, round(fraction·N)), ≤ N."""
    n = min(n_pool, max(cfg.min_examples, round(cfg.fraction * n_pool)))
    return np.sort(np.random.default_rng((cfg.seed, n_pool)).choice(n_pool, size=n, replace=False))


def step_groups(n_rows: int, epoch: int, cfg: WarmupConfig) -> list[list[list[int]]]:
    """The epoch's optimizer steps, each a list of micro-batches of row indices.

    The order is numpy default_rng((seed, epoch)).permutation, the same on any device; the last
    step of an epoch may be short.
    """
    order = np.random.default_rng((cfg.seed, epoch)).permutation(n_rows).tolist()
    micro = [order[s : s + cfg.batch_size] for s in range(0, n_rows, cfg.batch_size)]
    accum = cfg.effective_batch_size // cfg.batch_size
    return [micro[s : s + accum] for s in range(0, len(micro), accum)]


def _optimizer_step(model, rows, group, pad_id: int, device) -> float:
    """Accumulate Σ token CE / (label tokens in the whole step) over the micro-batches."""
    import torch.nn.functional as F

    n_tokens = sum(1 for mb in group for i in mb for t in rows[i].labels[1:] if t != IGNORE)
    total = 0.0
    for mb in group:
        _, ids, mask, labels = next(batches(rows, len(mb), pad_id, order=mb))  # right-padded [B, T]
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()  # [B, T-1, V]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                             ignore_index=IGNORE, reduction="sum")
        loss = ce / max(n_tokens, 1)
        loss.backward()
        total += float(loss.detach())
    return total


def wrap_lora(model, cfg: WarmupConfig):
    """Wrap in a fresh LoRA adapter, initialized from cfg.seed without touching global RNG."""
    import torch
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft 0.21 reads a property transformers 5 deprecated; the warning is noise for users.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        torch.manual_seed(cfg.seed)
        return get_peft_model(model, lora)


def save_checkpoint(model, optimizer, directory: Path, state: dict) -> None:
    """Adapter (PEFT layout) + AdamW moments keyed by parameter name + state.json."""
    directory.mkdir(parents=True, exist_ok=True)
    from tselect.finetune import canonical_adapter_config

    model.save_pretrained(str(directory), safe_serialization=True, save_embedding_layers=False)
    canonical_adapter_config(directory)  # peft writes target_modules in set order: bytes would vary per run
    moments: dict[str, dict] = {"exp_avg": {}, "exp_avg_sq": {}}
    for name, p in model.named_parameters():
        if p in optimizer.state:
            for key in moments:
                moments[key][name] = optimizer.state[p][key].detach().cpu()
    for key, tensors in moments.items():
        store.save_tensors(directory / f"{key}.safetensors", tensors, metadata={"step": str(state["step"])})
    store.write_json(directory / "state.json", state)


def train_warmup(model, rows, pad_id: int, cfg: WarmupConfig, out_dir: Path) -> list[dict]:
    """Train a LoRA on `rows` (EncodedRow) and write one checkpoint per epoch into out_dir.

    Returns the checkpoints' summaries [{name, step, epoch, mean_lr, loss}].
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    model = wrap_lora(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay)
    total = cfg.epochs * len(step_groups(len(rows), 0, cfg))
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(cfg.warmup_ratio * total), total)
    device, step, summaries = next(model.parameters()).device, 0, []
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # dropout masks
        for epoch in range(cfg.epochs):
            lrs, losses = [], []
            groups = step_groups(len(rows), epoch, cfg)
            for group in progress.track(groups, len(groups), f"warmup epoch {epoch + 1}/{cfg.epochs}"):
                lrs.append(float(schedule.get_last_lr()[0]))  # the lr this step actually uses
                losses.append(_optimizer_step(model, rows, group, pad_id, device))
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
            state = {"step": step, "epoch": epoch + 1, "lrs": lrs, "mean_lr": float(np.mean(lrs)),
                     "loss": float(np.mean(losses))}
            save_checkpoint(model, optimizer, out_dir / f"ckpt-{step}", state)
            summaries.append({"name": f"ckpt-{step}", **{k: state[k] for k in ("step", "epoch", "mean_lr", "loss")}})
    model.eval()
    return summaries


def produce_warmup(root: Path, model_spec: str | None, pool: Dataset, cfg: WarmupConfig) -> str:
    """The warmup artifact id for (model, pool, cfg), training it first if it is missing."""
    from tselect.data.tokenize import encode
    from tselect.models import load_model, resolve_model

    ref = resolve_model(model_spec)
    inputs = {"model": ref.fingerprint, "pool": pool.content_hash}

    def write(build: artifacts.Build) -> None:
        idx = sample_indices(len(pool), cfg)
        model, tok = load_model(ref)
        enc = encode([pool.examples[i] for i in idx], tok, cfg.max_length)
        if not enc.rows:
            raise ValueError(f"none of the {len(idx)} warmup rows has response tokens within "
                             f"max_length={cfg.max_length}; raise max_length")
        summaries = train_warmup(model, enc.rows, tok.pad_token_id, cfg, build.path)
        store.write_json(build.path / "sample.json", {"indices": [int(idx[k]) for k in enc.kept],
                                                      "skipped": [int(idx[k]) for k, _ in enc.skipped]})
        store.write_json(build.path / "checkpoints.json", summaries)
        build.record(n_examples=len(enc.rows), n_tokens=enc.n_tokens, steps=summaries[-1]["step"],
                     mean_lrs=[s["mean_lr"] for s in summaries], losses=[s["loss"] for s in summaries])

    return artifacts.produce(root, "warmup", dataclasses.asdict(cfg), inputs, write)


def read_checkpoints(warmup_dir: Path) -> list[dict]:
    """[{name, step, epoch, mean_lr, loss}] of a finished warmup artifact, in epoch order."""
    return store.read_json(Path(warmup_dir) / "checkpoints.json")


def load_moments(ckpt_dir: Path):
    """(exp_avg, exp_avg_sq, state) of a checkpoint: Adam moments by parameter name, optimizer state."""
    return (store.load_tensors(Path(ckpt_dir) / "exp_avg.safetensors"),
            store.load_tensors(Path(ckpt_dir) / "exp_avg_sq.safetensors"),
            store.read_json(Path(ckpt_dir) / "state.json"))


def load_checkpoint(base_model, ckpt_dir: Path):
    """(PeftModel with the checkpoint's adapter on base_model, exp_avg, exp_avg_sq, state).

    Wrapping modifies base_model in place: pass a freshly loaded base for every checkpoint
    (or swap adapters into one wrapped model with featurize.adapters.swap_adapter).
    """
    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        # On the base's device (not peft's guess of cuda:0); LoRA in the base dtype: the
        # per-example math upcasts to fp32 itself (grads._factor_grads, adam).
        model = PeftModel.from_pretrained(base_model, str(ckpt_dir), is_trainable=False, autocast_adapter_dtype=False,
                                          torch_device=str(next(base_model.parameters()).device))
    exp_avg = store.load_tensors(Path(ckpt_dir) / "exp_avg.safetensors")
    exp_avg_sq = store.load_tensors(Path(ckpt_dir) / "exp_avg_sq.safetensors")
    return model.eval(), exp_avg, exp_avg_sq, store.read_json(Path(ckpt_dir) / "state.json")
