"""The representation contract, checked for every entry of REPRESENTATIONS and for a toy one
registered in one line: unit rows, the declared shape, identical bytes on a rerun, sharded equal
to unsharded, bad --param options as one line."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from tselect import artifacts, store
from tselect.errors import UserError
from tselect.featurize import REPRESENTATIONS, FeaturizeConfig, run
from tests.featurize import toy_rep

NAMES = [*REPRESENTATIONS, "toy"]
PARAMS = {"less": (("dim", "64"),)}  # keeps LESS small; every other representation runs on its defaults


@pytest.fixture(autouse=True)
def _register_toy(monkeypatch):
    monkeypatch.setitem(REPRESENTATIONS, "toy", toy_rep.TOY)  # the toy's one registry line


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_model_dir):
    from tests.conftest import toy_rows

    d = tmp_path_factory.mktemp("contract")
    (d / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in toy_rows()))
    (d / "query.jsonl").write_text(json.dumps({"prompt": "Which gas do trees take in?", "completion": "CO2."}) + "\n"
                                   + json.dumps({"prompt": "Boiling point of water?", "completion": "100 C."}) + "\n")
    rng = np.random.default_rng(0)
    np.save(d / "pool.npy", rng.normal(size=(len(toy_rows()), 8)).astype(np.float32))
    np.save(d / "query.npy", rng.normal(size=(2, 8)).astype(np.float32))
    return d, tiny_model_dir


def config(name: str, data, params=None) -> FeaturizeConfig:
    d, tiny = data
    uses_lm = REPRESENTATIONS[name].uses_lm
    return FeaturizeConfig(rep=name, pool=str(d / "pool.jsonl"), query=str(d / "query.jsonl"),
                           model=str(tiny) if uses_lm else None, pool_vectors=str(d / "pool.npy"),
                           query_vectors=str(d / "query.npy"), max_length=64, batch_size=4, dtype="float32",
                           params=PARAMS.get(name, ()) if params is None else params)


def arrays(root, aid) -> tuple[dict, list[bytes]]:
    feats = store.open_features(artifacts.final_dir(root, aid))
    return feats.attrs, [np.asarray(a[:]).tobytes() for a in feats.pools] + [q.tobytes() for q in feats.queries]


@pytest.mark.parametrize("name", NAMES)
def test_unit_rows_in_the_declared_shape(name, data, tmp_path):
    cfg = config(name, data)
    aid = run(cfg, tmp_path)
    feats = store.open_features(artifacts.final_dir(tmp_path, aid))
    dim, n_ckpts = REPRESENTATIONS[name].shape(cfg)
    assert len(feats.checkpoints) == n_ckpts and feats.attrs["dim"] == dim
    assert sum(feats.weights) == pytest.approx(1.0)
    for pool, query in zip(feats.pools, feats.queries):
        rows = np.concatenate([np.asarray(pool[:], dtype=np.float64), query.astype(np.float64)])
        assert rows.shape == (feats.n_pool + feats.n_query, dim)
        norms = np.linalg.norm(rows, axis=1)
        assert np.all((np.abs(norms - 1) < 1e-5) | (norms == 0)), name  # unit rows; zero = no feature at all


@pytest.mark.parametrize("name", NAMES)
def test_rerun_gives_identical_bytes_and_sharded_equals_unsharded(name, data, tmp_path, monkeypatch):
    from tselect.featurize import common

    monkeypatch.setattr(common, "resumable_chunk_rows", lambda dim, dtype: 5)  # 24 pool rows = 5 chunks
    cfg = config(name, data)
    one = run(cfg, tmp_path / "one")
    assert run(cfg, tmp_path / "one") == one  # a no-op
    again = run(cfg, tmp_path / "again")
    assert again == one and arrays(tmp_path / "again", again) == arrays(tmp_path / "one", one)
    first = run(cfg, tmp_path / "shards", shard=(0, 2))
    assert first == one and not artifacts.exists(tmp_path / "shards", one)  # waits for shard 1
    assert run(cfg, tmp_path / "shards", shard=(1, 2)) == one
    assert arrays(tmp_path / "shards", one) == arrays(tmp_path / "one", one)


@pytest.mark.parametrize("name", NAMES)
def test_bad_params_are_one_line(name, data, tmp_path):
    with pytest.raises(UserError) as e:
        run(config(name, data, params=(("bogus", "1"),)), tmp_path)
    assert "bogus" in str(e.value) and "\n" not in str(e.value)
    assert not list(tmp_path.glob("featurize/*.part"))  # nothing half-made


@pytest.mark.parametrize("name", [n for n in NAMES if n != "toy" and REPRESENTATIONS[n].shares_pool])
def test_pool_rows_are_copied_for_another_query_set(name, data, tmp_path, monkeypatch):
    import sys

    d, _ = data
    first = run(config(name, data), tmp_path)
    (d / "query2.jsonl").write_text(json.dumps({"prompt": "What do bees make?", "completion": "Honey."}) + "\n")
    module = sys.modules["tselect.featurize"]  # the stage does all writing
    computed, real = [], module.write_unit_rows
    monkeypatch.setattr(module, "write_unit_rows", lambda group, part, *a, **k: (computed.append(part), real(group, part, *a, **k)))
    other = dataclasses.replace(config(name, data), query=str(d / "query2.jsonl"))
    second = run(other, tmp_path)
    assert second != first and "pool" not in computed and "query" in computed  # pool rows came from the store
    a, b = (store.open_features(artifacts.final_dir(tmp_path, x)) for x in (first, second))
    assert [np.asarray(p[:]).tobytes() for p in b.pools] == [np.asarray(p[:]).tobytes() for p in a.pools]
