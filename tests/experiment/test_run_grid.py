"""`tselect run` end to end on the tiny in-code model and toy JSONL: every cell listed, reruns are
no-ops, parts + collect equal one run, and `report` writes the files with the measured numbers."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import mean, stdev

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from tselect import artifacts, catalog  # noqa: E402
from tselect.experiment import load_spec, plan, run_experiment  # noqa: E402

# Registers the commands even before tselect.cli imports report_cmds itself.
ENTRY = "import sys, tselect.cli.report_cmds; from tselect.cli import main; sys.argv[0] = 'tselect'; main()"

EVAL_ROWS = [
    {"prompt": "Which gas do plants absorb?", "completion": "Carbon dioxide.", "choices": ["Oxygen.", "Carbon dioxide."], "gold": 1},
    {"prompt": "How many players are on a soccer team?", "completion": "Eleven.", "choices": ["Eleven.", "Five."], "gold": 0},
    {"prompt": "What sport uses a shuttlecock?", "completion": "Badminton.", "choices": ["Tennis.", "Badminton."], "gold": 1},
]

TOML = """
[experiment]
name = "tiny"
pool = "{pool}"
model = "{model}"
targets = ["{query}"]
representations = ["rds"]
selectors = ["round_robin", "random"]
budgets = [4, 8]
seeds = [0, 1]
full = true

[featurize]
max_length = 64
batch_size = 8

[finetune]
epochs = 1
lr = 1e-2
batch_size = 4
effective_batch_size = 4
max_length = 64
warmup_ratio = 0.0

[evaluate]
limit = 3
batch_size = 4
max_length = 64
[evaluate.eval_data]
query = "{eval}"

