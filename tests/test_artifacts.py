"""Artifact ids, the .part → rename commit, concurrency and corruption detection."""

from __future__ import annotations

import json
import multiprocessing as mp
import time

import pytest

from tselect import artifacts as A
from tselect import catalog as C
from tselect.errors import UserError


def _write(text: str):
    def write(build: A.Build) -> None:
        (build.path / "out.txt").write_text(text)
        build.record(n=1)

    return write


def test_id_is_stable_and_sensitive():
    a = A.compute_id("select", {"k": 1, "b": [1, 2]}, {"features": "x"})
    assert a == A.compute_id("select", {"b": [1, 2], "k": 1}, {"features": "x"})  # key order irrelevant
    assert a.startswith("select-") and len(a) == len("select-") + 16
    assert a != A.compute_id("select", {"k": 2, "b": [1, 2]}, {"features": "x"})
    assert a != A.compute_id("select", {"k": 1, "b": [1, 2]}, {"features": "y"})
    assert a != A.compute_id("featurize", {"k": 1, "b": [1, 2]}, {"features": "x"})


def test_golden_id():
    # Pinned: changing hashing silently would orphan every user's store.
    assert A.compute_id("select", {"k": 1}, {}) == "select-" + A.hashlib.sha256(
        b'{"config":{"k":1},"inputs":{},"schema":1,"stage":"select"}').hexdigest()[:16]


def test_checked_path_returns_an_intact_file(tmp_path):
    aid = A.produce(tmp_path, "select", {"k": 1}, {}, _write("hello"))
    assert C.checked_path(C.resolve(tmp_path, aid), "out.txt").read_text() == "hello"


def test_produce_writes_manifest_and_is_noop_on_rerun(tmp_path):
    calls = []

    def write(build):
        calls.append(1)
        _write("hello")(build)

    aid = A.produce(tmp_path, "select", {"k": 1}, {}, write)
    assert A.produce(tmp_path, "select", {"k": 1}, {}, write) == aid
    assert calls == [1]
    art = C.resolve(tmp_path, aid[:12])
    assert art.manifest["files"]["out.txt"]["size"] == 5
    assert art.record == {"n": 1}
    assert not list(tmp_path.glob("select/*.part"))
    assert C.verify(art) == []


def test_crash_leaves_no_artifact(tmp_path):
    def boom(build):
        (build.path / "half.txt").write_text("partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        A.produce(tmp_path, "select", {"k": 1}, {}, boom)
    assert not A.exists(tmp_path, A.compute_id("select", {"k": 1}, {}))
    with pytest.raises(UserError, match="no artifact"):
        C.resolve(tmp_path, "select-")
    # The next run starts from a clean .part (non-resumable stage) and completes.
    aid = A.produce(tmp_path, "select", {"k": 1}, {}, _write("ok"))
    assert sorted(C.resolve(tmp_path, aid).manifest["files"]) == ["out.txt"]


def test_failed_builds_leave_no_part_unless_they_can_resume(tmp_path):
    def bad_input(build):
        (build.path / "half.txt").write_text("partial")
        raise UserError("--pool-vectors has NaN rows")

    with pytest.raises(UserError):
        A.produce(tmp_path, "select", {"k": 1}, {}, bad_input)
    with pytest.raises(UserError):
        A.produce(tmp_path, "featurize", {"k": 1}, {}, bad_input, resume=True)
    with pytest.raises(RuntimeError):  # a non-resumable build that crashed keeps nothing either
        A.produce(tmp_path, "select", {"k": 2}, {}, lambda b: (_ for _ in ()).throw(RuntimeError("x")))
    assert not list(tmp_path.glob("*/*.part"))

    # A resumable build with finished work from an earlier run keeps it, whatever fails now.
    part = A.final_dir(tmp_path, A.compute_id("featurize", {"k": 3}, {})).with_suffix(".part")
    part.mkdir(parents=True)
    (part / "chunk0").write_text("done")
    with pytest.raises(UserError):
        A.produce(tmp_path, "featurize", {"k": 3}, {}, bad_input, resume=True)
    assert (part / "chunk0").read_text() == "done"


def test_a_hand_edited_manifest_fails_verify(tmp_path):
    aid = A.produce(tmp_path, "select", {"k": 1}, {}, _write("hello"))
    path = A.final_dir(tmp_path, aid) / A.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["config"]["k"] = 2
    path.write_text(json.dumps(manifest))
    problems = C.verify(C.find_unchecked(tmp_path, aid))
    assert len(problems) == 1 and problems[0].startswith(f"{A.MANIFEST}: config and inputs hash to select-")
    with pytest.raises(UserError, match="damaged manifest"):  # and no stage reads it
        C.resolve(tmp_path, aid)


@pytest.mark.parametrize("edit", [
    lambda m: m["files"]["out.txt"].pop("sha256"),
    lambda m: m["files"].update({"out.txt": "size"}),
    lambda m: m.update({"filez": m.pop("files")}),
])
def test_a_manifest_with_a_damaged_file_table_is_reported_not_crashed(tmp_path, edit):
    aid = A.produce(tmp_path, "select", {"k": 1}, {}, _write("hello"))
    path = A.final_dir(tmp_path, aid) / A.MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    art = C.find_unchecked(tmp_path, aid)
    problems = C.verify(art)
    assert len(problems) == 1 and "malformed" in problems[0], problems
    with pytest.raises(UserError, match="is corrupt"):
        C.checked_path(art, "out.txt")
    if "files" not in art.manifest:  # no stage reads an artifact whose file table is gone
        with pytest.raises(UserError, match="damaged manifest"):
            C.resolve(tmp_path, aid)


def test_corruption_is_detected(tmp_path):
    aid = A.produce(tmp_path, "select", {"k": 1}, {}, _write("hello"))
    art = C.resolve(tmp_path, aid)
    (art.path / "out.txt").write_text("hellO")
    assert C.verify(art) == ["out.txt: checksum mismatch"]
    with pytest.raises(UserError, match="corrupt"):
        C.checked_path(art, "out.txt")


def test_wrong_stage_and_ambiguous_prefix(tmp_path):
    a = A.produce(tmp_path, "select", {"k": 1}, {}, _write("1"))
    A.produce(tmp_path, "select", {"k": 2}, {}, _write("2"))
    with pytest.raises(UserError, match="select artifact"):
        C.resolve(tmp_path, a, stage="featurize")
    with pytest.raises(UserError, match="ambiguous"):
        C.resolve(tmp_path, "select-")


def _slow_produce(root, q):
    def write(build):
        time.sleep(0.5)
        (build.path / "out.txt").write_text(str(time.time()))

    q.put(A.produce(root, "select", {"k": 9}, {}, write))


def test_concurrent_identical_runs_make_one_artifact(tmp_path):
    q = mp.get_context("fork").Queue()
    procs = [mp.get_context("fork").Process(target=_slow_produce, args=(tmp_path, q)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(20)
    ids = {q.get(timeout=5), q.get(timeout=5)}
    assert len(ids) == 1
    art = C.resolve(tmp_path, ids.pop())
    assert C.verify(art) == [] and json.loads((art.path / "manifest.json").read_text())["id"] == art.id


def test_unwritable_store_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="not writable"):
        A.produce(blocker / "store", "select", {"k": 1}, {}, _write("1"))
