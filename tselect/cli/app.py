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
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"tselect {version('tselect')}")
        except PackageNotFoundError:  # running from a source tree that was never installed
            from tselect import __version__

            typer.echo(f"tselect {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit")] = False,
) -> None:
    """Targeted instruction selection: featurize → select → finetune → evaluate → report."""

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
    """Build a stage config; its validation errors (and inf/NaN/64-bit overflows) become one-line user errors."""
    from tselect.validate import check_config_values

    check_config_values(cls, kwargs, "command line")
    try:
        return cls(**kwargs)
    except (ValueError, OverflowError) as e:
        raise UserError(str(e)) from None


def parse_share(text: str, flag: str) -> tuple[int, int]:
    """'i/N' (this host's share i of N, as in --shard and --part) → (i, N); anything else is one line."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"{flag} '{text}' must look like i/N, e.g. {flag} 0/2") from None
    if not (n >= 1 and 0 <= i < n):
        raise UserError(f"{flag} {text}: need N >= 1 and 0 <= i < N, e.g. {flag} 1/2")
    return i, n


def threads() -> None:
    """Use every core by default; TSELECT_THREADS overrides (lazy: only stages that need torch)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
