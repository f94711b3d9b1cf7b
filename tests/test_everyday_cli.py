"""Everyday commands: ls columns and --stage, bare hex ids, rm and its dependents, required data
flags, one --max-length default, --version and -h."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_cli_e2e import last_line, tselect
from tselect import artifacts as A
from tselect import catalog as C


@pytest.fixture
def made(tmp_path, store, toy_data):
    pool, query = toy_data
    rng = np.random.default_rng(0)
    np.save(tmp_path / "p.npy", rng.normal(size=(24, 4)))
    np.save(tmp_path / "q.npy", rng.normal(size=(2, 4)))
    f = last_line(tselect("featurize", "--rep", "vectors", "--pool", pool, "--query", query, "--pool-vectors",
                          tmp_path / "p.npy", "--query-vectors", tmp_path / "q.npy", store=store))
    s = last_line(tselect("select", "--features", f, "--selector", "topk", "--budget", "5", store=store))
    return f, s


def one_line_error(proc, *parts):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and all(p in lines[0] for p in parts), proc.stderr


def test_ls_columns_and_stage(store, made):
    f, s = made
    proc = tselect("ls", store=store, env={"COLUMNS": "250"})
    assert proc.stdout.split() == [f, s]  # oldest first
    row = next(line for line in proc.stderr.splitlines() if s in line)
    assert "vectors" in row and "topk" in row and " 5 " in row
    assert tselect("ls", "--stage", "select", store=store).stdout.split() == [s]
    one_line_error(tselect("ls", "--stage", "selection", store=store, check=False), "unknown --stage 'selection'", "select")


def test_show_and_path_take_bare_hex(store, made):
    f, s = made
    hexpart = s.split("-", 1)[1]
    by_prefix = json.loads(tselect("show", hexpart[:8], store=store).stdout)
    assert by_prefix["id"] == s
    assert tselect("path", hexpart[-6:], store=store).stdout.strip() == str(C.resolve(store, s).path.resolve())
    one_line_error(tselect("show", "zzzz", store=store, check=False), "no artifact 'zzzz'")


def test_rm_refuses_while_others_depend(store, made):
    f, s = made
    one_line_error(tselect("rm", f, store=store, check=False), f"{f} is an input of 1 other artifacts ({s})", "--force")
    assert A.exists(store, f)
    assert last_line(tselect("rm", s, store=store)) == s  # nothing depends on the selection
    assert last_line(tselect("rm", f, store=store)) == f
    assert not A.exists(store, f) and not A.exists(store, s)


def test_rm_force(store, made):
    f, s = made
    proc = tselect("rm", "--force", f, store=store)
    assert last_line(proc) == f and "1 artifacts made from it" in proc.stderr and not A.exists(store, f)


@pytest.mark.parametrize("args, flag", [
    (("featurize", "--rep", "embed", "--query", "builtin:sciq"), "--pool is required"),
    (("featurize", "--rep", "embed", "--pool", "builtin:pool-small"), "--query is required"),
    (("evaluate",), "--target is required"),
    (("warmup",), "--pool is required"),
    (("score", "--strategy", "length"), "--pool is required"),
])
def test_data_flags_are_required_without_demo(store, args, flag):
    one_line_error(tselect(*args, store=store, check=False), flag, "--demo")
    assert not store.exists() or not [p for p in store.glob("*/*") if p.suffix != ".lock"]


def test_one_max_length_default():
    from tselect.data.tokenize import MAX_LENGTH
    from tselect.evaluate import EvaluateConfig
    from tselect.featurize.config import FeaturizeConfig
    from tselect.scores import ScoreConfig
    from tselect.training import TrainConfig

    got = {FeaturizeConfig(rep="embed", pool="p", query="q").max_length, ScoreConfig(strategy="length", pool="p").max_length,
           TrainConfig().max_length, EvaluateConfig().max_length}
    assert got == {MAX_LENGTH}
    for cmd in ("featurize", "score", "finetune", "evaluate"):
        assert f"[default: {MAX_LENGTH}]" in tselect(cmd, "--help", store=None, env={"COLUMNS": "300"}).stdout


def test_version_and_short_help(store):
    from importlib.metadata import version

    assert tselect("--version", store=store).stdout.strip() == f"tselect {version('tselect')}"
    out = tselect("select", "-h", store=store).stdout
    assert "tselect select [OPTIONS]" in out and "--features" in out
