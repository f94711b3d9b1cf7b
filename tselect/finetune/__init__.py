"""The finetune stage: the first K examples of a selection (or a whole pool) → a trained model.

A LoRA run writes `adapter/` (plain peft format: `PeftModel.from_pretrained(base, adapter/)`
loads it); a full run writes `model/` (weights + tokenizer). Both write `train_curve.json`
(loss and learning rate per optimizer step) and record the run's cost in the manifest.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from tselect import artifacts, catalog, distributed, identity, lineage, progress, store
from tselect.errors import UserError
from tselect.runtime import Runtime, identity_extra
from tselect.training import SAVERS, TrainConfig, canonical_adapter_config, expected_steps, floor_warmup_linear, warmup_steps

FULL = "full"  # --selection full: train on the whole pool
# Where each method's output lives inside the artifact.
OUTPUT_DIR = {"lora": "adapter", "full": "model"}
# LoRA trains a small adapter, so the frozen base may stay in the device default (bf16 on GPU);
# full fine-tuning keeps fp32 master weights (autocast still computes in bf16 on GPU).
LOAD_DTYPE = {"lora": None, "full": "fp32"}
# A run takes at least this many optimizer steps, every one at lr > 0 (see fit_schedule).
MIN_OPTIMIZER_STEPS = 8


@dataclass(frozen=True)
class FinetuneConfig:
    selection: str
    """Selection artifact id, or "full" for the whole pool."""
    budget: int | None = None
    """Train on the first K examples of the selection; None = all of it."""
    pool: str | None = None
    """Pool data for --selection full; for a selection, where its pool now lives (rows found by id)."""
    model: str | None = None
    """Base model: a local HF causal-LM directory; None = the embedded SmolLM2."""
    fmt: str | None = None
    """Row format of a --pool file (chat, sharegpt, alpaca, prompt, text); None = auto-detect."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimization settings (method, LoRA shape, lr, epochs, batch sizes, max_length, seed)."""
    split: str | None = None
    """Split of a --pool DatasetDict or hub dataset (the rows enter the id by content)."""
    columns: tuple[tuple[str, str], ...] = ()
    """Column mapping (field, column) of a --pool file."""
    dedup: bool = False
    """Drop repeated conversations of a --pool file (keep the first)."""
    runtime: Runtime = field(default_factory=Runtime)
    """Hardware use: optimizer kernel, gradient checkpointing, DDP/FSDP (same math; 8-bit Adam is hashed)."""

    NOT_HASHED: ClassVar[dict[str, str]] = {
        "selection": "artifact id in the inputs", "pool": "enters the id by content hash (inputs)",
        "model": "enters the id by content fingerprint (inputs), never by path",
        "fmt": "only parses the pool, whose content hash is an input",
        "split": "the rows it picks enter the id by content hash", "columns": "the rows it picks enter the id by content hash", "dedup": "the rows it picks enter the id by content hash",
        "runtime": "how to run, not what: same math up to float order (an 8-bit optimizer enters the id)"}

    def __post_init__(self):
        if self.selection == FULL and not self.pool:
            raise ValueError("--selection full trains on a whole pool: pass --pool (e.g. --pool builtin:pool)")
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"--budget must be >= 1, got {self.budget}")



def _training_set(cfg: FinetuneConfig, root: Path):
    """(examples to train on, input ids for the artifact id, facts to record)."""
    from tselect.data import load_dataset

    if cfg.selection == FULL:
        pool = load_dataset(cfg.pool, cfg.fmt, split=cfg.split, columns=cfg.columns, dedup=cfg.dedup)
        n = len(pool) if cfg.budget is None else min(cfg.budget, len(pool))
        return pool.examples[:n], {"pool": pool.content_hash}, {"pool": lineage.data_location(cfg.pool), "n_pool": len(pool)}
    sel = catalog.resolve(root, cfg.selection, stage="select")
    # found by example id when the selection carries them, so --pool may point at a moved copy
    examples = tuple(ex for _, ex, _ in lineage.selected_examples(root, sel, cfg.budget, cfg.pool))
    feats = lineage.features_of(root, sel)
    return examples, {"selection": sel.id}, {"pool": cfg.pool or feats.record.get("pool"),
                                             "n_pool": feats.record.get("n_pool")}


