"""LESS warmup: a short LoRA fine-tune on a seeded random slice of the pool, one checkpoint per epoch.

The warmup is its own artifact (stage "warmup"), keyed by (model, pool content, WarmupRecipe)
and not by the query set, so every target featurized against the same pool reuses it.
Layout of `<root>/warmup/<id>/`:

    sample.json                           pool indices trained on (sorted) + skipped rows
    checkpoints.json                      [{name, step, epoch, mean_lr, loss}], in epoch order
    ckpt-<step>/adapter_config.json       LoRA weights in the standard PEFT layout
    ckpt-<step>/adapter_model.safetensors
    ckpt-<step>/exp_avg.safetensors       AdamW moments keyed by parameter NAME
    ckpt-<step>/exp_avg_sq.safetensors    (model.named_parameters() names, adapter "default")
    ckpt-<step>/state.json                step, epoch, mean lr, mean loss of the epoch

Training is `tselect.training.train` (the loop finetune uses: token-mean CE per optimizer step,
AdamW, linear warmup then linear decay, data order seeded by (seed, epoch)) with an `on_epoch`
hook that writes each checkpoint. Under torchrun every rank calls produce_warmup: rank 0 owns
the store (distributed.owned: lock, `.part`, manifest), every rank trains its share of each
optimizer step (DDP, rank_share). torch/peft are imported inside functions: the featurize
package imports this module at CLI start-up.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from tselect import artifacts, catalog, identity, progress, store
from tselect.data.types import Dataset
from tselect.errors import UserError
from tselect.training import TrainConfig

# Bump when warmup checkpoints change for the same recipe (2: trained by training.train, the HF Trainer).
FORMAT = 2
_LESS_TRAIN = TrainConfig(lora_r=128, lora_alpha=512, lora_dropout=0.1, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
                          lr=2e-5, epochs=4, batch_size=1, effective_batch_size=128, warmup_ratio=0.03,
                          weight_decay=0.0, max_grad_norm=1.0, max_length=2048, seed=0)


@dataclass(frozen=True)
class WarmupRecipe:
    train: TrainConfig = _LESS_TRAIN
    """LoRA training settings (method lora; epochs = checkpoints; seed also seeds the sample)."""
    fraction: float = 0.05
    """Share of the pool trained on (seeded random sample)."""
    min_examples: int = 32
    """Floor on the sample size for small pools (capped at the pool size)."""

    NOT_HASHED: ClassVar[dict[str, str]] = {}

    def __post_init__(self):
        if not 0.0 < self.fraction <= 1.0 or self.min_examples < 1:
            raise ValueError(f"fraction={self.fraction} must be in (0, 1] and min_examples={self.min_examples} >= 1")
        if self.train.method != "lora":
            raise ValueError(f"warmup trains a LoRA adapter; method={self.train.method!r} must be 'lora'")


def _recipe(**train) -> WarmupRecipe:
    return WarmupRecipe(train=TrainConfig(**{**_LESS_TRAIN.__dict__, **train}))


# "less": the LESS/TIS recipe for 7B models on GPUs. "cpu": sized for the embedded 135M model.
WARMUP_PRESETS: dict[str, WarmupRecipe] = {
    "less": WarmupRecipe(),
    "cpu": _recipe(lora_r=8, lora_alpha=32, lr=1e-4, batch_size=8, effective_batch_size=16, max_length=256),
}


def sample_indices(n_pool: int, cfg: WarmupRecipe) -> np.ndarray:
    """Sorted int64 indices of the warmup sample: max(min_examples, round(fraction·N)), ≤ N."""
    n = min(n_pool, max(cfg.min_examples, round(cfg.fraction * n_pool)))
    return np.sort(np.random.default_rng((cfg.train.seed, n_pool)).choice(n_pool, size=n, replace=False))


def save_checkpoint(model, moments: dict[str, dict], directory: Path, state: dict) -> None:
    """Adapter (PEFT layout) + AdamW moments keyed by parameter name + state.json.

    moments: training.adam_moments' {name: {exp_avg, exp_avg_sq, step}}.
    """
    from tselect.training import canonical_adapter_config

    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory), safe_serialization=True, save_embedding_layers=False)
    canonical_adapter_config(directory)  # peft writes target_modules in set order: bytes would vary per run
    for key in ("exp_avg", "exp_avg_sq"):
        tensors = {name: m[key] for name, m in moments.items()}
        store.save_tensors(directory / f"{key}.safetensors", tensors, metadata={"step": str(state["step"])})
    store.write_json(directory / "state.json", state)


def rank_share(train: TrainConfig, world: int) -> TrainConfig:
    """The settings each of `world` data-parallel ranks trains with: same rows per optimizer step.

    training.local_grad_accum counts effective_batch_size over ALL ranks, so only the micro-batch
    changes: the largest divisor of effective_batch_size / world up to batch_size. Each step still
    averages the same rows' token-mean loss (up to float order), so the recipe and its id do not
    depend on the launch. An effective batch that does not split over the ranks is refused.
    """
    if world <= 1:
        return train
    eff = train.effective_batch_size
    if eff % world:
        raise UserError(f"the warmup's effective batch of {eff} rows does not split over {world} processes; "
                        f"launch a number of processes that divides {eff}, or run `tselect warmup` in one process first")
    share = eff // world
    micro = max(d for d in range(1, min(train.batch_size, share) + 1) if share % d == 0)
    return dataclasses.replace(train, batch_size=micro)


def train_warmup(model, rows, pad_id: int, cfg: WarmupRecipe, out_dir: Path) -> tuple[list[dict], dict]:
    """Train a LoRA on `rows` (EncodedRow) and write one checkpoint per epoch into out_dir.

    Under a multi-process launch this is rank 0's share of a DDP run (the other ranks run
    `_train_share` with the same settings); only this rank writes. Returns the checkpoints'
    summaries [{name, step, epoch, mean_lr, loss}] and the run's cost (training.train's, plus
    the per-rank micro_batch).
    """
    from tselect import distributed
    from tselect.runtime import Runtime
    from tselect.training import expected_steps, train

    used = rank_share(cfg.train, distributed.world_size())
    losses: list[float] = []  # the current epoch's per-step losses
    summaries: list[dict] = []
    every = max(1, expected_steps(len(rows), cfg.train) // 10)

    def on_step(step: int, total: int, loss: float) -> None:
        losses.append(loss)
        if progress.enabled() and (step % every == 0 or step == total):
            progress.note(f"  warmup step {step}/{total}  loss {loss:.4f}")

    def on_epoch(epoch: int, trained, moments: dict, mean_lr: float) -> None:
        step = max((m["step"] for m in moments.values()), default=0)
        state = {"step": step, "epoch": epoch, "mean_lr": mean_lr, "loss": float(np.mean(losses)) if losses else 0.0}
        save_checkpoint(trained, moments, out_dir / f"ckpt-{step}", state)
        summaries.append({"name": f"ckpt-{step}", **state})
        losses.clear()

    # runtime: DDP over every rank of the launch (one process: the plain loop)
    result = train(model, rows, used, pad_id, on_step=on_step, on_epoch=on_epoch, runtime=Runtime())
    return summaries, {**result.cost, "micro_batch": used.batch_size}


def _train_share(job: dict) -> None:
    """A rank other than 0: load the base and train its share of rank 0's run; writes nothing."""
    from tselect.models import load_model
    from tselect.runtime import Runtime
    from tselect.training import train

    model, _ = load_model(job["ref"])
    train(model, job["rows"], job["train"], job["pad_id"], runtime=Runtime())


