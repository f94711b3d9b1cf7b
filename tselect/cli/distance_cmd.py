"""`tselect distance`: coverage, chamfer and OT distance of a selection's prefixes to the queries."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tselect.cli.app import JsonOpt, StoreOpt, app, emit, make, root
from tselect.cli.config_file import ConfigOpt


@app.command()
def distance(
    features: Annotated[str, typer.Option(help="Feature artifact id: distances to its queries, in its space")],
    selection: Annotated[str, typer.Option(help="Selection artifact id over the same pool")],
    budget: Annotated[list[str] | None, typer.Option(help="Prefix size to measure (repeatable): a count, a fraction of the pool or 5%; default: the whole selection")] = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
    store: StoreOpt = None,
):
    """How close the first BUDGET selected examples sit to the queries (table on stderr)."""
    from tselect import distance as stage

    from tselect.catalog import resolve
    from tselect.budget import budget_count, parse_budget

    where = root(store)
    wanted = [parse_budget(b) for b in budget or ()]
    if any(isinstance(b, float) for b in wanted):
        n_pool = int(resolve(where, selection, stage="select").record.get("n_pool") or 0)
        wanted = [budget_count(b, n_pool) for b in wanted]
    cfg = make(stage.DistanceConfig, features=features, selection=selection, budgets=tuple(sorted(set(wanted))))
    aid = stage.run(cfg, where)
    print_table(where, aid)
    emit(aid)


def print_table(where: Path, aid: str) -> None:
    """Per budget: coverage and chamfer (mean best cosine, higher is closer), OT cost (lower is closer)."""
    from rich.console import Console
    from rich.table import Table

    from tselect.distance import read_rows

    table = Table("budget", "coverage ↑", "chamfer ↑", "OT ↓", "solver", title=aid)
    for r in read_rows(where, aid):
        table.add_row(str(r["budget"]), f"{r['coverage']:.4f}", f"{r['chamfer']:.4f}", f"{r['ot']:.4f}", r["ot_solver"])
    Console(stderr=True).print(table)
