"""Store commands: list, show, locate, verify, remove and export artifacts; list plugins and assets."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from tselect.cli.app import JsonOpt, StoreOpt, app, emit, root


STAGES = ("warmup", "featurize", "scores", "select", "distance", "finetune", "evaluate", "experiment", "report")


def expand_hex(r, ref: str) -> str:
    """A bare hex (a prefix or suffix of an id's hex part, as `mix` labels show) as the full id it
    names; any other ref as given. Damaged artifacts (no manifest) count, so `rm` can clear them."""
    import re

    from tselect import artifacts as A
    from tselect.errors import UserError

    hexpart = ref.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{4,16}", hexpart):
        return ref
    hits = sorted({d.name for pattern in (f"*/*-{hexpart}*", f"*/*-*{hexpart}") for d in r.glob(pattern)
                   if d.is_dir() and A.is_id(d.name)})
    if len(hits) > 1:
        raise UserError(f"hex id '{ref}' matches several artifacts ({', '.join(hits[:5])}); give more characters")
    return hits[0] if hits else ref


def find(r, ref: str, stage: str | None = None):
    """An artifact by id, id prefix, or bare hex (a prefix or suffix of the hex part)."""
    from tselect import catalog as C
    from tselect.errors import UserError

    try:
        return C.resolve(r, ref, stage)
    except UserError:
        full = expand_hex(r, ref)
        if full == ref:
            raise
    return C.resolve(r, full, stage)


def find_unchecked(r, ref: str):
    """catalog.find_unchecked, also by bare hex: the artifact as it is, or a damaged directory."""
    from tselect import catalog as C
    from tselect.errors import UserError

    try:
        return C.find_unchecked(r, ref)
    except UserError:
        full = expand_hex(r, ref)
        if full == ref:
            raise
    return C.find_unchecked(r, full)


def _columns(a, by_id: dict) -> tuple[str, str, str]:
    """(representation, selector or strategy, budget) of an artifact, from its config and inputs."""
    cfg, rec = a.config, a.record
    feats = by_id.get(a.inputs.get("features", ""))
    if a.stage == "finetune" and a.inputs.get("selection") in by_id:
        sel = by_id[a.inputs["selection"]]
        feats = by_id.get(sel.inputs.get("features", ""))
        return (feats.config.get("rep", "") if feats else "", sel.record.get("selector", ""),
                str(cfg.get("budget") or rec.get("n_selected", "")))
    rep = cfg.get("rep") or (feats.config.get("rep", "") if feats else "")
    choice = rec.get("selector") or cfg.get("selector") or cfg.get("strategy") or ""
    budget = rec.get("n_selected") if a.stage == "select" else cfg.get("budget")
    return str(rep or ""), str(choice), "" if budget is None else str(budget)


@app.command("ls")
def ls_(stage: Annotated[str | None, typer.Option(help=f"Only this stage: {', '.join(STAGES)}")] = None,
        store: StoreOpt = None):
    """List artifacts, oldest first (stderr table; ids on stdout)."""
    from rich.console import Console
    from rich.table import Table

    from tselect.catalog import list_artifacts
    from tselect.errors import UserError

    if stage is not None and stage not in STAGES:
        raise UserError(f"unknown --stage '{stage}'; choose one of {', '.join(STAGES)}")
    every = list_artifacts(root(store))
    by_id = {a.id: a for a in every}
    arts = sorted((a for a in every if stage in (None, a.stage)), key=lambda a: (a.manifest.get("created", ""), a.id))
    table = Table("id", "created", "wall s", "rep", "selector", "budget", "summary")
    for a in arts:
        summary = ", ".join(f"{k}={v}" for k, v in a.record.items()
                            if isinstance(v, (int, float, str)) and k not in ("selector", "n_selected"))
        table.add_row(a.id, a.manifest.get("created", ""), f"{a.manifest.get('wall_time_s', 0):.1f}",
                      *_columns(a, by_id), summary[:60])
    Console(stderr=True).print(table)
    for a in arts:
        typer.echo(a.id)


@app.command()
def show(artifact: Annotated[str, typer.Argument(help="Id, id prefix, or bare hex (prefix or suffix)")], store: StoreOpt = None):
    """Print an artifact's manifest (JSON) on stdout."""
    from tselect.errors import UserError

    art = find_unchecked(root(store), artifact)
    if not hasattr(art, "manifest"):
        raise UserError(f"artifact {art.name} has lost its manifest.json; remove it with `tselect rm {art.name}` "
                        "and rerun the command that made it")
    typer.echo(json.dumps(art.manifest, indent=2, sort_keys=True))


@app.command()
def path(artifact: Annotated[str, typer.Argument(help="Id, id prefix, or bare hex (prefix or suffix)")], store: StoreOpt = None):
    """Print an artifact's directory."""
    art = find_unchecked(root(store), artifact)
    typer.echo(str(getattr(art, "path", art).resolve()))


@app.command()
def verify(artifact: Annotated[str | None, typer.Argument(help="Artifact id (default: all)")] = None, store: StoreOpt = None):
    """Re-hash artifact files against their manifests; exit 2 if any is corrupt."""
    from tselect import artifacts as A
    from tselect.errors import UserError

    r = root(store)
    if artifact:
        found = [find_unchecked(r, artifact)]
    else:  # every finished artifact, each checked on its own (one corrupt manifest must not hide the rest)
        found = sorted(d.name for d in r.glob("*/*") if A.is_id(d.name) and d.is_dir())
    corrupt, ids = [], []
    for item in found:
        aid, problems = _verify_one(r, item)
        ids.append(aid)
        if problems:
            corrupt.append(aid)
        typer.echo(f"{aid}: {'ok' if not problems else 'CORRUPT: ' + '; '.join(problems)}", err=True)
    if corrupt:
        names = ", ".join(corrupt[:5]) + (f" and {len(corrupt) - 5} more" if len(corrupt) > 5 else "")
        raise UserError(f"{len(corrupt)} of {len(ids)} artifacts are corrupt ({names}); rebuild each with "
                        f"`tselect rm ID --store {r}` and then rerun the command that made it "
                        "(its configuration and inputs: `tselect show ID`)")


def _verify_one(r, item) -> tuple[str, list[str]]:
    """(id, problems) of one artifact given as a found artifact, a directory, or a directory name."""
    from pathlib import Path

    from tselect import artifacts as A
    from tselect import catalog as C
    from tselect.errors import UserError

    try:
        art = C.find_unchecked(r, item) if isinstance(item, str) else item
        if isinstance(art, Path):
            return art.name, [f"{A.MANIFEST} is missing (the artifact cannot be checked or used)"]
        return art.id, C.verify(art)
    except UserError as e:  # unreadable manifest, a link out of the store
        return (item if isinstance(item, str) else getattr(item, "id", getattr(item, "name", "?"))), [str(e)]


@app.command()
def rm(
    artifact: str,
    force: Annotated[bool, typer.Option("--force", help="Delete even when other artifacts were made from it")] = False,
    store: StoreOpt = None,
):
    """Delete an artifact (and any unfinished .part of it); refuses while others depend on it, unless --force."""
    from tselect import artifacts as A
    from tselect.errors import UserError

    r = root(store)
    found = find_unchecked(r, artifact)  # the id is the directory's name, never what a manifest says
    aid = found.id if isinstance(found, A.Artifact) else found.name
    users = dependents(r, aid)
    if users and not force:
        names = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
        raise UserError(f"{aid} is an input of {len(users)} other artifacts ({names}); remove those first, "
                        "or pass --force to delete it anyway")
    A.remove(r, aid)
    if users:
        typer.echo(f"removed {aid}; {len(users)} artifacts made from it can no longer be rebuilt from the store", err=True)
    emit(aid)


def dependents(r, aid: str) -> list[str]:
    """Ids of finished artifacts that list `aid` among their inputs (directly).

    Unreadable manifests are skipped: `rm` is how a corrupt artifact is cleared away.
    """
    from tselect.artifacts import MANIFEST

    out = []
    for d in r.glob(f"*/*/{MANIFEST}"):
        try:
            inputs = json.loads(d.read_text()).get("inputs") or {}
        except (OSError, ValueError, AttributeError):
            continue
        if d.parent.name != aid and any(aid in str(v).split(",") for v in inputs.values()):
            out.append(d.parent.name)
    return sorted(out)


@app.command()
def export(
    selection: str,
    out: Annotated[str, typer.Option(help="Output file: .jsonl (default), .json, .parquet or .csv")],
    budget: Annotated[str | None, typer.Option(help="Only the first K of the order: a count, a fraction of the pool (0.05) or 5%")] = None,
    percentage: Annotated[float | None, typer.Option(help="Budget as a fraction of the pool (LESS's --percentage 0.05)")] = None,
    pool: Annotated[str | None, typer.Option(help="Read the pool from here (moved, copied or grown); rows are found by example id")] = None,
    scores: Annotated[bool, typer.Option("--scores", help="Add tselect_rank (1 = chosen first) and tselect_score to each row")] = False,
    indices: Annotated[bool, typer.Option("--indices", help="Write a JSON list of pool indices instead of rows")] = False,
    json_out: JsonOpt = False,
    store: StoreOpt = None,
):
    """Write a selection's rows as they were read (their layout, fields and `id`), in selection order."""
    from pathlib import Path

    from tselect.budget import budget_count, parse_budget
    from tselect.data.formats import write_rows
    from tselect.errors import UserError
    from tselect.lineage import selected_examples, selection_indices
    from tselect.store import write_json

    r = root(store)
    art = find(r, selection, stage="select")
    k = budget_count(parse_budget(budget, percentage), int(art.record.get("n_pool") or 0))
    target = Path(out)
    if not target.parent.is_dir():
        raise UserError(f"--out {out}: directory {target.parent} does not exist; create it or pick another --out")
    if indices:
        rows = [int(i) for i in selection_indices(art, k)]
    else:
        rows = [_export_row(ex, rank, score, scores) for rank, ex, score in selected_examples(r, art, k, pool)]
    try:
        write_json(target, rows) if indices else write_rows(target, rows)
    except OSError as e:
        raise UserError(f"cannot write --out {out} ({e.strerror}); pick a writable path") from None
    typer.echo(f"wrote {len(rows)} {'indices' if indices else 'rows'} to {out}", err=True)
    emit(art.id)


def _export_row(ex, rank: int, score, with_scores: bool) -> dict:
    row = ex.original()
    if with_scores:
        row["tselect_rank"], row["tselect_score"] = rank + 1, score
    return row


@app.command()
def selectors():
    """List selectors and their parameters."""
    import dataclasses

    from tselect.select.registry import SELECTORS

    for name, s in SELECTORS.items():
        params = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(s.params))
        typer.echo(f"{name:16s} {s.summary}" + (f"  [{params}]" if params else ""))


