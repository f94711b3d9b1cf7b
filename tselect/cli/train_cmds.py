"""finetune and evaluate commands."""

from __future__ import annotations

from typing import Annotated

import typer

from tselect.cli import data_opts as D
from tselect.cli.app import JsonOpt, StoreOpt, app, emit, make, root
from tselect.cli.config_file import ConfigOpt
from tselect.data.tokenize import MAX_LENGTH


@app.command()
def finetune(
    selection: Annotated[str, typer.Option(help="Selection id, or 'full' to train on the whole --pool")],
    budget: Annotated[str | None, typer.Option(help="Train on the first K of the selection: a count, a fraction of the pool (0.05) or 5% (default: all)")] = None,
    percentage: D.PercentageOpt = None,
    pool: Annotated[str | None, typer.Option(help="Pool for --selection full (file, dir, hub dataset id or builtin); for a selection, where its pool lives now")] = None,
    model: Annotated[str | None, typer.Option(help="Base model: local HF causal-LM dir or hub id in the local cache (default: embedded SmolLM2)")] = None,
    revision: D.RevisionOpt = None,
    allow_download: D.AllowDownloadOpt = False,
    fmt: Annotated[str | None, typer.Option("--format", help="Row format of a --pool file")] = None,
    split: D.SplitOpt = None,
    columns: D.ColumnsOpt = None,
    dedup: D.DedupOpt = False,
    method: Annotated[str, typer.Option(help="lora or full")] = "lora",
    lora_r: Annotated[int, typer.Option(help="LoRA rank")] = 8,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha")] = 16,
    lora_dropout: Annotated[float, typer.Option(help="LoRA dropout")] = 0.05,
    target_modules: Annotated[str, typer.Option(help="Comma list of modules LoRA wraps (default by family)")] = "",
    lr: Annotated[float, typer.Option(help="Peak learning rate")] = 1e-4,
    epochs: Annotated[int, typer.Option(help="Epochs")] = 2,
    batch_size: Annotated[int, typer.Option(help="Micro-batch size")] = 4,
    effective_batch_size: Annotated[int, typer.Option(help="Rows per optimizer step (gradient accumulation)")] = 16,
    warmup_ratio: Annotated[float, typer.Option(help="Warmup fraction of steps")] = 0.03,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay")] = 0.0,
    max_grad_norm: Annotated[float, typer.Option(help="Gradient clipping (0 = off)")] = 1.0,
    max_length: Annotated[int, typer.Option(help="Tokens per row")] = MAX_LENGTH,
    seed: Annotated[int, typer.Option(help="Seed for init, dropout and data order")] = 0,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing", help="Recompute activations in backward: less memory, ~30% more time")] = False,
    optim: Annotated[str, typer.Option(help="auto (fused AdamW on CUDA), adamw_torch, adamw_torch_fused, adamw_8bit (bitsandbytes)")] = "auto",
    sharding: Annotated[str, typer.Option(help="Under torchrun: auto (FSDP full shard for --method full, DDP for LoRA), ddp, fsdp")] = "auto",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print rows, tokens, memory per GPU and time from the model config (no weights), then stop")] = False,
    plan_device: Annotated[str | None, typer.Option(help="--dry-run: plan for h100, h200, a100 or l40s instead of the detected device")] = None,
    gpus: Annotated[int | None, typer.Option(help="--dry-run: GPUs to plan for (default: WORLD_SIZE or 1)")] = None,
    store: StoreOpt = None,
):
    """Fine-tune (LoRA by default) on the first K examples of a selection; prints the finetune id.

    Several GPUs: torchrun --nproc_per_node 8 -m tselect finetune ... (DDP for LoRA, FSDP for full)."""
    from tselect import finetune as stage
    from tselect.runtime import Runtime
    from tselect.training import TrainConfig

    modules = tuple(m.strip() for m in target_modules.split(",") if m.strip())
    train = make(TrainConfig, method=method, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                 target_modules=modules, lr=lr, epochs=epochs, batch_size=batch_size,
                 effective_batch_size=effective_batch_size, warmup_ratio=warmup_ratio, weight_decay=weight_decay,
                 max_grad_norm=max_grad_norm, max_length=max_length, seed=seed)
    cols = D.columns(columns)
    k = _budget(selection, budget, percentage, pool, fmt, split, cols, dedup, store)
    cfg = make(stage.FinetuneConfig, selection=selection, budget=k, pool=pool, model=D.model_spec(model, revision, allow_download),
               fmt=fmt, train=train, split=split, columns=cols, dedup=dedup,
               runtime=make(Runtime, gradient_checkpointing=gradient_checkpointing, optim=optim, sharding=sharding))
    if dry_run:
        from tselect.finetune.plan import dry_run as plan_job

        typer.echo(plan_job(cfg, root(store), plan_device, gpus), err=True)
        return
    emit(stage.run(cfg, root(store)))


