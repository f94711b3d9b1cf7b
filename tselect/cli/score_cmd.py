"""`tselect score`: per-pool-example scores for the general-purpose strategies."""

from __future__ import annotations

from typing import Annotated

import typer

from tselect.cli import data_opts as D
from tselect.cli.app import JsonOpt, StoreOpt, app, emit, make, root
from tselect.cli.config_file import ConfigOpt
from tselect.data.tokenize import MAX_LENGTH


@app.command()
def score(
    strategy: Annotated[str, typer.Option(help="Scoring strategy: length, ifd, miwv, judge")],
    pool: Annotated[str | None, typer.Option(help="Pool (required): a file, save_to_disk dir, hub dataset id or builtin:pool[-small]")] = None,
    demo: D.DemoOpt = False,
    model: Annotated[str | None, typer.Option(help="Local HF causal-LM dir to score with; default embedded SmolLM2")] = None,
    features: Annotated[str | None, typer.Option(help="miwv: feature artifact id of the same pool (nearest neighbours)")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="Row layout: chat, sharegpt, alpaca, prompt, text (default: auto)")] = None,
    max_length: Annotated[int, typer.Option(help="Token budget of a rendered example")] = MAX_LENGTH,
    batch_size: Annotated[int, typer.Option(help="Sequences per forward pass")] = 8,
    split: D.SplitOpt = None,
    columns: D.ColumnsOpt = None,
    dedup: D.DedupOpt = False,
    revision: D.RevisionOpt = None,
    allow_download: D.AllowDownloadOpt = False,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
    store: StoreOpt = None,
):
    """Score every pool example (higher = select first; NaN = dropped); order with `select --selector score`."""
    from tselect import scores as stage

    cfg = make(stage.ScoreConfig, strategy=strategy, pool=D.required(pool, "--pool", demo),
               model=D.model_spec(model, revision, allow_download), fmt=fmt, features=features,
               max_length=max_length, batch_size=batch_size, split=split, columns=D.columns(columns), dedup=dedup)
    emit(stage.run(cfg, root(store)))
