"""Options shared by commands that read data or models: splits, columns, dedup, revisions, budgets."""

from __future__ import annotations

import os
from typing import Annotated

import typer

SplitOpt = Annotated[str | None, typer.Option(help="Split of a DatasetDict dir or hub dataset (e.g. train)")]
ColumnsOpt = Annotated[str | None, typer.Option(help="Map your columns to fields: FIELD=COLUMN,... e.g. prompt=question,response=answer")]
DedupOpt = Annotated[bool, typer.Option("--dedup", help="Drop repeated conversations (keep the first, report how many)")]
RevisionOpt = Annotated[str | None, typer.Option(help="Hub model revision (branch, tag or commit) for an org/name --model")]
AllowDownloadOpt = Annotated[bool, typer.Option("--allow-download", help="Let hub ids missing from the local HF cache be downloaded [env: TSELECT_ALLOW_DOWNLOAD]")]
BudgetOpt = Annotated[str | None, typer.Option(help="A count (200), a fraction of the pool (0.05) or a percentage (5%)")]
PercentageOpt = Annotated[float | None, typer.Option(help="Budget as a fraction of the pool (LESS's --percentage 0.05)")]


def model_spec(model: str | None, revision: str | None, allow_download: bool = False) -> str | None:
    """`--model org/name --revision R` -> `org/name@R` (what the stage configs hold)."""
    from tselect.data.hub import split_revision
    from tselect.errors import UserError

    if allow_download:
        os.environ["TSELECT_ALLOW_DOWNLOAD"] = "1"
    if revision is None:
        return model
    if model is None:
        raise UserError("--revision needs --model org/name (the embedded model has no revisions)")
    if os.path.exists(os.path.expanduser(model)):
        raise UserError(f"--revision {revision} applies to hub ids, but --model {model} is a local path; drop --revision")
    repo, rev = split_revision(model, revision)
    return f"{repo}@{rev}"


def columns(text: str | None) -> tuple[tuple[str, str], ...]:
    from tselect.data.formats import parse_columns

    return parse_columns(text)


DemoOpt = Annotated[bool, typer.Option("--demo", help="Use the embedded demo data for any of --pool/--query/--target not given")]
DEMO = {"--pool": "builtin:pool", "--query": "builtin:sciq", "--target": "builtin:sciq"}


def required(value: str | None, flag: str, demo: bool) -> str:
    """The user's data, or the embedded demo set with --demo; never a silent default."""
    from tselect.errors import UserError

    if value is not None:
        return value
    if demo:
        return DEMO[flag]
    raise UserError(f"{flag} is required: pass your data (a JSONL/parquet/CSV/JSON file, a save_to_disk dir or a hub "
                    f"dataset id), or --demo to use the embedded {DEMO[flag]}")
