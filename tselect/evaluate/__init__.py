"""The evaluate stage: a base model (± a finetune artifact) on a target's eval and query splits.

- Query loss: each query example's token-mean cross-entropy on its answer tokens (the same
  encoding and masking as training), averaged over examples, as in TIS's query-CE diagnostic.
- Eval rows with `choices`/`gold` meta: log-likelihood multiple choice, acc and acc_norm
  (length-normalized by characters, see tselect.metrics.mc_predict).
- Eval rows with `answers` meta: greedy generation scored by exact match, token F1 and, when
  the gold is a number, numeric match (GSM8K style).
Per-example results are kept in metrics.json; the summary also goes into the manifest record.

Modules: prompts (chat / plain renderings), subject (what is evaluated and its loader), measure
(the measurements and --metrics modes), ranks (the split across ranks under torchrun),
generate (batched greedy generation), fewshot (K-shot prompts).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tselect import artifacts, catalog, identity, progress, store
from tselect.data.tokenize import MAX_LENGTH
from tselect.errors import UserError
from tselect.evaluate.measure import MEASURES, eval_loss_and_mc, generate_scored, query_losses, score_mc
from tselect.evaluate.prompts import PLAIN_CUE, PROMPTS
from tselect.evaluate.subject import subject

__all__ = ["EvaluateConfig", "run", "eval_spec", "hashed_config", "accuracy_text", "PROMPTS", "PLAIN_CUE",
           "query_losses", "score_mc", "eval_loss_and_mc", "generate_scored"]


@dataclass(frozen=True)
class EvaluateConfig:
    target: str = "builtin:sciq"
    """Query split: builtin:<task> or a file; its loss is the query loss."""
    eval_data: str | None = None
    """Eval split; None = <target>:eval for builtin targets, else no eval split."""
    finetune: str | None = None
    """Finetune artifact id to evaluate; None = the base model (zero-shot)."""
    model: str | None = None
    """Base model dir when no finetune is given; None = the embedded SmolLM2 (with --adapter: the
    adapter's base_model_name_or_path)."""
    adapter: str | None = None
    """A peft adapter directory (any, not only tselect's) applied to `model`."""
    fmt: str | None = None
    """Row format of target/eval files (chat, sharegpt, alpaca, prompt, text); None = auto-detect."""
    prompt_format: str = "chat"
    """"chat": prompts rendered with the chat template, as in training; "plain": context + "\\nAnswer:"."""
    limit: int | None = None
    """Use only the first N eval rows and the first N query rows."""
    batch_size: int = 8
    """Sequences per forward pass."""
    max_length: int = MAX_LENGTH
    """Token limit per scored sequence (contexts are cut from the left)."""
    max_new_tokens: int = 32
    """Generation length for rows scored by exact match / F1."""
    split: str | None = None
    """Split of a target DatasetDict or hub dataset (the rows enter the id by content)."""
    eval_split: str | None = None
    """Split of the eval data, likewise."""
    columns: tuple[tuple[str, str], ...] = ()
    """Column mapping (field, column) of target and eval files."""

    metrics: str = "all"
    """"all": query loss, held-out loss and task metrics; "loss": query and held-out loss only."""
    shots: int = 0
    """Few-shot: K solved examples from the target's query split before each eval item (0 = zero-shot)."""
    shot_seed: int = 0
    """Seed of the draw of the K shots."""

    NOT_HASHED: ClassVar[dict[str, str]] = {
        "target": "enters the id by content hash (inputs: query)", "eval_data": "enters the id by content hash (inputs: eval)",
        "finetune": "artifact id in the inputs", "model": "enters the id by content fingerprint (inputs), never by path",
        "adapter": "enters the id by the sha256 of its files (inputs: adapter), never by path",
        "fmt": "only parses the data, whose content hashes are inputs",
        "split": "the rows it picks enter the id by content hash", "eval_split": "the rows it picks enter the id by content hash", "columns": "the rows it picks enter the id by content hash"}

    def __post_init__(self):
        if self.metrics not in MEASURES:
            raise ValueError(f"--metrics {self.metrics!r} is unknown; use one of {', '.join(MEASURES)}")
        if self.prompt_format not in PROMPTS:
            raise ValueError(f"--prompt-format {self.prompt_format!r} is unknown; use one of {', '.join(PROMPTS)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.shots < 0:
            raise ValueError(f"--shots must be >= 0, got {self.shots}")
        if self.batch_size < 1 or self.max_length < 8:
            raise ValueError(f"--batch-size {self.batch_size} / --max-length {self.max_length}: need >= 1 / >= 8")


def eval_spec(cfg: EvaluateConfig) -> str | None:
    if cfg.eval_data is not None:
        return cfg.eval_data
    return f"{cfg.target}:eval" if cfg.target.startswith("builtin:") and cfg.target.count(":") == 1 else None


def _scorable(ex) -> bool:
    return ("choices" in ex.meta and "gold" in ex.meta) or "answers" in ex.meta


def _datasets(cfg: EvaluateConfig):
    from tselect.data import load_dataset
    from tselect.data.builtin import builtin_names

    spec = eval_spec(cfg)
    if spec is not None and cfg.eval_data is None and spec not in builtin_names():
        with_eval = ", ".join(n[: -len(":eval")] for n in builtin_names() if n.endswith(":eval"))
        raise UserError(f"--target {cfg.target} has no eval split; pass --eval-data FILE or use a target "
                        f"that has one ({with_eval})")
    query = load_dataset(cfg.target, cfg.fmt, split=cfg.split, columns=cfg.columns, flag="--target")
    evalset = load_dataset(spec, cfg.fmt, split=cfg.eval_split, columns=cfg.columns, flag="--eval-data") if spec else None
    if evalset is not None and not any(_scorable(ex) for ex in evalset.examples[: cfg.limit]):
        raise UserError(f"eval data {spec}: no row carries `choices` + `gold` (multiple choice) or `answers` "
                        "(generation), so nothing can be scored; add them to the rows or drop --eval-data")
    return query, evalset


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    ev = metrics["eval"]
    mc, gen = ev.get("mc", {}), ev.get("generation", {})
    return {"query_loss": metrics["query"]["loss"], "eval_loss": ev.get("loss", {}).get("loss"),
            "n_query": metrics["query"]["n"], "n_eval": ev["n"],
            "acc": mc.get("acc"), "acc_se": mc.get("acc_se"), "acc_norm": mc.get("acc_norm"),
            "acc_norm_se": mc.get("acc_norm_se"), "em": gen.get("em"), "em_se": gen.get("em_se"), "f1": gen.get("f1"),
            "num_em": gen.get("num_em"), "num_em_se": gen.get("num_em_se")}


def accuracy_text(record: dict[str, Any]) -> str:
    """': acc 0.620 ± 0.049 (n=100), ...' for the accuracies a record holds (± one standard error)."""
    parts = [f"{k} {record[k]:.3f} ± {record[f'{k}_se']:.3f}" for k in ("acc", "acc_norm", "em", "num_em")
             if record.get(k) is not None and record.get(f"{k}_se") is not None]
    return f": {', '.join(parts)} (n={record.get('n_eval')})" if parts else ""


def hashed_config(cfg: EvaluateConfig) -> dict[str, Any]:
    """The config part of the id. Measurements made before --metrics existed keep their ids ("all"
    is not hashed), and zero-shot ones made before --shots existed too (shots=0 is not hashed)."""
    return identity.hashed(cfg, also_excluded=(("metrics",) if cfg.metrics == "all" else ())
                           + (("shots", "shot_seed") if cfg.shots == 0 else ()))


def run(cfg: EvaluateConfig, root: Path) -> str:
    """The evaluate id. Under torchrun every rank calls this: rank 0 reads the store, decides what
    to score and writes the artifact; every forward pass (losses, choices, generation) is split
    across the ranks and gathered on rank 0 (tselect.evaluate.ranks), so the metrics equal one
    process's."""
    from tselect import distributed
    from tselect.evaluate import ranks

    distributed.init()
    if not distributed.is_main():
        return ranks.follow(lambda: subject(cfg, root)[1]())  # reads the model's files; never writes the store
    try:
        aid = _produce(cfg, root)
    except Exception as e:
        if ranks.waiting():  # the others wait for a message, not inside one of rank 0's collectives
            distributed.broadcast({"error": str(e) if isinstance(e, UserError) else f"rank 0 failed: {e}"})
        raise
    distributed.broadcast({"done": aid})
    return aid


def _produce(cfg: EvaluateConfig, root: Path) -> str:
    from tselect.evaluate import ranks

    query, evalset = _datasets(cfg)
    who, load = subject(cfg, root)
    inputs = {**who, "query": query.content_hash}
    if evalset is not None:
        inputs["eval"] = evalset.content_hash
    hashed = hashed_config(cfg)

    def write(build: artifacts.Build) -> None:
        model, tok = load()
        start = time.perf_counter()
        ranks.start_count()
        metrics = MEASURES[cfg.metrics](cfg, model, tok, query, evalset)
        per_rank = ranks.run(model, tok, "scored_per_rank")  # how the forward passes were split
        facts = {"target": cfg.target, "eval_data": eval_spec(cfg), "finetune": cfg.finetune,
                 "model": cfg.model, "adapter": cfg.adapter, "prompt_format": cfg.prompt_format, "limit": cfg.limit,
                 "metrics_mode": cfg.metrics, "shots": cfg.shots}
        store.write_json(build.path / "metrics.json", {**facts, **metrics})
        build.record(**facts, **_summary(metrics), seconds=round(time.perf_counter() - start, 3),
                     device=str(next(model.parameters()).device), scored_per_rank=per_rank)

    aid = artifacts.produce(root, "evaluate", hashed, inputs, write)
    progress.note(f"evaluate {cfg.finetune or cfg.model or 'builtin:smollm2'} on {cfg.target} → {aid}"
                  + accuracy_text(catalog.resolve(root, aid).record))
    return aid
