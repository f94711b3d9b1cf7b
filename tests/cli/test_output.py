"""Logs and output: plain progress lines when stderr is a pipe, --json on stage commands, -q/-v,
ids from rank 0 only."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.test_cli_e2e import last_line, tselect
from tselect import progress


def test_progress_line_format():
    assert progress.line("featurize less pool", 1234, 10000, 385.6) == \
        "featurize less pool: 1,234/10,000 rows (12%), 3.2 rows/s, eta 46 min"  # 8,766 rows at 3.2/s = 45.7 min
    assert progress.line("score", 5, None, 2.0) == "score: 5 rows, 2.5 rows/s"


def _raw(*args, store, env):
    """tselect with stderr to a pipe and TSELECT_PROGRESS unset (the default a Slurm log sees)."""
    full = {k: v for k, v in os.environ.items() if k != "TSELECT_PROGRESS"}
    full.update({"TSELECT_STORE": str(store), **env})
    return subprocess.run([sys.executable, "-m", "tselect", *map(str, args)], capture_output=True, text=True, env=full)


def test_plain_progress_lines_without_a_tty(store, toy_data, tiny_model_dir):
    pool, query = toy_data
    args = ("featurize", "--rep", "rds", "--pool", pool, "--query", query, "--model", tiny_model_dir, "--batch-size", "4")
    proc = _raw(*args, store=store, env={"TSELECT_PROGRESS_INTERVAL": "0"})
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if re.match(r"^\S.* pool: \d+/24 rows \(\d+%\), [\d.e+]+ rows/s", ln)]
    assert len(lines) >= 3, proc.stderr  # 24 rows in batches of 4: one line per batch at interval 0
    counts = [int(re.search(r": (\d+)/24", ln).group(1)) for ln in lines]
    assert counts == sorted(counts) and counts[-1] == 24
    assert "\x1b[" not in proc.stderr  # no terminal escape codes in a log file
    # -q: nothing on stderr, the id on stdout
    quiet = _raw("-q", *args[:-2], "--batch-size", "3", store=store, env={"TSELECT_PROGRESS_INTERVAL": "0"})
    assert quiet.returncode == 0 and quiet.stderr.strip() == "", quiet.stderr
    assert len(quiet.stdout.split()) == 1


def test_default_interval_is_quiet_for_short_steps(store, toy_data, tiny_model_dir):
    pool, query = toy_data
    proc = _raw("featurize", "--rep", "rds", "--pool", pool, "--query", query, "--model", tiny_model_dir,
                store=store, env={})
    assert proc.returncode == 0 and "rows/s" not in proc.stderr, proc.stderr


@pytest.fixture
def vec_features(tmp_path, store, toy_data):
    pool, query = toy_data
    rng = np.random.default_rng(0)
    np.save(tmp_path / "p.npy", rng.normal(size=(24, 4)))
    np.save(tmp_path / "q.npy", rng.normal(size=(2, 4)))
    return ("featurize", "--rep", "vectors", "--pool", pool, "--query", query, "--pool-vectors", tmp_path / "p.npy",
            "--query-vectors", tmp_path / "q.npy")


def test_json_prints_the_manifest(store, vec_features):
    f = last_line(tselect(*vec_features, store=store))
    out = json.loads(tselect(*vec_features, "--json", store=store).stdout)
    assert out["id"] == f and out["stage"] == "featurize" and out["complete"] is True
    assert out["config"]["rep"] == "vectors" and out["record"]["n_pool"] == 24
    sel = json.loads(tselect("select", "--features", f, "--selector", "topk", "--budget", "5", "--json", store=store).stdout)
    assert sel["stage"] == "select" and sel["inputs"]["features"] == f and sel["config"]["budget"] == 5
    plain = last_line(tselect("select", "--features", f, "--selector", "topk", "--budget", "5", store=store))
    assert plain == sel["id"]


def test_verbose_and_quiet_conflict(store):
    proc = tselect("-v", "-q", "ls", store=store, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--verbose and --quiet" in proc.stderr


@pytest.mark.parametrize("env", [{"RANK": "1", "WORLD_SIZE": "2"}, {"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}])
def test_only_rank_zero_prints(store, vec_features, env):
    f = last_line(tselect(*vec_features, store=store))
    args = ("select", "--features", f, "--selector", "topk", "--budget", "5")
    s = last_line(tselect(*args, store=store))
    assert tselect(*args, store=store, env=env).stdout == ""
    zero = {k: "0" if k in ("RANK", "SLURM_PROCID") else v for k, v in env.items()}
    assert tselect(*args, store=store, env=zero).stdout.split() == [s]


def test_torchrun_prints_one_id(tmp_path, store, vec_features):
    """`S=$(torchrun --nproc_per_node 2 tselect select ...)` holds one id: rank 0's. (select, not a
    sharded featurize: two ranks finishing one tiny featurize race on its zarr metadata, a separate bug.)"""
    pytest.importorskip("torch")
    f = last_line(tselect(*vec_features, store=store))
    args = ("select", "--features", f, "--selector", "topk", "--budget", "5")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update({"TSELECT_STORE": str(store), "TSELECT_PROGRESS": "0", "OMP_NUM_THREADS": "1"})
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "tselect",
                           *args], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert len(lines) == 1 and lines[0] == last_line(tselect(*args, store=store))


def test_json_on_score_distance_mix_finetune(tmp_path, store, toy_data, tiny_model_dir, vec_features):
    f = last_line(tselect(*vec_features, store=store))
    s = last_line(tselect("select", "--features", f, "--selector", "topk", "--budget", "8", store=store))

    def as_json(*args):
        out = json.loads(tselect(*args, "--json", store=store).stdout)
        assert out["complete"] is True and out["id"] == last_line(tselect(*args, store=store))
        return out

    sc = as_json("score", "--strategy", "length", "--pool", toy_data[0], "--model", tiny_model_dir)
    assert sc["stage"] == "scores" and sc["config"]["strategy"] == "length"
    cfg = tmp_path / "distance.json"
    cfg.write_text(json.dumps({"budget": ["4", "2"]}))  # a repeatable option as a list
    d = as_json("distance", "--features", f, "--selection", s, "--config", cfg)
    assert d["stage"] == "distance" and d["config"]["budgets"] == [2, 4]
    m = as_json("mix", s)
    assert m["id"].startswith(m["stage"])
    ft_cfg = tmp_path / "ft.toml"
    ft_cfg.write_text("[finetune]\nepochs = 1\nbatch-size = 2\neffective_batch_size = 2\nlr = 0.01\n")
    ft = as_json("finetune", "--selection", s, "--budget", "4", "--model", tiny_model_dir, "--config", ft_cfg)
    assert ft["stage"] == "finetune" and ft["config"]["train"]["epochs"] == 1 and ft["config"]["train"]["batch_size"] == 2
    assert ft["config"]["budget"] == 4 and ft["inputs"]["selection"] == s
