"""End-to-end CLI runs on CPU: tiny in-code model and toy JSONL; asserts on artifact contents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tselect import artifacts as A
from tselect import catalog as C
from tselect import store as S


def tselect(*args, store: Path, check: bool = True, env: dict | None = None):
    full_env = {**os.environ, "TSELECT_STORE": str(store), "TSELECT_PROGRESS": "0", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "tselect", *map(str, args)], capture_output=True, text=True, env=full_env)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def last_line(proc) -> str:
    return proc.stdout.strip().splitlines()[-1]


def test_rds_featurize_select_export_chain(tmp_path, store, toy_data, tiny_model_dir):
    pool, query = toy_data
    f = last_line(tselect("featurize", "--rep", "rds", "--pool", pool, "--query", query, "--model", tiny_model_dir,
                          "--batch-size", "5", store=store))
    art = C.resolve(store, f)
    feats = S.open_features(art.path)
    assert feats.n_pool == 24 and feats.n_query == 2 and feats.attrs["dim"] == 32
    rows = np.asarray(feats.pools[0][:], dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=2e-3)  # fp16 unit rows
    # Batched, padded RDS+ rows equal one-at-a-time rows.
    f1 = last_line(tselect("featurize", "--rep", "rds", "--pool", pool, "--query", query, "--model", tiny_model_dir,
                           "--batch-size", "1", "--dtype", "float32", store=store))
    rows1 = np.asarray(S.open_features(C.resolve(store, f1).path).pools[0][:])
    np.testing.assert_allclose(rows, rows1, atol=2e-3)

    s = last_line(tselect("select", "--features", f, "--selector", "round_robin", "--budget", "6", store=store))
    order = json.loads((C.resolve(store, s).path / "indices.json").read_text())["indices"]
    assert len(order) == 6 and len(set(order)) == 6
    out = tmp_path / "subset.jsonl"
    tselect("export", s, "--out", out, store=store)
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    pool_rows = [json.loads(line) for line in pool.read_text().splitlines()]
    assert [e["messages"] for e in exported] == [pool_rows[i]["messages"] for i in order]
    idx_file = tmp_path / "idx.json"
    tselect("export", s, "--out", idx_file, "--indices", "--budget", "3", store=store)
    assert json.loads(idx_file.read_text()) == order[:3]


def test_rerun_is_a_noop_with_same_id(store, toy_data, tmp_path):
    pool, query = toy_data
    rng = np.random.default_rng(0)
    np.save(tmp_path / "p.npy", rng.normal(size=(24, 4)))
    np.save(tmp_path / "q.npy", rng.normal(size=(2, 4)))
    args = ("featurize", "--rep", "vectors", "--pool", pool, "--query", query,
            "--pool-vectors", tmp_path / "p.npy", "--query-vectors", tmp_path / "q.npy")
    first = tselect(*args, store=store)
    manifest = (C.resolve(store, last_line(first)).path / "manifest.json").read_text()
    second = tselect(*args, store=store)
    assert last_line(first) == last_line(second)
    assert (C.resolve(store, last_line(first)).path / "manifest.json").read_text() == manifest


def test_selection_is_byte_identical_across_runs(tmp_path, toy_data):
    pool, query = toy_data
    rng = np.random.default_rng(1)
    np.save(tmp_path / "p.npy", rng.normal(size=(24, 4)))
    np.save(tmp_path / "q.npy", rng.normal(size=(2, 4)))
    blobs = []
    for k in range(2):
        st = tmp_path / f"store{k}"
        f = last_line(tselect("featurize", "--rep", "vectors", "--pool", pool, "--query", query, "--pool-vectors",
                              tmp_path / "p.npy", "--query-vectors", tmp_path / "q.npy", store=st))
        for sel in ("round_robin", "topk", "random"):
            s = last_line(tselect("select", "--features", f, "--selector", sel, store=st))
            blobs.append((sel, (C.resolve(st, s).path / "indices.json").read_bytes()))
    assert blobs[:3] == blobs[3:]


@pytest.mark.parametrize("args, match", [
    (("featurize", "--rep", "nope", "--demo"), "unknown representation 'nope'"),
    (("featurize", "--rep", "vectors", "--demo"), "--rep vectors needs"),
    (("featurize", "--rep", "embed", "--pool", "missing.jsonl", "--query", "builtin:sciq"), "missing.jsonl does not exist"),
    (("select", "--features", "featurize-000"), "no artifact 'featurize-000'"),
    (("show", "nothing"), "no artifact 'nothing'"),
])
def test_bad_input_exit_2_one_line_no_artifact(store, args, match):
    proc = tselect(*args, store=store, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], proc.stderr
    assert not list(store.glob("*/*-*[!k]")) if store.exists() else True  # no artifact dirs (only .lock files)


def test_vectors_validation(tmp_path, store, toy_data):
    pool, query = toy_data
    np.save(tmp_path / "p.npy", np.ones((24, 4)))
    np.save(tmp_path / "bad.npy", np.full((2, 3), np.nan))
    proc = tselect("featurize", "--rep", "vectors", "--pool", pool, "--query", query, "--pool-vectors",
                   tmp_path / "p.npy", "--query-vectors", tmp_path / "bad.npy", store=store, check=False)
    assert proc.returncode == 2 and "non-finite" in proc.stderr
    assert not [p for p in store.glob("featurize/*") if p.is_dir() and p.suffix != ".part"]


def test_budget_above_pool(tmp_path, store, toy_data):
    pool, query = toy_data
    np.save(tmp_path / "p.npy", np.random.default_rng(0).normal(size=(24, 4)))
    np.save(tmp_path / "q.npy", np.random.default_rng(1).normal(size=(2, 4)))
    f = last_line(tselect("featurize", "--rep", "vectors", "--pool", pool, "--query", query, "--pool-vectors",
                          tmp_path / "p.npy", "--query-vectors", tmp_path / "q.npy", store=store))
    proc = tselect("select", "--features", f, "--budget", "25", store=store, check=False)
    assert proc.returncode == 2 and "outside 1..24" in proc.stderr
    assert not list(store.glob("select/select-*[!k]"))


def test_finetune_and_evaluate_chain(tmp_path, store, toy_data, tiny_model_dir):
    pool, query = toy_data
    rng = np.random.default_rng(2)
    np.save(tmp_path / "p.npy", rng.normal(size=(24, 4)))
    np.save(tmp_path / "q.npy", rng.normal(size=(2, 4)))
    f = last_line(tselect("featurize", "--rep", "vectors", "--pool", pool, "--query", query, "--pool-vectors",
                          tmp_path / "p.npy", "--query-vectors", tmp_path / "q.npy", store=store))
    s = last_line(tselect("select", "--features", f, "--selector", "round_robin", store=store))
    ft = last_line(tselect("finetune", "--selection", s, "--budget", "8", "--model", tiny_model_dir, "--epochs", "1",
                           "--batch-size", "4", "--effective-batch-size", "4", "--lr", "1e-3", store=store))
    art = C.resolve(store, ft)
    assert art.record["n_train"] == 8
    curve = json.loads((art.path / "train_curve.json").read_text())
    # 8 rows at batch 4 would be 2 steps: the fitted schedule trains at batch 1, 8 steps, all at lr > 0
    assert len(curve["loss"]) == art.record["schedule"]["optimizer_steps"] == 8 and all(np.isfinite(curve["loss"]))
    assert min(curve["lr"]) > 0
    assert (art.path / "adapter" / "adapter_model.safetensors").is_file()
    ev = last_line(tselect("evaluate", "--target", query, "--finetune", ft, store=store))
    zs = last_line(tselect("evaluate", "--target", query, "--model", tiny_model_dir, store=store))
    m_ft = json.loads((C.resolve(store, ev).path / "metrics.json").read_text())
    m_zs = json.loads((C.resolve(store, zs).path / "metrics.json").read_text())
    assert ev != zs
    assert m_ft["query"]["loss"] != m_zs["query"]["loss"]
    # Budget above the selection length: one line, exit 2, no finetune artifact.
    proc = tselect("finetune", "--selection", s, "--budget", "25", "--model", tiny_model_dir, store=store, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_less_featurize_then_round_robin(store, toy_data, tiny_model_dir):
    pool, query = toy_data
    f = last_line(tselect("featurize", "--rep", "less", "--pool", pool, "--query", query, "--model", tiny_model_dir,
                          "--param", "dim=256", "--batch-size", "8", store=store))
    art = C.resolve(store, f)
    feats = S.open_features(art.path)
    assert len(feats.checkpoints) == 4 and abs(sum(feats.weights) - 1) < 1e-6
    assert all(p.shape == (24, 256) for p in feats.pools)
    assert art.inputs["model"] and list(store.glob("warmup/warmup-*"))  # the warmup is its own artifact
    s = last_line(tselect("select", "--features", f, "--selector", "round_robin", "--budget", "5", store=store))
    assert len(json.loads((C.resolve(store, s).path / "indices.json").read_text())["indices"]) == 5
    bad = tselect("featurize", "--rep", "less", "--pool", pool, "--query", query, "--model", tiny_model_dir,
                  "--param", "dimm=256", store=store, check=False)
    assert bad.returncode == 2 and "dimm" in bad.stderr


def _big_vectors(tmp_path, n=2600):
    rows = [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(n)]
    pool = tmp_path / "big.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rng = np.random.default_rng(5)
    np.save(tmp_path / "bp.npy", rng.normal(size=(n, 8)))
    np.save(tmp_path / "bq.npy", rng.normal(size=(3, 8)))
    query = tmp_path / "bq.jsonl"
    query.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": "a"}) + "\n" for i in range(3)))
    return ("featurize", "--rep", "vectors", "--pool", pool, "--query", query,
            "--pool-vectors", tmp_path / "bp.npy", "--query-vectors", tmp_path / "bq.npy")


def test_sharded_featurize_equals_single_process(tmp_path):
    args = _big_vectors(tmp_path)  # 2,600 rows = 3 chunks of ≤1,024
    single = last_line(tselect(*args, store=tmp_path / "one"))
    sharded = tmp_path / "two"
    first = tselect(*args, "--shard", "0/2", store=sharded)
    assert last_line(first) == single and not A.exists(sharded, single)  # waits for shard 1
    assert "completes when every shard has finished" in first.stderr
    second = tselect(*args, "--shard", "1/2", store=sharded)
    assert last_line(second) == single and A.exists(sharded, single)
    a = S.open_features(C.resolve(tmp_path / "one", single).path)
    b = S.open_features(C.resolve(sharded, single).path)
    assert np.asarray(a.pools[0][:]).tobytes() == np.asarray(b.pools[0][:]).tobytes()
    assert a.queries[0].tobytes() == b.queries[0].tobytes()


def test_torchrun_two_processes_match(tmp_path):
    import shutil

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    args = _big_vectors(tmp_path)
    single = last_line(tselect(*args, store=tmp_path / "one"))
    env = {**os.environ, "TSELECT_STORE": str(tmp_path / "tr"), "TSELECT_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29533", "-m", "tselect", *map(str, args)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert A.exists(tmp_path / "tr", single)
    a = S.open_features(C.resolve(tmp_path / "one", single).path)
    b = S.open_features(C.resolve(tmp_path / "tr", single).path)
    assert np.asarray(a.pools[0][:]).tobytes() == np.asarray(b.pools[0][:]).tobytes()


def test_merge_finishes_after_all_shards_wrote(tmp_path):
    args = _big_vectors(tmp_path)
    st = tmp_path / "m"
    aid = last_line(tselect(*args, "--shard", "0/2", store=st))
    bad = tselect("merge", aid, store=st, check=False)
    assert bad.returncode == 2 and "rerun the missing --shard" in bad.stderr
    tselect(*args, "--shard", "1/2", store=st)
    assert last_line(tselect("merge", aid, store=st)) == aid and A.exists(st, aid)


def test_too_little_disk_fails_early(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        proc = tselect(*_big_vectors(tmp_path), store=small / "store", check=False)
        assert proc.returncode == 2 and "MB free but these features need about" in proc.stderr
        assert not list((small / "store").glob("featurize/*"))
    finally:
        subprocess.run(["umount", str(small)])


def test_corrupt_warmup_checkpoint_is_refused(store, toy_data, tiny_model_dir):
    pool, query = toy_data
    args = ("featurize", "--rep", "less", "--pool", pool, "--query", query, "--model", tiny_model_dir,
            "--param", "dim=64")
    w = last_line(tselect("warmup", "--pool", pool, "--model", tiny_model_dir, store=store))
    moments = sorted(C.resolve(store, w).path.rglob("*.safetensors"))[0]
    moments.write_bytes(moments.read_bytes()[:-7])  # truncated
    proc = tselect(*args, store=store, check=False)
    assert proc.returncode == 2 and f"warmup {w} is corrupt" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
