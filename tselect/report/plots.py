"""Report figures (matplotlib, Agg backend, imported on first use). Each function takes the pure
structures of tselect.report.tables, writes one PNG and returns its file name (None: no data)."""

from __future__ import annotations

from pathlib import Path

DPI = 110
MARKERS = ("o", "s", "^", "D", "v", "P")  # one per budget in the distance scatter


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    return plt


def _scale(quantity: str) -> float:
    return 1.0 if quantity.endswith("_loss") else 100.0  # metrics in points, as in the tables


def _err(s: dict) -> tuple[float, float]:
    """(below, above) the mean: the 95% CI when the cell has one, else ± std over seeds."""
    if s.get("lo") is not None:
        return s["mean"] - s["lo"], s["hi"] - s["mean"]
    return (s["std"] or 0.0), (s["std"] or 0.0)


def _series(ax, budgets, stats, scale, **style) -> None:
    pts = [(b, s["mean"] * scale, *(e * scale for e in _err(s))) for b, s in zip(budgets, stats) if s is not None]
    if pts:
        xs, ys, lo, hi = zip(*pts)
        ax.errorbar(xs, ys, yerr=[lo, hi], capsize=3, marker="o", markersize=4, **style)


def _panel(ax, table: dict) -> None:
    q, budgets, scale = table["quantity"], table["budgets"], _scale(table["quantity"])
    for label, stats in table["methods"].items():
        _series(ax, budgets, stats, scale, label=label)
    _series(ax, budgets, table["random"], scale, label="random", color="black", linestyle="--")
    for ref, style in (("zero_shot", ":"), ("full", "-.")):
        if table.get(ref) is not None:
            ax.axhline(table[ref]["mean"] * scale, color="gray", linestyle=style, label=ref.replace("_", "-"))
    if budgets and budgets[-1] >= 4 * budgets[0]:
        ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_title(f"{table['target']}")
    ax.set_xlabel("budget (examples)")
    ax.set_ylabel(q + ("" if q.endswith("_loss") else " (points)"))


def budget_curves(metric_tables: list[dict], loss_tables: list[dict], out: Path, name: str = "budget_curves.png") -> str | None:
    """Row 1: the task metric per target; row 2: query loss; mean with 95% CI (± std without item data)."""
    if not metric_tables:
        return None
    plt = _plt()
    n = len(metric_tables)
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n, 6.4), squeeze=False)
    for j, (mt, lt) in enumerate(zip(metric_tables, loss_tables)):
        _panel(axes[0][j], mt)
        _panel(axes[1][j], lt)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out / name, dpi=DPI)
    plt.close(fig)
    return name


def quantile_plot(curves: list[dict], out: Path, name: str = "quantile.png") -> str | None:
    """Query loss per distance bin (1 = nearest), one line per representation, one panel per target."""
    if not curves:
        return None
    plt = _plt()
    targets = list(dict.fromkeys(c["target"] for c in curves))
    fig, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 3.4), squeeze=False)
    for ax, target in zip(axes[0], targets):
        for c in (c for c in curves if c["target"] == target):
            ci = c["rho_ci"]
            rho = "n/a" if ci["rho"] is None else f"{ci['rho']:+.2f}" + (
                "" if ci["lo"] is None else f" [{ci['lo']:+.2f}, {ci['hi']:+.2f}]")
            _series(ax, c["bins"], c["stats"], _scale(c["quantity"]), label=f"{c['rep']} (ρ={rho})")
        ax.set_title(target)
        ax.set_xlabel("distance bin (1 = nearest)")
        ax.set_ylabel(curves[0]["quantity"])
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / name, dpi=DPI)
    plt.close(fig)
    return name


