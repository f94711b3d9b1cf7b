"""`tselect run --dry-run` catches typos anywhere in the TOML (one line, exit 2) and marks the
cells already done."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from tests.experiment.test_run_grid import EVAL_ROWS, TOML  # noqa: E402
from tests.test_cli_e2e import tselect  # noqa: E402


@pytest.fixture
def grid_text(tmp_path, toy_data, tiny_model_dir) -> str:
    pool, query = toy_data
    ev = tmp_path / "eval.jsonl"
    ev.write_text("".join(json.dumps(r) + "\n" for r in EVAL_ROWS))
    return TOML.format(pool=pool, model=tiny_model_dir, query=query, eval=ev)


@pytest.mark.parametrize("old,new,message", [
    ("epochs = 1", "epoch = 1", "unknown key 'epoch' in [finetune]"),
    ('selectors = ["round_robin", "random"]', 'selectors = ["round_robn"]', "unknown selector 'round_robn'"),
    ('representations = ["rds"]', 'representations = ["rsd"]', "unknown representation 'rsd'"),
    ("limit = 3", "limt = 3", "unknown key 'limt' in [evaluate]"),
    ("[featurize]", "[select.round_robn]\n[featurize]", "unknown selector 'round_robn'"),
    ("[featurize]", "[featurize.rsd]\nbatch_size = 2\n[featurize]", "unknown representation 'rsd'"),
    ("batch_size = 8", "batch_sise = 8", "'batch_sise' is unknown"),
    ("[featurize]", "[estimate]\ntrain_exmple = 1.0\n[featurize]", "unknown key 'train_exmple' in [estimate]"),
    ("[featurize]", "[estimate]\nfeaturize_row = {rsd = 0.1}\n[featurize]", "unknown key 'rsd' in [estimate] featurize_row"),
])
def test_typos_fail_the_dry_run(tmp_path, store, grid_text, old, new, message):
    assert old in grid_text
    path = tmp_path / "typo.toml"
    path.write_text(grid_text.replace(old, new, 1))
    proc = tselect("run", "--dry-run", path, store=store, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not store.exists() or not any(store.rglob("manifest.json"))


def _rows(text: str, status: str) -> int:
    return sum(1 for line in text.splitlines() if "│" in line and line.rstrip(" │").endswith(status))


def test_dry_run_marks_done_cells(tmp_path, store, grid_text):
    path = tmp_path / "grid.toml"
    path.write_text(grid_text)
    before = tselect("run", "--dry-run", path, store=store, env={"COLUMNS": "200"}).stderr
    n = int(before.split(" of ")[1].split()[0])
    assert f"{n} of {n} cells, 0 done (cached)" in before and _rows(before, "to run") == n
    tselect("run", "--part", f"0/{n}", path, store=store)  # cell 0 only: the zero-shot evaluation
    after = tselect("run", "--dry-run", path, store=store, env={"COLUMNS": "200"}).stderr
    assert f"{n} of {n} cells, 1 done (cached)" in after and _rows(after, "to run") == n - 1 and _rows(after, "done") == 1
    row0 = next(line for line in after.splitlines() if "zero_shot" in line)
    assert "done" in row0
