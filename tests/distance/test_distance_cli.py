"""`tselect distance` end to end on hand-made vectors, with values computed by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tselect import catalog as C
from tselect.select.distance import selection_distances
from tselect.similarity import ArraySimilarity

# Registers the command even before tselect.cli imports distance_cmd itself.
ENTRY = "import sys, tselect.cli.distance_cmd; from tselect.cli import main; sys.argv[0] = 'tselect'; main()"


def tselect(*args, store: Path, check: bool = True):
    env = {**os.environ, "TSELECT_STORE": str(store), "TSELECT_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-c", ENTRY, *map(str, args)], capture_output=True, text=True, env=env)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def last_line(proc) -> str:
    return proc.stdout.strip().splitlines()[-1]


def hand_vectors(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Queries e0, e1. Pool: row 5 = e0, row 9 = e1, row 2 = (.6, .8, 0), row 7 = e2, the rest
    (-1, -1, 0)/√2. So topk orders 5, 9 (tie at 1 → lower index), 2 (.8), 7 (0), then the rest."""
    pool = np.tile([-1.0, -1.0, 0.0], (n, 1))
    pool[5], pool[9], pool[2], pool[7] = [1, 0, 0], [0, 1, 0], [3, 4, 0], [0, 0, 1]
    return pool, np.array([[1.0, 0, 0], [0, 1.0, 0]])


def featurize(tmp_path, store, pool_file, query_file, pool_vecs, query_vecs, tag: str) -> str:
    np.save(tmp_path / f"p{tag}.npy", pool_vecs)
    np.save(tmp_path / f"q{tag}.npy", query_vecs)
    return last_line(tselect("featurize", "--rep", "vectors", "--pool", pool_file, "--query", query_file,
                             "--pool-vectors", tmp_path / f"p{tag}.npy", "--query-vectors", tmp_path / f"q{tag}.npy",
                             "--dtype", "float32", store=store))


# By hand, cost C = (1 − S)/2, queries 1/2 each, subset rows 1/b each:
# b=1 {5}:        S = [[1], [0]]: coverage (1+0)/2, chamfer 1, OT: q1 ships 1/2 at .5 → .25
# b=2 {5,9}:      S = I: coverage 1, chamfer 1, OT 0
# b=3 {5,9,2}:    chamfer (1+1+.8)/3; OT: each query fills its own row (1/3) and sends 1/6 to row 2,
#                 at .2 (q0) and .1 (q1) → .05
# b=4 {5,9,2,7}:  chamfer (1+1+.8+0)/4 = .7; OT: row 7 costs .5 from anyone (1/4 · .5), row 2 best
#                 from q1 (1/4 · .1), q0 fills row 5 → .15
EXPECTED = {1: (0.5, 1.0, 0.25), 2: (1.0, 1.0, 0.0), 3: (1.0, 2.8 / 3, 0.05), 4: (1.0, 0.7, 0.15)}


def check_rows(rows: list[dict], budgets) -> None:
    assert [r["budget"] for r in rows] == list(budgets)
    for r in rows:
        cov, cham, ot = EXPECTED[r["budget"]]
        assert r["coverage"] == pytest.approx(cov, abs=1e-6)
        assert r["chamfer"] == pytest.approx(cham, abs=1e-6)
        assert r["ot"] == pytest.approx(ot, abs=1e-6) and r["ot_solver"] == "emd"


def test_distance_stage_end_to_end(tmp_path, store, toy_data):
    pool, query = toy_data
    f = featurize(tmp_path, store, pool, query, *hand_vectors(), tag="")
    s = last_line(tselect("select", "--features", f, "--selector", "topk", "--budget", "6", store=store))
    order = json.loads((C.resolve(store, s).path / "indices.json").read_text())["indices"]
    assert order[:4] == [5, 9, 2, 7]

    proc = tselect("distance", "--features", f, "--selection", s, "--budget", "4", "--budget", "1",
                   "--budget", "3", "--budget", "2", store=store)
    d = last_line(proc)
    assert d.startswith("distance-") and proc.stdout.strip() == d  # only the id on stdout
    doc = json.loads((C.resolve(store, d, stage="distance").path / "distances.json").read_text())
    assert doc["features"] == f and doc["selection"] == s and doc["n_query"] == 2
    check_rows(doc["rows"], [1, 2, 3, 4])
    assert "coverage" in proc.stderr  # the rich table
    # Same budgets in another order: the same artifact.
    again = tselect("distance", "--features", f, "--selection", s, "--budget", "2", "--budget", "4",
                    "--budget", "3", "--budget", "1", store=store)
    assert last_line(again) == d
    for budget, match in (("7", "outside 1..6"), ("0", "must be >= 1")):
        bad = tselect("distance", "--features", f, "--selection", s, "--budget", budget, store=store, check=False)
        assert bad.returncode == 2 and match in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_whole_selection_by_default_and_other_features_of_the_same_pool(tmp_path, store, toy_data):
    pool, query = toy_data
    pvec, qvec = hand_vectors()
    f = featurize(tmp_path, store, pool, query, pvec, qvec, tag="")
    s = last_line(tselect("select", "--features", f, "--selector", "topk", "--budget", "3", store=store))
    d = last_line(tselect("distance", "--features", f, "--selection", s, store=store))
    check_rows(json.loads((C.resolve(store, d).path / "distances.json").read_text())["rows"], [3])
    # Another representation of the same pool (here: rows permuted in feature space) is allowed.
    g = featurize(tmp_path, store, pool, query, pvec[:, [1, 0, 2]], qvec, tag="swap")
    e = last_line(tselect("distance", "--features", g, "--selection", s, "--budget", "1", store=store))
    row = json.loads((C.resolve(store, e).path / "distances.json").read_text())["rows"][0]
    assert row["coverage"] == pytest.approx(0.5) and row["chamfer"] == pytest.approx(1.0)  # row 5 is now e1


def test_selection_from_another_pool_is_refused(tmp_path, store, toy_data):
    pool, query = toy_data
    f = featurize(tmp_path, store, pool, query, *hand_vectors(), tag="")
    small = tmp_path / "small.jsonl"
    small.write_text("".join(pool.read_text().splitlines(keepends=True)[:20]))
    other = featurize(tmp_path, store, small, query, hand_vectors(20)[0], hand_vectors()[1], tag="small")
    s = last_line(tselect("select", "--features", other, "--selector", "topk", "--budget", "3", store=store))
    proc = tselect("distance", "--features", f, "--selection", s, store=store, check=False)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "another pool" in proc.stderr
    assert not [p for p in store.glob("distance/*") if p.is_dir()]


def test_selection_distances_pure():
    pvec, qvec = hand_vectors()
    sim = ArraySimilarity((qvec @ (pvec / np.linalg.norm(pvec, axis=1, keepdims=True)).T), chunk_rows=5)
    check_rows(selection_distances(sim, np.array([5, 9, 2, 7, 0]), [4, 2, 1, 3, 2]), [1, 2, 3, 4])
    with pytest.raises(ValueError, match="1..5"):
        selection_distances(sim, np.array([5, 9, 2, 7, 0]), [6])