@app.command()
def assets():
    """Show the embedded model, embedder and data: installed or not, where, size, license."""
    from rich.console import Console
    from rich.table import Table

    from tselect.assets import describe

    table = Table("asset", "installed", "size", "license", "path (or install command)")
    for a in describe():
        size = f"{a['size_bytes'] / 1e6:.0f} MB" if a.get("size_bytes") else "-"
        where = str(a.get("path") or a.get("install", ""))
        table.add_row(a["name"], "yes" if a["installed"] else "no", size, a.get("license", "").split(";")[0], where)
    Console(stderr=True).print(table)


@app.command()
def mix(
    selections: Annotated[list[str], typer.Argument(help="Selection ids to compare (same pool)")],
    budget: Annotated[str | None, typer.Option(help="Compare the first K of each order: a count, a fraction of the pool or 5%")] = None,
    key: Annotated[str, typer.Option(help="Example meta field to group by")] = "source_task",
    top: Annotated[int, typer.Option(help="Show this many groups")] = 12,
    json_out: JsonOpt = False,
    store: StoreOpt = None,
):
    """Source-task mix of selections next to the pool's: is the selection enriched for the target?"""
    from rich.console import Console
    from rich.table import Table

    from tselect.composition import mix_table
    from tselect.lineage import load_pool, selection_indices

    from tselect.errors import UserError
    from tselect.lineage import features_of

    r = root(store)
    arts = [find(r, s, stage="select") for s in selections]
    pool_hash = features_of(r, arts[0]).inputs["pool"]
    for a in arts[1:]:
        if features_of(r, a).inputs["pool"] != pool_hash:
            raise UserError(f"selection {a.id} was made on another pool than {arts[0].id}; "
                            "mix compares selections of one pool: pass selections of the same features' pool")
    pool = load_pool(r, arts[0])
    from tselect.budget import budget_count, parse_budget

    budget = budget_count(parse_budget(budget), len(pool))
    labels = [str(ex.meta.get(key, "?")) for ex in pool.examples]
    names = {f"{a.record.get('selector', a.id)} ({a.id[-6:]})": selection_indices(a, budget) for a in arts}
    tasks, rows = mix_table(labels, names)
    shown = budget or max(len(v) for v in names.values())
    table = Table(key, "pool", *names, title=f"share of each {key} among the first {shown} selected")
    for t, row in list(zip(tasks, rows))[:top]:
        table.add_row(t, *(f"{100 * v:5.1f}%" for v in row))
    Console(stderr=True).print(table)
    emit(arts[0].id)
