"""Hub ids on the command line, resolved offline from a fake HF cache: the artifact id follows the
resolved content, not the name or the cache's location."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.data.test_sources import ALPACA, COMMIT_A, COMMIT_B, fake_repo
from tests.test_cli_e2e import last_line, tselect
from tselect import catalog as C

datasets = pytest.importorskip("datasets")


def hf_env(cache):
    return {"HF_HOME": str(cache.parent), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


def test_featurize_hub_model_and_hub_dataset(tmp_path, store, tiny_model_dir, toy_data):
    pool, query = toy_data
    cache = tmp_path / "hf" / "hub"
    fake_repo(cache, "model", "org/tiny", {COMMIT_A: tiny_model_dir}, COMMIT_A)
    args = ("featurize", "--rep", "rds", "--pool", pool, "--query", query, "--model", "org/tiny", "--batch-size", "8")
    f = last_line(tselect(*args, store=store, env=hf_env(cache)))
    art = C.resolve(store, f)
    assert "model" not in art.config  # neither name nor path is hashed; the fingerprint is
    from tselect.models import fingerprint

    assert art.inputs["model"] == fingerprint(tiny_model_dir)
    # the same snapshot in another cache, asked for by commit: the same artifact
    other = tmp_path / "hf2" / "hub"
    fake_repo(other, "model", "org/tiny", {COMMIT_A: tiny_model_dir}, COMMIT_A)
    again = tselect(*args, "--revision", COMMIT_A, store=store, env=hf_env(other))
    assert last_line(again) == f
    missing = tselect(*args[:-4], "--model", "org/nope", store=store, env=hf_env(cache), check=False)
    assert missing.returncode == 2 and "hf download org/nope" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1

    # a hub dataset with splits as the pool, by id, with --split
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    rows = [{"question": r["instruction"], "answer": r["output"], "id": r["id"]} for r in ALPACA]
    datasets.Dataset.from_list(rows[:3]).to_parquet(str(src / "data" / "train-00000-of-00001.parquet"))
    datasets.Dataset.from_list(rows[3:]).to_parquet(str(src / "data" / "test-00000-of-00001.parquet"))
    fake_repo(cache, "dataset", "org/qa", {COMMIT_B: src}, COMMIT_B)
    np.save(tmp_path / "p.npy", np.eye(3, 4))
    np.save(tmp_path / "q.npy", np.ones((2, 4)))
    vec = ("--rep", "vectors", "--pool-vectors", tmp_path / "p.npy", "--query-vectors", tmp_path / "q.npy")
    proc = tselect("featurize", *vec, "--pool", "org/qa", "--query", query, store=store, env=hf_env(cache), check=False)
    assert proc.returncode == 2 and ("splits test, train" in proc.stderr or "splits train, test" in proc.stderr)
    fv = last_line(tselect("featurize", *vec, "--pool", "org/qa", "--split", "train", "--columns",
                           "prompt=question,response=answer", "--query", query, store=store, env=hf_env(cache)))
    rec = C.resolve(store, fv).record
    assert rec["pool"] == "org/qa" and rec["pool_read"]["commit"] == COMMIT_B and rec["pool_read"]["split"] == "train"
    s = last_line(tselect("select", "--features", fv, "--selector", "topk", "--budget", "2", store=store))
    out = tmp_path / "out.jsonl"
    tselect("export", s, "--out", out, store=store, env=hf_env(cache))
    got = [json.loads(x) for x in out.read_text().splitlines()]
    order = json.loads((C.resolve(store, s).path / "indices.json").read_text())["indices"]
    assert got == [rows[i] for i in order]  # the hub rows, their columns and ids, as they were
    shutil.rmtree(cache / "datasets--org--qa")
    gone = tselect("export", s, "--out", out, store=store, env=hf_env(cache), check=False)
    assert gone.returncode == 2 and "hf download --repo-type dataset org/qa" in gone.stderr


def test_experiment_toml_keeps_hub_ids(tmp_path):
    from tselect.experiment import load_spec

    (tmp_path / "local.jsonl").write_text("")
    toml = tmp_path / "e.toml"
    toml.write_text('[experiment]\npool = "org/pool@main"\nmodel = "org/tiny"\ntargets = ["local.jsonl"]\n'
                    'representations = ["embed"]\nbudgets = [4]\n')
    spec = load_spec(toml)
    assert spec.pool == "org/pool@main" and spec.model == "org/tiny"
    assert spec.targets == {"local": str((tmp_path / "local.jsonl").resolve())}