def distance_scatter(points: list[dict], out: Path, name: str = "distance_vs_loss.png") -> str | None:
    """OT distance to the queries (in each rep's own space) vs measured query loss."""
    if not points:
        return None
    plt = _plt()
    reps = list(dict.fromkeys(p["rep"] for p in points))
    targets = list(dict.fromkeys(p["target"] for p in points))
    fig, axes = plt.subplots(len(reps), len(targets), figsize=(4.0 * len(targets), 3.2 * len(reps)), squeeze=False)
    for p in points:
        ax = axes[reps.index(p["rep"])][targets.index(p["target"])]
        budgets = sorted({b for b in p["budgets"] if b is not None})
        for kind in dict.fromkeys(p["kinds"]):  # colour: method; marker: budget
            for b in [*budgets, None]:
                sel = [i for i, (k, bb) in enumerate(zip(p["kinds"], p["budgets"])) if k == kind and bb == b]
                if sel:
                    ax.scatter([p["ot"][i] for i in sel], [p["loss"][i] for i in sel], s=16,
                               marker=MARKERS[budgets.index(b) % len(MARKERS)] if b is not None else "*",
                               color=f"C{list(dict.fromkeys(p['kinds'])).index(kind) % 10}",
                               label=f"{kind} @ {b if b is not None else 'bin/all'}")
        ci = p["ci_ot"]
        rho = "n/a" if ci["rho"] is None else f"{ci['rho']:+.2f}" + ("" if ci["lo"] is None else f" [{ci['lo']:+.2f}, {ci['hi']:+.2f}]")
        ax.set_title(f"{p['rep']} space · {p['target']} (ρ={rho})", fontsize=9)
        ax.set_xlabel("OT distance subset ↔ queries")
        ax.set_ylabel("query loss")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / name, dpi=DPI)
    plt.close(fig)
    return name


def cost_gain(ledgers: dict[str, list[dict]], metric: dict[str, str], out: Path, name: str = "cost_vs_gain.png") -> str | None:
    """Wall time (selection + training) vs gain over random, per (method, budget)."""
    entries = {t: [e for e in led if e["gain"] is not None or e["method"] == "random"] for t, led in ledgers.items()}
    entries = {t: led for t, led in entries.items() if led}
    if not entries:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(entries), figsize=(4.4 * len(entries), 3.6), squeeze=False)
    for ax, (target, led) in zip(axes[0], entries.items()):
        q = metric[target]
        for e in led:  # random sits on the zero line at its own (near-zero selection) cost
            x, y = e["selection_s"] + e["finetune_s"], (e["gain"] or 0.0) * _scale(q)
            ax.scatter([x], [y], s=16, **({"color": "black", "marker": "x"} if e["method"] == "random" else {}))
            ax.annotate(f"{e['method']}@{e['budget'] or 'all'}", (x, y), fontsize=6)
        ax.axhline(0.0, color="black", linestyle="--", linewidth=0.8)
        ax.margins(x=0.25)  # room for the labels
        unit = "lower is better" if q.endswith("_loss") else "points"
        ax.set_title(f"{target}: {q} − random ({unit})", fontsize=9)
        ax.set_xlabel("selection + fine-tune wall time (s)")
        ax.set_ylabel("gain over random")
    fig.tight_layout()
    fig.savefig(out / name, dpi=DPI)
    plt.close(fig)
    return name


def train_curves(curves: list[dict], out: Path, name: str = "train_curves.png") -> str | None:
    """Training loss per optimizer step; one panel per budget, one line per method (and target)."""
    if not curves:
        return None
    plt = _plt()
    budgets = list(dict.fromkeys(c["budget"] for c in curves))
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.2 * len(budgets), 3.4), squeeze=False)
    for ax, b in zip(axes[0], budgets):
        for c in (c for c in curves if c["budget"] == b):
            label = c["method"] + (f" ({c['target']})" if c["target"] else "")
            ax.plot(c["step"], c["loss"], marker="." if len(c["step"]) < 20 else None, linewidth=1, label=label)
        ax.set_title(f"budget {b if b is not None else 'all'}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=5)
    fig.tight_layout()
    fig.savefig(out / name, dpi=DPI)
    plt.close(fig)
    return name
