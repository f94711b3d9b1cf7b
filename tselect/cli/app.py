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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More detail on stderr (library logs at INFO)")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr: no progress, no notes")] = False,
) -> None:
    """Targeted instruction selection: featurize → select → finetune → evaluate → report."""
    from tselect import progress

    if verbose and quiet:
        raise UserError("--verbose and --quiet contradict each other; pass one of them")
    progress.VERBOSITY = 1 if verbose else -1 if quiet else 0
    _OUTPUT.update(json=False, store=None)  # the subcommand's own options set them (parsed after this)
    if verbose:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")


# What `emit` prints: set by the --json and --store options of the command that runs (one per process).
_OUTPUT: dict[str, Any] = {"json": False, "store": None}


def _remember(key: str):
    def callback(value):
        _OUTPUT[key] = value
        return value
    return callback


StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="Artifact store directory [env: TSELECT_STORE; default ./.tselect]", show_default=False,
                 callback=_remember("store")),
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print the artifact's manifest as JSON on stdout (its id in the `id` field) instead of the bare id",
                 callback=_remember("json")),
]


def root(store: str | None):
    from tselect.artifacts import store_root

    return store_root(store)


def emit(artifact_id: str) -> None:
    """Artifact ids are the only thing commands write to stdout (or, with --json, the manifest);
    under torchrun or `srun` only rank 0 writes it, so `F=$(torchrun ... tselect featurize ...)`
    captures one id, not one per rank."""
    if not is_rank_zero():
        return
    if not _OUTPUT["json"]:
        typer.echo(artifact_id)
        return
    import json

    typer.echo(json.dumps(manifest_json(artifact_id), indent=2, sort_keys=True))


def is_rank_zero() -> bool:
    """False on the non-zero ranks of a torchrun (RANK) or multi-task Slurm step (SLURM_PROCID)."""
    env = os.environ
    if "WORLD_SIZE" in env and env.get("RANK", "0") != "0":
        return False
    return not (int(env.get("SLURM_NTASKS", "1") or 1) > 1 and env.get("SLURM_PROCID", "0") != "0")


def manifest_json(artifact_id: str) -> dict[str, Any]:
    """The finished artifact's manifest with `id`, `stage` and `path`; an unfinished one (a shard
    written, others pending) is {"id", "complete": false}."""
    from tselect.catalog import resolve

    try:
        art = resolve(root(_OUTPUT["store"]), artifact_id)
    except UserError:
        return {"id": artifact_id, "complete": False}
    return {**art.manifest, "id": art.id, "stage": art.stage, "path": str(art.path), "complete": True}


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
