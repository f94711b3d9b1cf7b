"""kill -9 at seeded points during featurize and finetune, rerun, compare with an uninterrupted run.

Two kinds of kill: *event* kills (tests/reliability/faults.py SIGKILLs the process at its N-th
durable write, before or after the rename that publishes it: every crash window of the store
code, reproducibly) and *timed* kills (SIGKILL from outside after a seeded random delay, while a
real model computes). After the rerun the artifact must equal the reference byte for byte (files
and the manifest's checksums, timestamps excluded), every chunk finished before the kill must be
kept (same inode), and at most one computed-but-unmarked chunk per array writer may be redone.
"""

from __future__ import annotations

import random
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.reliability import helpers as H
from tests.reliability import scenarios as S
from tests.reliability.conftest import copy_store

N_EVENT_KILLS = 10


def _assert_resumed(outcomes: list[dict]) -> None:
    bad = [o for o in outcomes if S.unexplained(o)]  # labels of known (now fixed) defects are in o["known_defects"]
    assert not bad, bad
    for o in outcomes:
        assert o["killed"], o  # the kill really happened before the run could finish
        assert not o["final_dir_after_kill"], o  # a killed run never leaves a finished-looking artifact
        if o["resumed"]:
            assert o["bytes_lost"] == 0, o
            assert not o["redone_done_chunks"], o  # finished chunks are kept, not recomputed
            assert all(n <= 1 for n in o["lost_chunks"].values()), o  # ≤ 1 chunk of work lost per writer


def test_vectors_featurize_survives_kills_at_seeded_write_events(big_vectors, tmp_path):
    args, ref, aid = big_vectors["args"], big_vectors["ref"], big_vectors["aid"]
    n = S.count_events(args, tmp_path / "count", tmp_path / "events.txt")
    assert n >= 15  # 3 pool chunks + done marks + metadata + manifest + rename
    rng = random.Random(20240611)
    points = sorted(rng.sample([(e, w) for e in range(1, n + 1) for w in ("before", "after")], N_EVENT_KILLS))
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda p: S.event_kill(args, ref, aid, tmp_path / f"k{p[0]}{p[1]}", *p), points))
    _assert_resumed(outcomes)
    assert all(o["ok"] or set(o["known_defects"]) & S.TOLERATED for o in outcomes), outcomes


def _event_index(log_text: str, suffix: str) -> int:
    for line in log_text.splitlines():
        n, _, dst = line.split(" ", 2)
        if dst.endswith(suffix):
            return int(n)
    raise AssertionError(f"no write event for {suffix}")


@pytest.fixture(scope="module")
def small_events(tmp_path_factory):
    d = tmp_path_factory.mktemp("smallvec")
    inp = H.make_vectors_inputs(d / "in", 64)
    args = H.vectors_args(inp)
    aid = H.last_line(H.tselect(*args, store=d / "ref"))
    S.count_events(args, d / "count", d / "events.txt")
    return {"args": args, "ref": d / "ref", "aid": aid, "log": (d / "events.txt").read_text()}


# regression test for D1-stuck-part (see scenarios.KNOWN)
def test_kill_between_array_and_done_mask_creation_is_resumable(small_events, tmp_path):
    e = _event_index(small_events["log"], "/0/query/zarr.json")  # the data array exists, its mask not yet
    o = S.event_kill(small_events["args"], small_events["ref"], small_events["aid"], tmp_path / "s", e, "after")
    assert o["resumed"], o["error"]


# regression test for D2-orphan-temp (see scenarios.KNOWN)
def test_kill_mid_chunk_write_leaves_no_orphan_in_the_artifact(small_events, tmp_path):
    e = _event_index(small_events["log"], "/0/pool/c/0/0")  # temp chunk file written, not yet renamed
    o = S.event_kill(small_events["args"], small_events["ref"], small_events["aid"], tmp_path / "s", e, "before")
    assert o["resumed"] and o["bytes_lost"] == 0, o
    assert o["orphans"] == [], o


# regression test for D3-stale-manifest-tmp (see scenarios.KNOWN)
def test_kill_while_writing_the_manifest_then_rerun_verifies(small_events, tmp_path):
    e = _event_index(small_events["log"], "/manifest.json")
    o = S.event_kill(small_events["args"], small_events["ref"], small_events["aid"], tmp_path / "s", e, "before")
    assert o["resumed"], o
    assert o["verify"] == "ok", o


def test_rds_featurize_killed_mid_chunk_resumes_identically(tmp_path, tiny_model_dir):
    inp = {"pool": H.write_jsonl(tmp_path / "pool.jsonl", H.pool_rows(1100)),
           "query": H.write_jsonl(tmp_path / "query.jsonl", H.query_rows(4))}
    args = ["featurize", "--rep", "rds", "--pool", inp["pool"], "--query", inp["query"], "--model", tiny_model_dir,
            "--batch-size", "64"]
    aid = H.last_line(H.tselect(*args, store=tmp_path / "ref"))  # query: 1 chunk; pool: 1024 + 76 rows
    o = S.timed_kill(args, tmp_path / "ref", aid, tmp_path / "s", random.Random(7),
                     lambda part: S.chunks_done(part, "pool", 1), window=0.8, slow=0.15)
    _assert_resumed([o])


def test_less_featurize_killed_between_checkpoints_resumes_identically(tmp_path, tiny_model_dir):
    inp = {"pool": H.write_jsonl(tmp_path / "pool.jsonl", H.pool_rows(100)),
           "query": H.write_jsonl(tmp_path / "query.jsonl", H.query_rows(4))}
    args = ["featurize", "--rep", "less", "--pool", inp["pool"], "--query", inp["query"], "--model", tiny_model_dir,
            "--param", "dim=1024", "--batch-size", "25"]  # 4 checkpoints × (query, pool): 8 writers
    ref = tmp_path / "ref"
    aid = H.last_line(H.tselect(*args, store=ref))
    seed = tmp_path / "seed"  # the interrupted store starts with the (shared, finished) warmup artifact
    (seed / "warmup").mkdir(parents=True)
    for w in (ref / "warmup").iterdir():
        if w.is_dir():
            shutil.copytree(w, seed / "warmup" / w.name)
    o = S.timed_kill(args, ref, aid, tmp_path / "s", random.Random(11),
                     lambda part: S.chunks_done(part, "pool", 1), window=1.5, seed_store=seed, slow=0.1)
    _assert_resumed([o])


def test_finetune_killed_mid_training_reruns_to_the_identical_adapter(small_chain, tmp_path):
    st = copy_store(small_chain["ref"], tmp_path / "s")
    ft = small_chain["finetune"]
    shutil.rmtree(H.artifact_dir(st, ft))
    shutil.rmtree(st / "evaluate", ignore_errors=True)
    step = random.Random(3).randint(2, 15)  # 32 rows, micro-batches of 4, 2 epochs: 16 micro-batches
    killed = H.tselect(*small_chain["ft_args"], store=st, faults=True, check=False,
                       extra_env={"TSELECT_FAULT_KILL_STEP": str(step)})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not H.artifact_dir(st, ft).is_dir()  # never a finished-looking (half-trained) adapter artifact
    assert H.artifact_dir(st, ft).with_suffix(".part").is_dir()
    rerun = H.tselect(*small_chain["ft_args"], store=st)
    assert H.last_line(rerun) == ft
    assert H.fingerprint(st, ft) == H.fingerprint(small_chain["ref"], ft)
    assert S.verify_line(st, ft) == "ok" and not H.part_dirs(st)
