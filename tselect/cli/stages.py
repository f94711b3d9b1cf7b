"""Stage commands: each builds its config, calls the stage, prints the artifact id."""

from __future__ import annotations

from typing import Annotated

import typer

from tselect.cli import data_opts as D
from tselect.cli.app import JsonOpt, StoreOpt, app, emit, make, parse_share, root
from tselect.cli.config_file import ConfigOpt
from tselect.data.tokenize import MAX_LENGTH
from tselect.errors import UserError


def parse_pairs(items: list[str] | None) -> tuple[tuple[str, str], ...]:
    """NAME=VALUE options → sorted (name, value) pairs (sorted so the artifact id ignores order)."""
    pairs = []
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--param '{item}' must look like NAME=VALUE, e.g. --param dim=4096")
        k, v = item.split("=", 1)
        pairs.append((k.strip(), v.strip()))
    return tuple(sorted(pairs))


@app.command()
def featurize(
    rep: Annotated[str, typer.Option(help="Representation (list them with `tselect representations`)")],
    pool: Annotated[str | None, typer.Option(help="Pool (required): a JSONL/parquet/CSV/JSON file, a save_to_disk dir, a hub dataset id or builtin:pool[-small]")] = None,
    query: Annotated[str | None, typer.Option(help="Query set (required): a file, dir, hub dataset id or builtin:sciq|piqa|arc_easy|mmlu")] = None,
    demo: D.DemoOpt = False,
    model: Annotated[str | None, typer.Option(help="HF model dir or hub id in the local cache (rds/less), sentence-transformers dir or id (embed); default embedded")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="Row layout: chat, sharegpt, alpaca, prompt, text (default: auto)")] = None,
    split: D.SplitOpt = None,
    query_split: Annotated[str | None, typer.Option(help="Split of the query data")] = None,
    columns: D.ColumnsOpt = None,
    query_columns: Annotated[str | None, typer.Option(help="Column mapping of the query data, like --columns")] = None,
    dedup: D.DedupOpt = False,
    revision: D.RevisionOpt = None,
    allow_download: D.AllowDownloadOpt = False,
    max_length: Annotated[int, typer.Option(help="Truncate conversations to this many tokens")] = MAX_LENGTH,
    batch_size: Annotated[int, typer.Option(help="Examples per forward pass")] = 16,
    dtype: Annotated[str, typer.Option(help="Stored feature dtype: float16 or float32")] = "float16",
    pool_vectors: Annotated[str | None, typer.Option(help="vectors: .npy, row i = pool example i")] = None,
    query_vectors: Annotated[str | None, typer.Option(help="vectors: .npy, row i = query example i")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Representation option NAME=VALUE, e.g. less: dim=8192, projection=sjlt|kronecker|rademacher, warmup=cpu|less, adam=less|bias_corrected")] = None,
    shard: Annotated[str | None, typer.Option(help="Compute only shard i of N ('i/N'); default from torchrun RANK/WORLD_SIZE or a Slurm array")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="less: token budget per batch (rows x padded width); default from free GPU memory")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="less: print rows, tokens, batches, peak memory and time from the model config (no weights), then stop")] = False,
    plan_device: Annotated[str | None, typer.Option(help="--dry-run: plan for h100, h200, a100 or l40s instead of the detected device")] = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
    store: StoreOpt = None,
):
    """Turn pool and query examples into a feature store (one unit row per example)."""
    from tselect import featurize as stage

    if max_tokens is not None:
        param = [*(param or []), f"max_tokens={max_tokens}"]
    pool, query = D.required(pool, "--pool", demo), D.required(query, "--query", demo)
    cfg = make(stage.FeaturizeConfig, rep=rep, pool=pool, query=query, model=D.model_spec(model, revision, allow_download),
               fmt=fmt, max_length=max_length, batch_size=batch_size, dtype=dtype, pool_vectors=pool_vectors,
               query_vectors=query_vectors, params=parse_pairs(param), split=split, query_split=query_split,
               columns=D.columns(columns), query_columns=D.columns(query_columns), dedup=dedup)
    if dry_run:
        from tselect.featurize.dryrun import dry_run as plan_job

        typer.echo(plan_job(cfg, plan_device))
        return
    emit(stage.run(cfg, root(store), shard=resolve_shard(shard)))