def produce_warmup(root: Path, model_spec: str | None, pool: Dataset, cfg: WarmupRecipe) -> str:
    """The warmup artifact id for (model, pool, cfg), training it first if it is missing.

    Under torchrun every rank calls this: rank 0 alone holds the lock and writes the artifact,
    every rank trains its share of the rows (DDP), every rank returns the id.
    """
    from tselect import distributed
    from tselect.models import resolve_model

    ref = resolve_model(model_spec)
    inputs = {"model": ref.fingerprint, "pool": pool.content_hash}

    def lead(handle: distributed.Lead) -> str:
        return artifacts.produce(root, "warmup", identity.hashed(cfg, format=FORMAT), inputs,
                                 lambda build: _write(build, ref, pool, cfg, handle))

    return distributed.owned(lead, _train_share)


def _write(build: artifacts.Build, ref, pool: Dataset, cfg: WarmupRecipe, handle) -> None:
    """Rank 0: sample and encode the rows, train them with the other ranks, write the artifact."""
    from tselect import distributed
    from tselect.data.tokenize import encode
    from tselect.models import load_model

    idx = sample_indices(len(pool), cfg)
    used = rank_share(cfg.train, distributed.world_size())  # refuses before any rank loads a model
    model, tok = load_model(ref)
    enc = encode([pool.examples[i] for i in idx], tok, cfg.train.max_length)
    if not enc.rows:
        raise UserError(f"none of the {len(idx)} warmup rows has response tokens within "
                        f"max_length={cfg.train.max_length}; use a preset with a larger max_length")
    job = {"ref": ref, "rows": enc.rows, "train": used, "pad_id": tok.pad_token_id}
    summaries, cost = handle.job(job, lambda: train_warmup(model, enc.rows, tok.pad_token_id, cfg, build.path))
    store.write_json(build.path / "sample.json", {"indices": [int(idx[k]) for k in enc.kept],
                                                  "skipped": [int(idx[k]) for k, _ in enc.skipped]})
    store.write_json(build.path / "checkpoints.json", summaries)
    build.record(n_examples=len(enc.rows), n_tokens=enc.n_tokens, steps=summaries[-1]["step"],
                 mean_lrs=[s["mean_lr"] for s in summaries], losses=[s["loss"] for s in summaries],
                 world_size=cost["world_size"], micro_batch=cost["micro_batch"], sharding=cost["sharding"],
                 wall_seconds=cost["wall_seconds"])


