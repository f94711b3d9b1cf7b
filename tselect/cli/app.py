"""The Typer app and what every command shares: the store option and id printing."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from tselect.errors import UserError

app = typer.Typer(
    name="tselect",
    help="Targeted instruction selection: featurize → select → finetune → evaluate → report.\n\n"
    "Every command prints the id of the artifact it made (or found) as the last line of stdout.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="Artifact store directory [env: TSELECT_STORE; default ./.tselect]", show_default=False),
]


def root(store: str | None):
    from tselect.artifacts import store_root

    return store_root(store)


def emit(artifact_id: str) -> None:
    """Artifact ids are the only thing commands write to stdout; under torchrun only rank 0 writes
    it, so `F=$(torchrun ... tselect featurize ...)` captures one id, not one per rank."""
    if os.environ.get("RANK", "0") != "0" and "WORLD_SIZE" in os.environ:
        return
    typer.echo(artifact_id)


def make(cls: type, **kwargs: Any):
    """Build a stage config; its validation errors become one-line user errors."""
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise UserError(str(e)) from None


def threads() -> None:
    """Use every core by default; TSELECT_THREADS overrides (lazy: only stages that need torch)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