def resolve_shard(text: str | None) -> tuple[int, int]:
    """--shard i/N, else torchrun's RANK/WORLD_SIZE, else a Slurm array task, else (0, 1).

    --shard i/N under a torchrun of W > 1 ranks is this launch's share, split among its ranks:
    rank r computes shard i + N·r of N·W, i.e. chunks c ≡ i (mod N) between them, never the
    same chunk twice (every launch of the job must then use the same W).
    """
    import os

    env = os.environ
    if "LOCAL_RANK" in env:  # one GPU per rank under torchrun, also with an explicit --shard
        os.environ.setdefault("TSELECT_DEVICE_INDEX", env["LOCAL_RANK"])
    world = int(env.get("WORLD_SIZE", "1")) if "LOCAL_RANK" in env and "RANK" in env else 1
    if text is not None and world > 1:
        i, n = parse_share(text, "--shard")
        return i + n * int(env["RANK"]), n * world
    if text is None:
        if "WORLD_SIZE" in env and "RANK" in env:
            text = f"{env['RANK']}/{env['WORLD_SIZE']}"
        elif "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
            text = f"{int(env['SLURM_ARRAY_TASK_ID']) - first}/{env['SLURM_ARRAY_TASK_COUNT']}"
        else:
            return (0, 1)
    return parse_share(text, "--shard")


@app.command()
def representations():
    """List representations: whether they run the LM, rough CPU seconds per row, and what they are."""
    from tselect.featurize import REPRESENTATIONS

    for name, r in REPRESENTATIONS.items():
        typer.echo(f"{name:10s} {'LM ' if r.uses_lm else '   '} ~{r.cost:g} s/row  {r.summary}")


@app.command()
def merge(artifact: str, json_out: JsonOpt = False, store: StoreOpt = None):
    """Finish a sharded featurize artifact once every shard has written its chunks."""
    from tselect import featurize as stage

    stage.merge(root(store), artifact)
    emit(artifact)


@app.command()
def select(
    features: Annotated[str, typer.Option(help="Feature artifact id")],
    selector: Annotated[str, typer.Option(help="Selector name (see `tselect selectors`)")] = "round_robin",
    budget: Annotated[str | None, typer.Option(help="How many to select: a count, a fraction (0.05) or 5%; default: order the whole pool")] = None,
    percentage: D.PercentageOpt = None,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Selector parameter NAME=VALUE (repeatable)")] = None,
    scores: Annotated[str | None, typer.Option(help="Score artifact id (score-based selectors)")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Selection id to exclude (repeatable; strict_random)")] = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
    store: StoreOpt = None,
):
    """Order pool examples for the queries; every budget is a prefix of the order."""
    from tselect import select as stage
    from tselect.budget import budget_count, parse_budget

    wanted = parse_budget(budget, percentage)
    if isinstance(wanted, float):  # a fraction of the pool the features were made from
        from tselect.catalog import resolve

        wanted = budget_count(wanted, int(resolve(root(store), features, stage="featurize").record["n_pool"]))
    cfg = make(stage.SelectConfig, features=features, selector=selector, budget=wanted, seed=seed,
               params=parse_pairs(param), scores=scores, exclude=tuple(exclude or ()))
    emit(stage.run(cfg, root(store)))


@app.command()
def warmup(
    pool: Annotated[str | None, typer.Option(help="Pool whose random fraction warms the LoRA up (required)")] = None,
    demo: D.DemoOpt = False,
    model: Annotated[str | None, typer.Option(help="Local HF causal-LM dir (default: embedded SmolLM2)")] = None,
    preset: Annotated[str, typer.Option(help="cpu (r=8, embedded model) or less (r=128, the LESS recipe)")] = "cpu",
    fmt: Annotated[str | None, typer.Option("--format", help="Row format of a pool file")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print rows, tokens, peak memory and time from the model config (no weights), then stop")] = False,
    plan_device: Annotated[str | None, typer.Option(help="--dry-run: plan for h100, h200, a100 or l40s instead of the detected device")] = None,
    split: D.SplitOpt = None,
    columns: D.ColumnsOpt = None,
    dedup: D.DedupOpt = False,
    revision: D.RevisionOpt = None,
    allow_download: D.AllowDownloadOpt = False,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
    store: StoreOpt = None,
):
    """LESS warmup: LoRA checkpoints (adapter + Adam moments by name) per epoch. `featurize --rep less` runs it when missing."""
    from tselect import warmup as stage

    pool, model = D.required(pool, "--pool", demo), D.model_spec(model, revision, allow_download)
    if dry_run:
        from tselect.featurize.warmup_plan import warmup_dry_run

        typer.echo(warmup_dry_run(pool, model, preset, fmt, plan_device))
        return
    cfg = make(stage.WarmupConfig, pool=pool, model=model, preset=preset, fmt=fmt, split=split,
               columns=D.columns(columns), dedup=dedup)
    emit(stage.run(cfg, root(store)))