@dataclass(frozen=True)
class WarmupConfig:
    pool: str = "builtin:pool"
    """Pool whose seeded random fraction warms the LoRA up (builtin:*, JSONL or save_to_disk dir)."""
    model: str | None = None
    """Local HF causal-LM directory; None = the embedded SmolLM2."""
    preset: str = "cpu"
    """A key of WARMUP_PRESETS: cpu (r=8, embedded model) or less (r=128, the LESS recipe)."""
    fmt: str | None = None
    """Row layout of a pool file (chat, sharegpt, alpaca, prompt, text); None = auto-detect."""
    split: str | None = None
    """Split of a DatasetDict dir or hub dataset pool."""
    columns: tuple[tuple[str, str], ...] = ()
    """Column mapping (field, column) of the pool."""
    dedup: bool = False
    """Drop repeated conversations (keep the first) instead of failing."""

    NOT_HASHED: ClassVar[dict[str, str]] = {
        "pool": "enters the id by content hash (inputs)", "model": "enters the id by content fingerprint (inputs)",
        "fmt": "only parses the pool, whose content hash is an input",
        "split": "the rows it picks enter the id by content hash", "columns": "the rows it picks enter the id by content hash",
        "dedup": "the rows it picks enter the id by content hash",
        "preset": "resolved: the preset's WarmupRecipe contents are hashed, not its name"}

    def __post_init__(self):
        if self.preset not in WARMUP_PRESETS:
            raise ValueError(f"unknown --preset '{self.preset}'; choose one of {', '.join(WARMUP_PRESETS)}")


def run(cfg: WarmupConfig, root: Path) -> str:
    """The warmup stage: the artifact id for (model, pool, preset), training it first if it is missing."""
    from tselect.data import load_dataset

    pool = load_dataset(cfg.pool, cfg.fmt, split=cfg.split, columns=cfg.columns, dedup=cfg.dedup)
    return produce_warmup(root, cfg.model, pool, WARMUP_PRESETS[cfg.preset])


def verify_warmup(root: Path, warmup_id: str) -> None:
    """A corrupt checkpoint (truncated adapter, flipped bytes in the moments) is never used."""
    problems = catalog.verify(catalog.resolve(root, warmup_id, stage="warmup"))
    if problems:
        raise UserError(f"warmup {warmup_id} is corrupt ({problems[0]}); remove it with `tselect rm {warmup_id}` "
                        "and rerun featurize, which retrains it")


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
    return (model.eval(), *load_moments(ckpt_dir))
