"""LESS: per warmup checkpoint, projected LoRA gradients — Adam-preconditioned for the pool,
plain for the queries — L2-normalized, with checkpoint weights w_t ∝ mean learning rate.

Cosine similarity of these rows, summed over checkpoints with weights w_t, is the LESS
influence score Σ_t w_t cos(∇ℓ(q; θ_t), Γ(x; θ_t)). Gradients come from one batched
forward/backward per batch (grads.py) and are projected inside the backward hooks, so the
[B, P] gradient never exists. The warmup adapter is its own artifact (tselect.warmup), made by
the featurize stage and shared by every query set featurized against the same pool.

Options come from FeaturizeConfig `params` (("key", "value") pairs, like select's --param):
projection, dim, proj_seed, adam, warmup. torch is imported inside functions.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tselect.data.types import Dataset
from tselect.errors import UserError
from tselect.featurize.common import Checkpoint
from tselect.featurize.compute import compute_setup
from tselect.warmup import WARMUP_PRESETS, load_checkpoint, load_moments, read_checkpoints


@dataclass(frozen=True)
class LessConfig:
    projection: str = "sjlt"
    """Random projection: sjlt (sparse, O(P), the default everywhere), kronecker (two-sided per factor,
    dense quality) or rademacher (dense, LESS's choice; small P only, refuses above a budget)."""
    dim: int = 8192
    """Projected dimension per checkpoint."""
    proj_seed: int = 0
    """Projection seed; every shard and host must use the same one."""
    adam: str = "less"
    """Pool-gradient preconditioner: less (no bias correction, as LESS) or bias_corrected."""
    warmup: str = "cpu"
    """Warmup preset: cpu (r=8, for the embedded 135M model) or less (r=128, the LESS recipe)."""
    max_tokens: int = 0
    """Token budget per batch (rows × padded width); 0 = from free device memory on CUDA, off on CPU."""

    def __post_init__(self):
        from tselect.featurize.project import PROJECTIONS

        for key, value, choices in (("projection", self.projection, PROJECTIONS), ("adam", self.adam, ADAM),
                                    ("warmup", self.warmup, WARMUP_PRESETS)):
            if value not in choices:
                raise ValueError(f"less {key}={value!r} is unknown; choose one of {', '.join(choices)}")
        if self.dim < 1:
            raise ValueError(f"less dim={self.dim} must be >= 1")
        if self.max_tokens < 0:
            raise ValueError(f"less max_tokens={self.max_tokens} must be >= 0 (0 = automatic)")


def _options(lc: LessConfig) -> dict:
    """LessConfig as hashed: max_tokens only when set, so ids from before it existed still match."""
    d = dataclasses.asdict(lc)
    if not lc.max_tokens:
        d.pop("max_tokens")
    return d


def _adam_less(exp_avg, exp_avg_sq, state) -> Callable:
    from tselect.featurize.adam import adam_transform

    return adam_transform(exp_avg, exp_avg_sq)


def _adam_bias_corrected(exp_avg, exp_avg_sq, state) -> Callable:
    from tselect.featurize.adam import adam_transform_bias_corrected

    return adam_transform_bias_corrected(exp_avg, exp_avg_sq, step=int(state["step"]) + 1)  # the next update


ADAM: dict[str, Callable] = {"less": _adam_less, "bias_corrected": _adam_bias_corrected}


def less_config(cfg) -> LessConfig:
    """LessConfig from cfg.params (("key", "value") pairs); unknown keys name the valid ones."""
    fields = {f.name: f.type for f in dataclasses.fields(LessConfig)}
    values = {}
    for key, raw in getattr(cfg, "params", ()) or ():
        if key not in fields:
            raise UserError(f"--param {key} is not a less option; use one of {', '.join(fields)}")
        if fields[key] == "int":
            from tselect.validate import parse_number

            values[key] = parse_number(key, raw, int, f"--param {key}")  # 1e999, inf: one line
        else:
            values[key] = raw
    try:
        return LessConfig(**values)
    except ValueError as e:
        raise UserError(str(e)) from None


def identity(cfg) -> dict[str, str]:
    """Model fingerprint and the resolved options (the preset's contents, not just its name)."""
    from tselect import identity as ident
    from tselect.models import resolve_model
    from tselect.warmup import FORMAT

    lc = less_config(cfg)
    resolved = {"less": _options(lc), "warmup": ident.hashed(WARMUP_PRESETS[lc.warmup], format=FORMAT)}
    return {"model": resolve_model(cfg.model).fingerprint, "less": json.dumps(resolved, sort_keys=True)}


def warmup_recipe(cfg):
    """The recipe of the nested warmup artifact (the featurize stage makes it before `run`)."""
    return WARMUP_PRESETS[less_config(cfg).warmup]


def pool_key_for(cfg, pool: Dataset, warmup_id: str) -> str:
    """pool_key from a FeaturizeConfig (the stage looks for a donor with it)."""
    return pool_key(cfg, less_config(cfg), warmup_id, pool, compute_setup())


def gradient_rows(model, rows, pad_id: int, batch_size: int, projector, transform=None,
                  advance: Callable[[int], None] | None = None, max_tokens: int | None = None) -> np.ndarray:
    """[len(rows), dim] fp32 projected gradients, batched by length (results in input order).

    Batches hold at most batch_size rows and, with max_tokens, at most max_tokens padded tokens;
    a batch that runs out of device memory is retried in halves (batching.run_split).
    advance(n) is called after each finished batch of n rows (progress reporting).
    """
    from tselect.data.tokenize import batches
    from tselect.featurize.batching import row_groups, run_split
    from tselect.featurize.grads import projected_grads

    device = next(model.parameters()).device
    out = np.zeros((len(rows), projector.dim), dtype=np.float32)

    def one(idx: list[int]) -> np.ndarray:
        _, ids, mask, labels = next(batches(rows, len(idx), pad_id, order=idx))
        batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}
        return projected_grads(model, batch, projector, transform).cpu().numpy()

    for idx in row_groups([len(r.input_ids) for r in rows], batch_size, max_tokens):
        run_split(one, idx, out, advance)
    return out