[quantile]
bins = 3
per_bin = 2
"""


def tselect(*args, store: Path, check: bool = True):
    env = {**os.environ, "TSELECT_STORE": str(store), "TSELECT_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", ENTRY, *map(str, args)], capture_output=True, text=True, env=env)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _all_ids(store: Path) -> set[str]:
    return {a.id for a in catalog.list_artifacts(store)}


@pytest.fixture
def grid(tmp_path, toy_data, tiny_model_dir) -> Path:
    pool, query = toy_data
    ev = tmp_path / "eval.jsonl"
    ev.write_text("".join(json.dumps(r) + "\n" for r in EVAL_ROWS))
    path = tmp_path / "tiny.toml"
    path.write_text(TOML.format(pool=pool, model=tiny_model_dir, query=query, eval=ev))
    return path


def test_grid_run_rerun_parts_and_report(tmp_path, grid, store):
    spec = load_spec(grid)
    cells = plan(spec, 24)
    kinds = [c.kind for c in cells]
    # 1 zero-shot, rds+round_robin × 2 seeds × 2 budgets, random × 3 seeds × 2 budgets, 1 full, 3 bins
    assert (kinds.count("zero_shot"), kinds.count("grid"), kinds.count("random"), kinds.count("full"),
            kinds.count("quantile")) == (1, 4, 6, 1, 3)

    # Two hosts' worth of parts into one store, then collect.
    for part in ("0/2", "1/2"):
        assert run_experiment(spec, store, part=tuple(int(x) for x in part.split("/"))) is None
    collected = run_experiment(spec, store, collect=True)
    before = _all_ids(store)
    # A plain run afterwards finds every cell: same id, nothing new.
    proc = tselect("run", grid, store=store)
    assert proc.stdout.strip().splitlines()[-1] == collected
    assert _all_ids(store) == before

    exp = catalog.resolve(store, collected, stage="experiment")
    listed = json.loads((exp.path / "cells.json").read_text())["cells"]
    assert [c["key"] for c in listed] == [c.key for c in cells]
    for c in listed:
        assert all(artifacts.exists(store, x) for x in c["ids"]["evaluate"].values())
        assert c["cell"]["kind"] == "zero_shot" or artifacts.exists(store, c["ids"]["finetune"])
    bins = [catalog.resolve(store, c["ids"]["select"]) for c in listed if c["cell"]["kind"] == "quantile"]
    order = json.loads((catalog.resolve(store, listed[-1]["ids"]["order"]).path / "indices.json").read_text())["indices"]
    heads = [json.loads((b.path / "indices.json").read_text())["indices"] for b in bins]
    assert heads == [order[0:2], order[8:10], order[16:18]]  # 24 rows → 3 bins of 8, first 2 of each

    _check_report(tmp_path, store, collected, listed)


def _check_report(tmp_path: Path, store: Path, exp_id: str, listed: list[dict]) -> None:
    out = tmp_path / "out"
    proc = tselect("report", exp_id, "--out", out, "--metric", "acc_norm", store=store)
    rid = proc.stdout.strip().splitlines()[-1]
    assert rid.startswith("report-") and catalog.resolve(store, rid, stage="report")
    for name in ("report.md", "report.html", "numbers.csv", "budget_curves.png", "quantile.png",
                 "distance_vs_loss.png", "cost_vs_gain.png"):
        assert (out / name).is_file(), name
    assert "data:image/png;base64," in (out / "report.html").read_text()
    md = (out / "report.md").read_text()  # the run's own account, read back from real artifacts
    assert "## Run settings" in md and "| evaluate n_eval | 3 |" in md and (out / "train_curves.png").is_file()
    assert "## What each method selected" in md and "| rds + round_robin | 1 |" in md  # a top-selected row

    def metric(cell: dict, key: str) -> float:
        m = json.loads((catalog.resolve(store, cell["ids"]["evaluate"]["query"]).path / "metrics.json").read_text())
        return m["query"]["loss"] if key == "query_loss" else m["eval"]["mc"][key]

    rows = list(csv.DictReader((out / "numbers.csv").open()))
    for kind, label in (("grid", "rds + round_robin"), ("random", "random")):
        for quantity in ("acc_norm", "query_loss"):
            vals = [metric(c, quantity) for c in listed if c["cell"]["kind"] == kind and c["cell"]["budget"] == 8]
            got = {r["quantity"]: float(r["value"]) for r in rows if r["section"] == "table" and r["method"] == label
                   and r["budget"] == "8" and r["quantity"].startswith(quantity + ".")}
            assert got[f"{quantity}.mean"] == pytest.approx(mean(vals), abs=1e-12)
            assert got[f"{quantity}.std"] == pytest.approx(stdev(vals), abs=1e-12)
            assert got[f"{quantity}.n"] == len(vals)


# --- the spec and the example grids (no model) --------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "experiments"


def test_example_grids_parse_and_plan(monkeypatch):
    for var in ("TIS_MODEL", "TIS_EMBEDDER", "TIS_POOL", "TIS_DATA", "TSELECT_DEMO_POOL"):
        monkeypatch.setenv(var, f"/data/{var.lower()}")
    counts = {}
    for path in sorted(EXAMPLES.glob("*.toml")):
        cells = plan(load_spec(path), n_pool=400)
        counts[path.stem] = len(cells)
        assert len({c.key for c in cells}) == len(cells), f"{path.name}: duplicate cell keys"
    # smoke: 1 zero-shot + 2 reps × 2 seeds × 2 budgets + 3 random seeds × 2 budgets
    assert counts["smoke"] == 1 + 4 + 6  # zero-shot, grid, random
    assert counts["small"] == 3 + 54 + 10 + 36  # zero-shot, grid (3 seeds), random (5 seeds), quantile (no full cell)
    assert counts["demo"] == 1 + 2 + 3  # zero-shot, LESS round-robin (2 seeds), random (3 seeds)
    assert counts["tis"] == 4 + 900 + 15 + 120  # the pool of 400 stands in for the user's pool


def test_dry_run_lists_cells_without_running(store):
    proc = tselect("run", "--dry-run", "--part", "1/2", EXAMPLES / "smoke.toml", store=store)
    assert proc.stdout == "" and "smoke: 5 of 11 cells" in proc.stderr
    assert "grid/rds/round_robin/sciq/b8/s0" in proc.stderr and not store.exists()


@pytest.mark.parametrize("text, match", [
    ("[experiment]\npool = 'builtin:pool-small'\ntargets = ['sciq']\nrepresentations = ['rds']\nbudgets = [8]\nseed = [1]",
     "unknown key 'seed' in \\[experiment\\]"),
    ("[experiment]\npool = 'builtin:pool-small'\ntargets = ['sciq']\nrepresentations = ['rds']", "needs `budgets = ...`"),
    ("[experiment]\npool = '$NOT_SET_ANYWHERE/p.jsonl'\ntargets = ['sciq']\nrepresentations = ['rds']\nbudgets = [8]",
     "\\$NOT_SET_ANYWHERE in '\\$NOT_SET_ANYWHERE/p.jsonl' is not set"),
    ("[experiment]\npool = 'builtin:pool-small'\ntargets = 'sciq'\nrepresentations = ['rds']\nbudgets = [8]",
     'targets = \\["sciq"\\]'),
    ("[experiment]\npool = 'builtin:pool-small'\ntargets = ['sciq']\nrepresentations = ['rds']\nbudgets = [0]",
     "budgets must be a non-empty list of integers >= 1"),
    ("[experimnt]\n", "unknown key 'experimnt' in the top level"),
])
def test_bad_specs_are_user_errors(tmp_path, text, match):
    from tselect.errors import UserError

    (tmp_path / "x.toml").write_text(text)
    with pytest.raises(UserError, match=match):
        load_spec(tmp_path / "x.toml")


def test_parse_share():
    from tselect.cli.app import parse_share
    from tselect.errors import UserError

    assert parse_share("1/3", "--part") == (1, 3) and parse_share("0/1", "--shard") == (0, 1)
    for bad, match in (("3/3", "--part 3/3: need N >= 1 and 0 <= i < N"), ("x", "--part 'x' must look like i/N"),
                       ("1/0", "need N >= 1")):
        with pytest.raises(UserError, match=match):
            parse_share(bad, "--part")
