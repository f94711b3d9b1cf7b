"""`tselect run` (experiment grids from a TOML file) and `tselect report` (the study's write-up)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from tselect.cli.app import JsonOpt, StoreOpt, app, emit, make, parse_share, root, threads


@app.command("run")
def run_grid(
    experiment: Annotated[Path, typer.Argument(help="Experiment TOML (see examples/experiments/)")],
    part: Annotated[str | None, typer.Option(help="Run only cells whose index ≡ i mod N, as i/N (split across hosts)")] = None,
    collect: Annotated[bool, typer.Option("--collect", help="Run nothing; write the experiment artifact if every cell exists")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the cells and a rough cost estimate; run nothing")] = False,
    json_out: JsonOpt = False,
    launcher: Annotated[str | None, typer.Option(help="Run each cell's finetune/evaluate as '<LAUNCHER> -m tselect ...', e.g. 'torchrun --nproc_per_node 8'")] = None,
    store: StoreOpt = None,
):
    """Run every cell of an experiment grid (cached cells are skipped); prints the experiment id."""
    from tselect import experiment as E

    where, share = root(store), None if part is None else parse_share(part, "--part")
    if dry_run:
        return print_plan(E.load_spec(experiment), share, where)
    threads()
    aid = E.run(make(E.ExperimentConfig, spec=str(experiment), part=share, collect=collect, launcher=launcher), where)
    if aid is not None:
        emit(aid)


@app.command()
def report(
    experiment: Annotated[str, typer.Argument(help="Experiment artifact id (from `tselect run`)")],
    out: Annotated[Path | None, typer.Option(help="Also copy the report directory here")] = None,
    metric: Annotated[str, typer.Option(help="acc, acc_norm, em, f1, num_em, query_loss or auto (per target)")] = "auto",
    json_out: JsonOpt = False,
    store: StoreOpt = None,
):
    """Tables, plots, diagnostics and a recommendation for an experiment; prints the report id."""
    import shutil

    from tselect import catalog
    from tselect import report as stage

    where = root(store)
    aid = stage.run(make(stage.ReportConfig, experiment=experiment, metric=metric), where)
    path = catalog.resolve(where, aid, stage="report").path
    if out is not None:
        shutil.copytree(path, out, dirs_exist_ok=True)
    print_summary(path)
    emit(aid)


def print_plan(spec, part: tuple[int, int] | None, where: Path) -> None:
    """The cells (index, part, key, done or to run) and the estimate for the cells still to run, on stderr."""
    from rich.console import Console
    from rich.table import Table

    from tselect.experiment import cell_done, cell_id, estimate, plan

    ident = spec.identity()
    cells = plan(spec, ident.n_pool)
    mine = [(k, c) for k, c in enumerate(cells) if part is None or k % part[1] == part[0]]
    done = {k for k, c in mine if cell_done(where, cell_id(spec, c, ident.cell_inputs(c)))}
    table = Table("#", "part", "kind", "cell", "status",
                  title=f"{spec.name}: {len(mine)} of {len(cells)} cells, {len(done)} done (cached)")
    for k, c in mine:
        table.add_row(str(k), str(k % part[1]) if part else "-", c.kind, c.key, "done" if k in done else "to run")
    console = Console(stderr=True)
    console.print(table)
    est = estimate(spec, [c for k, c in mine if k not in done], ident.n_pool)
    hours = est.pop("seconds") / 3600
    console.print(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in est.items())
                  + f"\nrough wall time of the cells to run: {hours:.1f} h (per-unit costs: tselect.experiment.COSTS; "
                  "an \\[estimate] table overrides them)")


def print_summary(path: Path) -> None:
    """Per target, the metric table (mean ± std, † = beats random), then the recommendation."""
    from rich.console import Console
    from rich.table import Table

    from tselect import store
    from tselect.report.sections import budget_block

    summary = store.read_json(path / "summary.json")
    console = Console(stderr=True)
    for t in summary["tables"]:
        _, headers, rows = budget_block(t)
        table = Table(*headers, title=f"{t['target']} · {t['quantity']}")
        for row in rows:
            table.add_row(*(re.sub(r"\*\*(.+?)\*\*", r"[bold]\1[/bold]", c) for c in row))
        console.print(table)
    console.print(re.sub(r"\*\*(.+?)\*\*", r"[bold]\1[/bold]", summary["recommendation"]))
    console.print(f"report: {path / 'report.html'}")