class _Checkpoint:
    """The model with one warmup checkpoint's adapter + its moments, loaded on first use, so
    finished checkpoints load nothing. `shared` holds the model across checkpoints: the base is
    loaded once per process and later checkpoints swap their adapter weights in (adapters.py)."""

    def __init__(self, model_spec: str | None, ckpt_dir: Path, shared: dict | None = None):
        self.model_spec, self.ckpt_dir, self._loaded = model_spec, ckpt_dir, None
        self.shared = {} if shared is None else shared

    def _model(self):
        from tselect.featurize.adapters import swap_adapter
        from tselect.models import load_model, resolve_model

        if "model" not in self.shared:
            base, tok = load_model(resolve_model(self.model_spec))
            model, exp_avg, exp_avg_sq, state = load_checkpoint(base, self.ckpt_dir)
            self.shared.update(model=model, tok=tok)
            return model, exp_avg, exp_avg_sq, state
        model = self.shared["model"]
        swap_adapter(model, self.ckpt_dir)
        return (model, *load_moments(self.ckpt_dir))

    def get(self):
        if self._loaded is None:
            import torch

            from tselect.featurize.adam import check_moments
            from tselect.featurize.grads import lora_param_names

            model, exp_avg, exp_avg_sq, state = self._model()
            shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
            check_moments({n: shapes[n] for n in lora_param_names(model)}, exp_avg, exp_avg_sq)
            device = next(model.parameters()).device
            if device.type == "cuda":  # TF32 for the fp32 per-example bmm and projection matmuls
                torch.backends.cuda.matmul.allow_tf32 = True
                torch.backends.cudnn.allow_tf32 = True
            m, v = ({k: t.to(device=device, dtype=torch.float32) for k, t in d.items()} for d in (exp_avg, exp_avg_sq))
            self._loaded = (model, self.shared["tok"], m, v, state)
        return self._loaded

    def release(self) -> None:
        """Drop this checkpoint's moments (the shared model stays for the next checkpoint)."""
        self._loaded = None


def _max_tokens(cfg, lc: LessConfig, model) -> int | None:
    """--param max_tokens, else the planner's budget from free CUDA memory, else None (CPU)."""
    from tselect.featurize.plan import auto_max_tokens

    if lc.max_tokens:
        return lc.max_tokens
    preset = WARMUP_PRESETS[lc.warmup].train
    return auto_max_tokens(model, cfg.max_length, preset.lora_r, preset.target_modules, lc.projection, lc.dim)


def _rows_fn(cfg, ckpt: _Checkpoint, rows: list, projector, adam: str | None):
    """rows_fn(start, stop, advance) for write_unit_rows; adam=None gives plain gradients."""
    budget: list[int | None] = []  # computed once per checkpoint, on first use

    def rows_fn(start: int, stop: int, advance: Callable[[int], None]) -> np.ndarray:
        model, tok, exp_avg, exp_avg_sq, state = ckpt.get()
        if not budget:
            budget.append(_max_tokens(cfg, less_config(cfg), model))
        transform = None if adam is None else ADAM[adam](exp_avg, exp_avg_sq, state)
        part = rows[start:stop]
        if any(r is None for r in part):  # the stage asks only for this shard's chunks
            raise RuntimeError(f"rows {start}:{stop} were not tokenized by this shard")
        return gradient_rows(model, part, tok.pad_token_id, cfg.batch_size, projector, transform, advance,
                             max_tokens=budget[0])

    return rows_fn


