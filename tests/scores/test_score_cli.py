"""`tselect score` end to end on CPU (tiny model, toy JSONL), then `select --selector score`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tselect import catalog as C
from tselect import store as S
from tselect.scores import STRATEGIES
from tselect.select.registry import SELECTORS
from tests.scores import make_features

# Importing score_cmd registers the command whether or not tselect.cli imports it yet.
ENTRY = "import tselect.cli.score_cmd; from tselect.cli import main; main()"


def tselect(*args, store, check=True):
    env = {**os.environ, "TSELECT_STORE": str(store), "TSELECT_PROGRESS": "0", "TSELECT_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", ENTRY, *map(str, args)], capture_output=True, text=True, env=env)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def last_line(proc) -> str:
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("name", STRATEGIES)
def test_score_then_select_by_score(name, tmp_path, store, toy_data, tiny_model_dir):
    features = make_features(store, toy_data[0], toy_data[1], 24)
    extra = ("--features", features) if STRATEGIES[name].needs_features else ()
    sc = last_line(tselect("score", "--strategy", name, "--pool", toy_data[0], "--model", tiny_model_dir,
                           "--max-length", "64", *extra, store=store))
    art = C.resolve(store, sc, stage="scores")
    scores = S.read_array(C.checked_path(art, "scores.npy"))
    assert scores.shape == (24,) and np.isfinite(scores).sum() > 0
    assert len(json.loads((art.path / "details.json").read_text())["ids"]) == 24
    if "score" not in SELECTORS:  # the score selector lands separately; the artifact is checked above
        return
    sel = last_line(tselect("select", "--features", features, "--selector", "score", "--scores", sc, store=store))
    order = S.read_indices(C.resolve(store, sel).path / "indices.json")
    kept = np.flatnonzero(~np.isnan(scores))
    expected = kept[np.lexsort((kept, -scores[kept]))]  # score descending, ties to the lower index
    assert order[: kept.size].tolist() == expected.tolist()
    assert sorted(order[kept.size:].tolist()) == np.flatnonzero(np.isnan(scores)).tolist()


@pytest.mark.parametrize("args, match", [
    (("score", "--strategy", "nope", "--pool", "POOL"), "unknown strategy 'nope'"),
    (("score", "--strategy", "miwv", "--pool", "POOL"), "miwv needs --features"),
    (("score", "--strategy", "length", "--pool", "POOL", "--model", "/no/such/dir"), "no such local directory"),
])
def test_bad_input_exit_2_one_line(args, match, store, toy_data):
    args = [toy_data[0] if a == "POOL" else a for a in args]
    proc = tselect(*args, store=store, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and match in lines[0], proc.stderr
    assert not list(store.glob("scores/scores-*[!k]"))  # no artifact, at most a .lock
