"""Sharded LESS featurize: each shard tokenizes only its own chunks, the finished artifact is
byte-identical to one process (attrs merged from every shard), and a shard still writing its
attrs is never finished under (the .part is renamed only once every shard has recorded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tselect import artifacts, store
from tselect.featurize import FeaturizeConfig, run

LONG = "word " * 300  # the prompt alone fills max_length: no label token is left (an empty row)
POOL_EMPTY, QUERY_EMPTY = [1, 6, 9], [1]


@pytest.fixture
def data(tmp_path, tiny_model_dir):
    rows = [{"prompt": f"Question {i}: what is {i} plus {i}?", "completion": f"{2 * i}."} for i in range(12)]
    for i in POOL_EMPTY:
        rows[i]["prompt"] = LONG
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    queries = [{"prompt": "What is 3 plus 3?", "completion": "6."}, {"prompt": LONG, "completion": "7."}]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    return FeaturizeConfig(rep="less", pool=str(tmp_path / "pool.jsonl"), query=str(tmp_path / "q.jsonl"),
                           model=str(tiny_model_dir), max_length=64, dtype="float32", params=(("dim", "64"),))


def contents(root: Path, aid: str) -> tuple[dict, list[bytes]]:
    feats = store.open_features(artifacts.final_dir(root, aid))
    return feats.attrs, [np.asarray(a[:]).tobytes() for a in feats.pools] + [q.tobytes() for q in feats.queries]


def _warm(cfg, root):
    """The warmup artifact, made before counting (it tokenizes its own sample of the pool)."""
    from tselect.data import load_dataset
    from tselect.warmup import WARMUP_PRESETS, produce_warmup

    produce_warmup(root, cfg.model, load_dataset(cfg.pool), WARMUP_PRESETS["cpu"])


@pytest.mark.slow
def test_each_shard_tokenizes_only_its_chunks_and_the_merge_is_byte_identical(data, tmp_path, monkeypatch):
    from tselect.data import load_dataset, tokenize
    from tselect.featurize import common

    monkeypatch.setattr(common, "resumable_chunk_rows", lambda dim, dtype: 3)  # 12 pool rows = 4 chunks
    one = run(data, tmp_path / "one")
    attrs, _ = contents(tmp_path / "one", one)
    assert attrs["empty_pool_rows"] == POOL_EMPTY and attrs["zero_rows"] == {"query": 1, "pool": 3}
    assert "shards_finished" not in attrs

    root = tmp_path / "two"
    _warm(data, root)
    seen: list[str] = []
    real = tokenize.encode_example
    monkeypatch.setattr(tokenize, "encode_example", lambda ex, *a, **k: seen.append(ex.id) or real(ex, *a, **k))
    pool, queries = ([ex.id for ex in load_dataset(p).examples] for p in (data.pool, data.query))

    assert run(data, root, shard=(0, 2)) == one and not artifacts.exists(root, one)
    # shard 0 owns pool chunks 0 and 2 (rows 0-2, 6-8) and the one query chunk
    assert sorted(seen) == sorted(queries + pool[0:3] + pool[6:9]), "shard 0 tokenized rows it does not compute"
    seen.clear()
    assert run(data, root, shard=(1, 2)) == one and artifacts.exists(root, one)
    assert sorted(seen) == sorted(pool[3:6] + pool[9:12]), "shard 1 tokenized rows it does not compute"
    assert contents(root, one) == contents(tmp_path / "one", one)  # attrs merged from both shards; rows equal


@pytest.mark.slow
def test_a_shard_still_writing_its_attrs_is_not_finished_under(data, tmp_path, monkeypatch):
    """Shard 1 has written every chunk it owns but not yet its attrs when shard 0 finishes: the
    .part must stay (renaming it made shard 1's attrs write fail with FileNotFoundError)."""
    from tselect.featurize import common, finish

    monkeypatch.setattr(common, "resumable_chunk_rows", lambda dim, dtype: 3)
    one = run(data, tmp_path / "one")
    root = tmp_path / "two"
    real = finish.record_shard

    def stalled(group, shard, attrs):
        if shard == (1, 2):
            raise KeyboardInterrupt("shard 1 stops right before its attrs")
        real(group, shard, attrs)

    monkeypatch.setattr(finish, "record_shard", stalled)
    with pytest.raises(KeyboardInterrupt):
        run(data, root, shard=(1, 2))
    part = artifacts.final_dir(root, one).with_suffix(".part")
    assert store.features_complete(part / store.FEATURES) is False  # shard 0's chunks are still missing
    assert run(data, root, shard=(0, 2)) == one
    assert not artifacts.exists(root, one) and part.is_dir(), "finished while shard 1 was still writing its attrs"
    monkeypatch.setattr(finish, "record_shard", real)
    assert run(data, root, shard=(1, 2)) == one and artifacts.exists(root, one)  # recomputes nothing, finishes
    assert contents(root, one) == contents(tmp_path / "one", one)


@pytest.mark.slow
def test_two_torchrun_ranks_finish_a_sharded_featurize(data, tmp_path):
    """torchrun --nproc_per_node 2 on CPU: both ranks exit 0 (the rank that did not finish the
    artifact used to hit FileNotFoundError in its attrs write), one id, equal to one process.
    The warmup is made first, in one process, as the README advises for torchrun."""
    args = ["featurize", "--rep", "less", "--pool", data.pool, "--query", data.query, "--model", data.model,
            "--max-length", "64", "--dtype", "float32", "--param", "dim=64"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update({"OMP_NUM_THREADS": "1", "TSELECT_THREADS": "1", "TSELECT_PROGRESS": "0",
                "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    one = run(data, tmp_path / "one")
    for attempt in range(2):  # the race depended on timing: two launches
        root = tmp_path / f"tr{attempt}"
        _warm(data, root)
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "-m", "tselect", *args, "--store", str(root)],
                              capture_output=True, text=True, env=env, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.split() == [one]
        assert contents(root, one) == contents(tmp_path / "one", one)
        assert not list((root / "featurize").glob("*.part"))


def test_finished_means_a_full_set_of_records_for_one_shard_count():
    from tselect.featurize.finish import _every_shard_finished

    assert not _every_shard_finished({})
    assert not _every_shard_finished({"0/2": {}})
    assert _every_shard_finished({"0/2": {}, "1/2": {}})
    assert not _every_shard_finished({"0/3": {}, "2/3": {}, "1/2": {}}), "records of different counts do not add up"
    assert _every_shard_finished({"1/2": {}, "0/1": {}}), "a one-process rerun covers every row on its own"


def test_merged_attrs_are_the_union_of_every_shards_empty_rows(tmp_path):
    from tselect.featurize.finish import merge_attrs, record_shard

    group = tmp_path / "features.zarr"
    store.open_group(group)
    record_shard(group, (1, 2), {"dim": 4, "empty_rows": {"query": [], "pool": [9, 3]}})
    record_shard(group, (0, 2), {"dim": 4, "empty_rows": {"query": [1], "pool": [1, 6]}})
    record_shard(group, (0, 1), {"dim": 4, "empty_rows": {"query": [1], "pool": [1, 3, 6, 9]}})  # a rerun overlaps
    merge_attrs(group)
    assert store.open_group(group).attrs.asdict() == {"dim": 4, "zero_rows": {"query": 1, "pool": 4},
                                                       "empty_pool_rows": [1, 3, 6, 9]}