def _budget(selection, budget, percentage, pool, fmt, split, cols, dedup, store) -> int | None:
    """A count; a fraction is of the pool the selection was made on (or of --pool for `full`)."""
    from tselect.budget import budget_count, parse_budget

    wanted = parse_budget(budget, percentage)
    if not isinstance(wanted, float):
        return wanted
    if selection == "full":
        from tselect.data import load_dataset

        if not pool:
            return None  # the config reports the missing --pool
        return budget_count(wanted, len(load_dataset(pool, fmt, split=split, columns=cols, dedup=dedup)))
    from tselect.catalog import resolve

    return budget_count(wanted, int(resolve(root(store), selection, stage="select").record["n_pool"]))


@app.command()
def evaluate(
    target: Annotated[str | None, typer.Option(help="Target (required): a query file, dir, hub dataset id or builtin:sciq|piqa|arc_easy|mmlu")] = None,
    demo: D.DemoOpt = False,
    eval_data: Annotated[str | None, typer.Option(help="Eval split file (default <target>:eval for builtins)")] = None,
    finetune: Annotated[str | None, typer.Option(help="Finetune id; omit for the zero-shot base model")] = None,
    model: Annotated[str | None, typer.Option(help="Base model dir or hub id in the local cache when no --finetune (default: embedded)")] = None,
    adapter: Annotated[str | None, typer.Option(help="A peft adapter dir (made by any tool) applied to --model (default: the base it names)")] = None,
    revision: D.RevisionOpt = None,
    allow_download: D.AllowDownloadOpt = False,
    fmt: Annotated[str | None, typer.Option("--format", help="Row format of target/eval files")] = None,
    split: Annotated[str | None, typer.Option(help="Split of a target DatasetDict dir or hub dataset")] = None,
    eval_split: Annotated[str | None, typer.Option(help="Split of the --eval-data")] = None,
    columns: D.ColumnsOpt = None,
    prompt_format: Annotated[str, typer.Option(help="chat (as trained) or plain (context + 'Answer:')")] = "chat",
    limit: Annotated[int | None, typer.Option(help="Only the first N eval and query rows")] = None,
    batch_size: Annotated[int, typer.Option(help="Sequences per forward pass")] = 8,
    max_length: Annotated[int, typer.Option(help="Token limit per sequence")] = MAX_LENGTH,
    max_new_tokens: Annotated[int, typer.Option(help="Generation length for EM/F1 rows")] = 32,
    metrics: Annotated[str, typer.Option(help="all (losses + task metrics) or loss (query and held-out loss only)")] = "all",
    shots: Annotated[int, typer.Option(help="Few-shot: K solved query-split rows before each eval item (left out of the query loss)")] = 0,
    shot_seed: Annotated[int, typer.Option(help="Seed of the draw of the --shots rows")] = 0,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
    store: StoreOpt = None,
):
    """Query loss and task metrics of a fine-tuned (or the zero-shot base) model; prints the evaluate id."""
    from tselect import evaluate as stage

    cfg = make(stage.EvaluateConfig, target=D.required(target, "--target", demo), eval_data=eval_data, finetune=finetune,
               model=D.model_spec(model, revision, allow_download), adapter=adapter, fmt=fmt,
               prompt_format=prompt_format, limit=limit,
               batch_size=batch_size, max_length=max_length, max_new_tokens=max_new_tokens, split=split,
               eval_split=eval_split, columns=D.columns(columns), metrics=metrics,
               shots=shots, shot_seed=shot_seed)
    emit(stage.run(cfg, root(store)))


@app.command("run-config", hidden=True)
def run_config(
    config: Annotated[str, typer.Argument(help="Pickled FinetuneConfig or EvaluateConfig (written by `tselect run --launcher`)")],
    store: StoreOpt = None,
):
    """Run one stage config under a launcher (torchrun) for `tselect run --launcher`; prints its id."""
    import pickle

    from tselect import evaluate, finetune
    from tselect.errors import UserError

    with open(config, "rb") as f:
        cfg = pickle.load(f)  # written by this same tselect in the parent process
    if isinstance(cfg, finetune.FinetuneConfig):
        emit(finetune.run(cfg, root(store)))
    elif isinstance(cfg, evaluate.EvaluateConfig):
        emit(evaluate.run(cfg, root(store)))
    else:
        raise UserError(f"{config}: holds a {type(cfg).__name__}, not a finetune or evaluate config")