def pool_key(cfg, lc: LessConfig, warmup_id: str, pool: Dataset, setup: dict | None = None) -> str:
    """What the pool rows depend on (not the queries): equal keys mean byte-identical pool rows."""
    import hashlib

    parts = {"warmup": warmup_id, "less": _options(lc), "max_length": cfg.max_length,
             "batch_size": cfg.batch_size, "dtype": cfg.dtype, "pool": pool.content_hash, **(setup or {})}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def checkpoint_rows(cfg, lc: LessConfig, ckpt: _Checkpoint, encoded: dict[str, list], name: str,
                    projector=None) -> Checkpoint:
    """One warmup checkpoint's rows: plain (SGD) gradients for the queries, the Adam update
    direction for the pool; nothing is loaded until the first row is asked for. `projector`:
    one shared by every checkpoint (its hash tables depend only on names, dim and seed)."""
    from tselect.featurize.project import make_projector

    projector = projector or make_projector(lc.projection, lc.dim, lc.proj_seed)
    return Checkpoint(name, lc.dim, _rows_fn(cfg, ckpt, encoded["query"], projector, None),
                      _rows_fn(cfg, ckpt, encoded["pool"], projector, lc.adam))


def _checkpoints(cfg, lc: LessConfig, warmup_dir: Path, ckpts: list[dict], encoded: dict) -> Iterator[Checkpoint]:
    """Each checkpoint's rows in turn. One base model per process: later checkpoints swap their
    adapter in; a checkpoint's moments are released once the stage has written its rows."""
    from tselect.featurize.project import make_projector

    shared: dict = {}
    projector = make_projector(lc.projection, lc.dim, lc.proj_seed)  # tables built once, not per checkpoint
    for c in ckpts:
        ckpt = _Checkpoint(cfg.model, warmup_dir / c["name"], shared)
        yield checkpoint_rows(cfg, lc, ckpt, encoded, c["name"], projector)
        ckpt.release()
    shared.clear()


def _encode_owned(cfg, lc: LessConfig, data: Dataset, tok) -> list:
    """Encoded rows of this shard's chunks (common.owned_rows); None for rows another shard computes."""
    from tselect.data.tokenize import encode_example
    from tselect.featurize.common import owned_rows

    out: list = [None] * len(data.examples)
    for i in owned_rows(len(out), lc.dim, cfg.dtype):
        out[i] = encode_example(data.examples[i], tok, cfg.max_length)
    return out


def rows(cfg, pool: Dataset, query: Dataset, warmup: tuple[str, Path]) -> tuple[dict, Iterator[Checkpoint]]:
    """The `less` representation: attrs, then the rows of each checkpoint of a finished, verified
    warmup (made by the featurize stage), yielded one at a time so one model is loaded at a time.

    Only this shard's rows are tokenized (a torchrun rank or --shard i/N computes chunks
    c ≡ i mod N). Rows without label tokens (e.g. the response truncated away) have a zero
    gradient and are stored as zero rows, which score 0 against every query; attrs["empty_rows"]
    lists this shard's, and the stage merges every shard's into zero_rows / empty_pool_rows.
    """
    from tselect.models import load_tokenizer, resolve_model
    from tselect.tokens import IGNORE

    lc = less_config(cfg)
    warmup_id, warmup_dir = warmup
    ckpts = read_checkpoints(warmup_dir)
    tok = load_tokenizer(resolve_model(cfg.model))
    encoded = {name: _encode_owned(cfg, lc, data, tok) for name, data in (("query", query), ("pool", pool))}
    setup = compute_setup()  # recorded in attrs; the stage refuses shards from another setup
    key = pool_key(cfg, lc, warmup_id, pool, setup)
    checkpoints = _checkpoints(cfg, lc, warmup_dir, ckpts, encoded)
    lrs = np.array([c["mean_lr"] for c in ckpts], dtype=np.float64)
    weights = (lrs / lrs.sum()).tolist()  # w_t = η̄_t / Σ η̄: only relative lr matters
    empty = {name: [i for i, r in enumerate(rows) if r is not None and all(t == IGNORE for t in r.labels)]
             for name, rows in encoded.items()}
    attrs = {"dim": lc.dim, "checkpoints": [c["name"] for c in ckpts], "weights": weights, "warmup": warmup_id,
             "projection": lc.projection, "proj_seed": lc.proj_seed, "adam": lc.adam,
             "gradients": {"pool": "adam", "query": "sgd"}, "steps": [c["step"] for c in ckpts],
             "empty_rows": empty, "pool_key": key, "compute": setup}
    return attrs, checkpoints
