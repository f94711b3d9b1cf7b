"""The report stage: an experiment artifact → a self-contained report directory (artifact "report").

    report.md / report.html   tables, recommendation, diagnostics; the HTML inlines its plots
    budget_curves.png         metric and query loss vs budget, one panel per target
    quantile.png              query loss per distance bin (if the experiment has [quantile])
    distance_vs_loss.png      subset–query OT distance vs query loss, per representation space
    cost_vs_gain.png          wall time vs gain over random
    train_curves.png          training loss per optimizer step, per method and budget
    numbers.csv               every number above, long format
    summary.json              the budget tables and the recommendation (the CLI prints these)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

from tselect import artifacts, catalog, identity, progress, store
from tselect.errors import UserError
from tselect.report.tables import HIGHER_IS_BETTER

FORMAT = 2  # bump when the report's content changes, so old reports are not reused


@dataclass(frozen=True)
class ReportConfig:
    experiment: str
    """Experiment artifact id (from `tselect run`)."""
    metric: str = "auto"
    """Task metric for tables and the recommendation: acc, acc_norm, em, f1, num_em, query_loss, or auto."""

    NOT_HASHED: ClassVar[dict[str, str]] = {"experiment": "artifact id in the inputs"}

    def __post_init__(self):
        if self.metric != "auto" and self.metric not in HIGHER_IS_BETTER:
            raise ValueError(f"--metric {self.metric!r} is unknown; use auto or one of {', '.join(HIGHER_IS_BETTER)}")


def headlines(tables: list[dict]) -> list[str]:
    """One line per (target, method, budget) with a paired loss difference to random and its CI."""
    out = []
    for t in tables:
        name = t["quantity"].replace("_", " ")
        for m, diffs in t["vs_random"].items():
            out += [f"{m} vs random at budget {b}: Δ {name} = {d['mean']:+.3f} [95% CI {d['lo']:+.3f}, {d['hi']:+.3f}] "
                    f"({t['target']}, {d['n_items']} items, {d['n_seeds']} vs {d['n_ref_seeds']} training seeds)"
                    for b, d in zip(t["budgets"], diffs) if d is not None]
    return out


def write_report(header: dict, rows: list[dict], metric: str, out: Path, details: dict | None = None) -> dict:
    """Compute, plot and write every report file into `out`; returns the summary.

    details: the run's settings, training curves and selections (tselect.report.gather.details)."""
    from tselect.report import plots, render, run_details, sections

    c = sections.compute(header, rows, metric)
    images = {"curves": plots.budget_curves(c["metric_tables"], c["loss_tables"], out),
              "quantile": plots.quantile_plot(c["quantile"], out),
              "distance": plots.distance_scatter(c["distances"], out),
              "cost": plots.cost_gain(c["ledgers"], c["metric"], out)}
    doc = sections.blocks(header, c, images)
    if details:  # settings right after the recommendation and the reading rules; the rest at the end
        doc[5:5] = run_details.settings_blocks(details.get("settings", {}))
        doc += run_details.curve_blocks(plots.train_curves(details.get("curves", []), out))
        doc += run_details.choice_blocks(details.get("choices", []), c["metric_tables"])
    (out / "report.md").write_text(render.to_markdown(doc))
    (out / "report.html").write_text(render.to_html(doc, out, f"tselect report {header['name']}"))
    render.write_csv(out / "numbers.csv", sections.csv_records(rows, c))
    summary = {"experiment": header["id"], "name": header["name"], "metric": c["metric"],
               "tables": c["metric_tables"], "loss_tables": c["loss_tables"],
               "headlines": headlines(c["loss_tables"] + c["eval_loss_tables"]),
               "recommendation": c["recommendation"]["text"], "choice": c["recommendation"]["choice"]}
    store.write_json(out / "summary.json", summary)
    return summary


def run(cfg: ReportConfig, root: Path) -> str:
    from tselect.report.gather import details, gather

    exp = catalog.resolve(root, cfg.experiment, stage="experiment")
    header, rows = gather(root, exp.id)
    if not rows:
        raise UserError(f"experiment {exp.id} has no cells to report")

    def write(build: artifacts.Build) -> None:
        summary = write_report(header, rows, cfg.metric, build.path, details(root, exp.id))
        build.record(experiment=exp.id, name=header["name"], metric=summary["metric"], n_rows=len(rows),
                     choice=summary["choice"])

    aid = artifacts.produce(root, "report", identity.hashed(cfg, format=FORMAT), {"experiment": exp.id}, write)
    progress.note(f"report {header['name']}: {len(rows)} results → {aid}")
    return aid
