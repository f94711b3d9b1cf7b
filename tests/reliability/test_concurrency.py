"""Concurrent runs: identical commands share one build; different commands sharing inputs do not
disturb each other; a lock held by a process killed with -9 is released by the kernel.

Builds are stretched with the fault launcher's TSELECT_FAULT_SLOW (a sleep before every durable
write) so that the runs really overlap on a fast machine; nothing else about them changes.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from tests.reliability import helpers as H
from tests.reliability import scenarios as S

SLOW = {"TSELECT_FAULT_SLOW": "0.08"}


@pytest.fixture(scope="module")
def vec(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("concvec")
    inp = H.make_vectors_inputs(d / "in", 200)
    args = H.vectors_args(inp)
    ref = d / "ref"
    f16 = H.last_line(H.tselect(*args, store=ref))
    f32 = H.last_line(H.tselect(*args, "--dtype", "float32", store=ref))
    sel = {name: H.last_line(H.tselect("select", "--features", f16, "--selector", name, store=ref))
           for name in ("topk", "round_robin")}
    return {"inputs": inp, "args": args, "ref": ref, "f16": f16, "f32": f32, "sel": sel}


def lock_is_free(store: Path, aid: str) -> bool:
    lock = H.artifact_dir(store, aid).with_suffix(".lock")
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def finish(procs) -> list:
    return [(p.wait(timeout=300), *p.communicate()) for p in procs]


def test_identical_featurize_at_once_builds_one_artifact(vec, tmp_path):
    st = tmp_path / "s"
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    part = H.artifact_dir(st, vec["f16"]).with_suffix(".part")
    first = H.spawn(*vec["args"], store=st, faults=True, extra_env={**SLOW, "TSELECT_FAULT_COUNT": str(logs[0])})
    assert H.wait_for(part.is_dir, 60)  # the first run holds the lock and is building
    second = H.spawn(*vec["args"], store=st, faults=True, extra_env={**SLOW, "TSELECT_FAULT_COUNT": str(logs[1])})
    results = finish([first, second])
    assert [rc for rc, _, _ in results] == [0, 0], results
    ids = {out.strip().splitlines()[-1] for _, out, _ in results}
    assert ids == {vec["f16"]}
    assert logs[0].read_text() and not (logs[1].exists() and logs[1].read_text())  # only the first one wrote
    assert [p.name for p in H.final_dirs(st)] == [vec["f16"]] and not H.part_dirs(st)
    assert H.fingerprint(st, vec["f16"]) == H.fingerprint(vec["ref"], vec["f16"])


def test_identical_select_at_once_builds_one_artifact(vec, tmp_path):
    st = tmp_path / "s"
    H.tselect(*vec["args"], store=st)
    args = ("select", "--features", vec["f16"], "--selector", "topk")
    results = finish([H.spawn(*args, store=st, faults=True, extra_env=SLOW) for _ in range(2)])
    assert [rc for rc, _, _ in results] == [0, 0], results
    assert {out.strip().splitlines()[-1] for _, out, _ in results} == {vec["sel"]["topk"]}
    assert len(H.final_dirs(st)) == 2 and not H.part_dirs(st)  # the features and one selection


def test_different_commands_sharing_inputs_do_not_interfere(vec, tmp_path):
    st = tmp_path / "s"
    H.tselect(*vec["args"], store=st)
    runs = [H.spawn(*vec["args"], "--dtype", "float32", store=st, faults=True, extra_env=SLOW),
            H.spawn("select", "--features", vec["f16"], "--selector", "topk", store=st, faults=True, extra_env=SLOW),
            H.spawn("select", "--features", vec["f16"], "--selector", "round_robin", store=st, faults=True,
                    extra_env=SLOW)]
    results = finish(runs)
    assert [rc for rc, _, _ in results] == [0, 0, 0], results
    got = [out.strip().splitlines()[-1] for _, out, _ in results]
    assert got == [vec["f32"], vec["sel"]["topk"], vec["sel"]["round_robin"]]
    for aid in [vec["f16"], *got]:
        assert H.fingerprint(st, aid) == H.fingerprint(vec["ref"], aid), aid
    assert H.tselect("verify", store=st, check=False).returncode == 0
    assert not H.part_dirs(st)


def test_lock_of_a_killed_build_is_released_and_a_waiter_takes_over(vec, tmp_path):
    st = tmp_path / "s"
    aid = vec["f16"]
    part = H.artifact_dir(st, aid).with_suffix(".part")
    holder = H.spawn(*vec["args"], store=st, faults=True, extra_env={"TSELECT_FAULT_SLOW": "0.3"})
    assert H.wait_for(lambda: part.is_dir() and any(part.rglob("zarr.json")), 60), holder.communicate()
    assert not lock_is_free(st, aid)  # the live build holds the flock
    waiter = H.spawn(*vec["args"], store=st)  # blocks on the same lock
    assert waiter.poll() is None
    H.kill9(holder)
    rc, out, err = finish([waiter])[0]
    assert rc == 0, err  # (D1 in scenarios.KNOWN was a kill landing between an array and its done mask)
    assert out.strip().splitlines()[-1] == aid
    assert lock_is_free(st, aid)
    same, known = S.same_as_reference(st, vec["ref"], aid)
    assert same, known  # D2 in scenarios.KNOWN: a killed writer's temp files carried into the manifest
    assert not H.part_dirs(st)


def test_rerun_after_kill_does_not_wait_for_a_dead_lock(vec, tmp_path):
    st = tmp_path / "s"
    aid = vec["f16"]
    part = H.artifact_dir(st, aid).with_suffix(".part")
    holder = H.spawn(*vec["args"], store=st, faults=True, extra_env={"TSELECT_FAULT_SLOW": "0.3"})
    assert H.wait_for(lambda: part.is_dir(), 60)
    H.kill9(holder)
    assert lock_is_free(st, aid)  # the kernel dropped the flock with the process
    proc = H.tselect(*vec["args"], store=st, timeout=120)
    assert H.last_line(proc) == aid
    same, known = S.same_as_reference(st, vec["ref"], aid)
    assert same, known
