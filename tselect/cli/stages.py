"""Stage commands: each builds its config, calls the stage, prints the artifact id."""

from __future__ import annotations

from typing import Annotated

import typer

from tselect.cli.app import StoreOpt, app, emit, make, root


@app.command()
def featurize(
    rep: Annotated[str, typer.Option(help="Representation: embed, rds, vectors, less")],
    pool: Annotated[str, typer.Option(help="Pool: builtin:pool, builtin:pool-small, JSONL or save_to_disk dir")] = "builtin:pool",
    query: Annotated[str, typer.Option(help="Query set: builtin:sciq, builtin:piqa, builtin:arc_easy or a file")] = "builtin:sciq",
    model: Annotated[str | None, typer.Option(help="Local HF model dir (rds/less) or sentence-transformers dir (embed); default embedded")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="Row format of files: chat, alpaca, prompt (default: auto)")] = None,
    max_length: Annotated[int, typer.Option(help="Truncate conversations to this many tokens")] = 256,
    batch_size: Annotated[int, typer.Option(help="Examples per forward pass")] = 16,
    dtype: Annotated[str, typer.Option(help="Stored feature dtype: float16 or float32")] = "float16",
    pool_vectors: Annotated[str | None, typer.Option(help="vectors: .npy, row i = pool example i")] = None,
    query_vectors: Annotated[str | None, typer.Option(help="vectors: .npy, row i = query example i")] = None,
    store: StoreOpt = None,
):
    """Turn pool and query examples into a feature store (one unit row per example)."""
    from tselect import featurize as stage

    cfg = make(stage.FeaturizeConfig, rep=rep, pool=pool, query=query, model=model, fmt=fmt, max_length=max_length,
               batch_size=batch_size, dtype=dtype, pool_vectors=pool_vectors, query_vectors=query_vectors)
    emit(stage.run(cfg, root(store)))


@app.command()
def select(
    features: Annotated[str, typer.Option(help="Feature artifact id")],
    selector: Annotated[str, typer.Option(help="Selector name (see `tselect selectors`)")] = "round_robin",
    budget: Annotated[int | None, typer.Option(help="How many to select; default: order the whole pool")] = None,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Selector parameter NAME=VALUE (repeatable)")] = None,
    scores: Annotated[str | None, typer.Option(help="Score artifact id (score-based selectors)")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Selection id to exclude (repeatable; strict_random)")] = None,
    store: StoreOpt = None,
):
    """Order pool examples for the queries; every budget is a prefix of the order."""
    from tselect import select as stage
    from tselect.errors import UserError

    pairs = []
    for p in param or []:
        if "=" not in p:
            raise UserError(f"--param '{p}' must look like NAME=VALUE, e.g. --param eps=0.01")
        k, v = p.split("=", 1)
        pairs.append((k.strip(), v.strip()))
    cfg = make(stage.SelectConfig, features=features, selector=selector, budget=budget, seed=seed,
               params=tuple(sorted(pairs)), scores=scores, exclude=tuple(exclude or ()))
    emit(stage.run(cfg, root(store)))