def _hashed_config(cfg: FinetuneConfig) -> dict:
    # The data and the model enter the id through `inputs` (selection id / pool hash, model
    # fingerprint), so the same files under another path give the same id.
    return identity.hashed(cfg, **identity_extra(cfg.runtime))


def _reporter(total_hint: int):
    every = max(1, total_hint // 10)  # about ten lines per run

    def on_step(step: int, total: int, loss: float) -> None:
        if progress.enabled() and (step % every == 0 or step == total):
            progress.note(f"  step {step}/{total}  loss {loss:.4f}")

    return on_step


def _encode_checked(cfg: FinetuneConfig, examples, ref):
    """Training rows, checked before any artifact directory exists (a bad --max-length leaves nothing)."""
    from tselect.data.tokenize import encode
    from tselect.models import load_tokenizer

    enc = encode(examples, load_tokenizer(ref), cfg.train.max_length)
    if not enc.rows:
        raise UserError(f"none of the {len(examples)} training examples keeps a response token within "
                        f"--max-length {cfg.train.max_length}; raise --max-length")
    return enc


def fit_schedule(train: TrainConfig, n_rows: int) -> TrainConfig:
    """The optimization settings actually used for `n_rows` rows: at least MIN_OPTIMIZER_STEPS steps.

    When the requested schedule leaves fewer steps (e.g. 16 rows, effective batch 16, one epoch:
    a single step), gradient accumulation is lowered first, then the micro-batch; if even one row
    per step is too few (rows x epochs < MIN_OPTIMIZER_STEPS), epochs are raised to
    ceil(MIN_OPTIMIZER_STEPS / rows). The schedule (floor_warmup_linear) gives every step lr > 0.
    """
    if expected_steps(n_rows, train) >= MIN_OPTIMIZER_STEPS:
        return train
    options = [(train.batch_size, accum) for accum in range(train.grad_accum - 1, 0, -1)]
    options += [(bs, 1) for bs in range(train.batch_size - 1, 0, -1)]
    for bs, accum in options:
        fitted = dataclasses.replace(train, batch_size=bs, effective_batch_size=bs * accum)
        if expected_steps(n_rows, fitted) >= MIN_OPTIMIZER_STEPS:
            return fitted
    epochs = max(train.epochs, math.ceil(MIN_OPTIMIZER_STEPS / max(1, n_rows)))
    return dataclasses.replace(train, batch_size=1, effective_batch_size=1, epochs=epochs)


def _schedule_record(requested: TrainConfig, used: TrainConfig, lrs: list[float]) -> dict:
    """What the manifest records about the schedule actually applied."""
    if len(lrs) < MIN_OPTIMIZER_STEPS or min(lrs, default=0.0) <= 0.0:  # fit_schedule makes this impossible
        raise RuntimeError(f"finetune applied lrs {lrs[:4]}... over {len(lrs)} steps; refusing to publish")
    return {"optimizer_steps": len(lrs), "min_optimizer_steps": MIN_OPTIMIZER_STEPS,
            "batch_size": used.batch_size, "effective_batch_size": used.effective_batch_size, "epochs": used.epochs,
            "requested": {"batch_size": requested.batch_size, "effective_batch_size": requested.effective_batch_size,
                          "epochs": requested.epochs},
            "warmup_steps": warmup_steps(len(lrs), used.warmup_ratio), "rule": "floor_warmup_linear",
            "lr_first": lrs[0], "lr_max": max(lrs), "lr_last": lrs[-1]}


def _train_and_write(cfg: FinetuneConfig, enc, ref, build: artifacts.Build, told: list) -> None:
    """Rank 0: train (with the other ranks, told where the checkpoints live) and write the artifact."""
    used = fit_schedule(cfg.train, len(enc.rows))
    resume = build.path / "checkpoints"  # inside the .part: an interrupted run continues from here
    distributed.broadcast({"train": str(resume), "rows": enc.rows, "used": used, "ref": ref})
    told.append(True)
    result = _train(cfg, used, enc.rows, ref, resume)
    schedule = _schedule_record(cfg.train, used, result.lrs)
    shutil.rmtree(resume, ignore_errors=True)  # not part of the artifact
    out = build.path / OUTPUT_DIR[cfg.train.method]
    if cfg.train.method == "full":
        SAVERS["full"](result.model, out, result.state_dict)
        result.tokenizer.save_pretrained(out)  # a full model directory is loadable on its own
    else:
        SAVERS["lora"](result.model, out)
        canonical_adapter_config(out)
    steps = list(range(1, len(result.losses) + 1))
    store.write_json(build.path / "train_curve.json", {"step": steps, "loss": result.losses, "lr": result.lrs})
    build.record(n_train=len(enc.rows), n_skipped=len(enc.skipped), skipped=enc.skipped[:20],
                 method=cfg.train.method, output=OUTPUT_DIR[cfg.train.method],
                 final_loss=result.losses[-1] if result.losses else None, cost=result.cost, schedule=schedule)


def _train(cfg: FinetuneConfig, used, rows, ref, checkpoints: Path):
    """Every rank: load the base and train; returns the TrainResult with the tokenizer attached."""
    from tselect.models import load_model
    from tselect.training import train

    model, tok = load_model(ref, dtype=LOAD_DTYPE[cfg.train.method])
    on_step = _reporter(expected_steps(len(rows), used)) if distributed.is_main() else None
    result = train(model, rows, used, tok.pad_token_id, on_step=on_step, checkpoints=checkpoints,
                   schedule=floor_warmup_linear, runtime=cfg.runtime)
    result.tokenizer = tok
    return result


def _follow(cfg: FinetuneConfig) -> str:
    """Ranks other than 0 never touch the store: rank 0 holds the lock and tells them what to do."""
    msg = distributed.broadcast()
    if "error" in msg:
        raise UserError(msg["error"])
    if "train" in msg:
        _train(cfg, msg["used"], msg["rows"], msg["ref"], Path(msg["train"]))
        msg = distributed.broadcast()  # rank 0's id once the artifact is published
    return msg["done"]


def run(cfg: FinetuneConfig, root: Path) -> str:
    """The finetune id. Under torchrun every rank calls this; rank 0 alone reads and writes the store."""
    distributed.init()
    if not distributed.is_main():
        return _follow(cfg)
    told = []  # whether the other ranks were sent a message they act on
    try:
        aid = _produce(cfg, root, told)
    except Exception as e:
        if not told and distributed.world_size() > 1:
            distributed.broadcast({"error": str(e) if isinstance(e, UserError) else f"rank 0 failed: {e}"})
        raise
    distributed.broadcast({"done": aid})
    return aid


def _produce(cfg: FinetuneConfig, root: Path, told: list) -> str:
    from tselect.models import resolve_model
    from tselect.runtime import uses_fsdp

    uses_fsdp(cfg.runtime, cfg.train.method, distributed.world_size())  # refuses LoRA + FSDP before any .part

    examples, inputs, facts = _training_set(cfg, root)
    ref = resolve_model(cfg.model)
    inputs = {**inputs, "model": ref.fingerprint}

    hashed = _hashed_config(cfg)
    if artifacts.exists(root, artifacts.compute_id("finetune", hashed, inputs)):
        enc = None  # nothing to train: produce returns the finished artifact's id
    else:
        enc = _encode_checked(cfg, examples, ref)

    def write(build: artifacts.Build) -> None:
        build.record(model=cfg.model if cfg.model is None else lineage.data_location(cfg.model), model_path=str(ref.path),
                     n_selected=len(examples), **facts)
        rows = enc if enc is not None else _encode_checked(cfg, examples, ref)
        _train_and_write(cfg, rows, ref, build, told)

    aid = artifacts.produce(root, "finetune", hashed, inputs, write, resume=True)
    progress.note(f"finetune {cfg.train.method}: {len(examples)} examples → {aid}")
    return aid
