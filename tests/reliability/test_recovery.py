"""Interruption and recovery beyond kill -9: a rerun after a full disk, a finished artifact that lost
its manifest, `rm` racing a reader, and an input that vanishes while a stage reads it.
"""

from __future__ import annotations

import random
import shutil
import time

import numpy as np
import pytest

from tests.reliability import helpers as H
from tests.reliability.conftest import copy_store


def _one_line(proc, *needles) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# --- 8. the rerun after a full disk counts what the .part already holds -------------------------


@pytest.mark.parametrize("done_fraction", [0.5, 0.9, 1.0])
def test_space_check_counts_chunks_already_written(big_vectors, tmp_path, monkeypatch, done_fraction):
    """A .part holding most of the chunks needs only the rest: the rerun the disk-full message
    asks for must not be refused while the remaining work fits."""
    import tselect.featurize as F
    from tselect.featurize.config import FeaturizeConfig

    aid = big_vectors["aid"]
    st = tmp_path / "s"
    part = H.artifact_dir(st, aid).with_suffix(".part")
    shutil.copytree(H.artifact_dir(big_vectors["ref"], aid), part)
    (part / "manifest.json").unlink()
    chunks = sorted(p for p in part.rglob("c/*/*") if "/pool/" in p.as_posix() and "_done" not in p.as_posix())
    for p in chunks[int(round(done_fraction * len(chunks))):]:
        p.unlink()
    written = sum(p.stat().st_size for p in part.rglob("*") if p.is_file())
    inp = big_vectors["inputs"]
    cfg = FeaturizeConfig(rep="vectors", pool=str(inp["pool"]), query=str(inp["query"]),
                          pool_vectors=str(inp["pool_vectors"]), query_vectors=str(inp["query_vectors"]))
    rep = F.REPRESENTATIONS["vectors"]
    total = int(3004 * 8 * 2 * 1.05)
    free = max(0, total - written) + (1 << 20) + 1  # enough for the rest, far less than a fresh run needs
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 40, 0, free))
    F._check_space(st, cfg, rep, 3004, aid)  # passes: only the rest is needed
    shutil.rmtree(part)
    from tselect.errors import UserError

    with pytest.raises(UserError, match="free"):  # a fresh run on the same disk is refused early
        F._check_space(st, cfg, rep, 3004, aid)


# --- 9. a finished artifact whose manifest.json was deleted -------------------------------------


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from tests.reliability import scenarios as S

    return S.build_chain(tmp_path_factory.mktemp("rec"), None, train=False)


@pytest.mark.parametrize("which", ["features", "selection"])
def test_artifact_without_manifest_is_reported_and_repaired(chain, which, tmp_path):
    st = copy_store(chain["ref"], tmp_path / "s")
    aid = chain[which]
    (H.artifact_dir(st, aid) / "manifest.json").unlink()
    for args in (["verify", aid], ["verify"]):  # by id, and in a check of the whole store
        proc = H.tselect(*args, store=st, check=False)
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 2 and last.startswith("error: ") and aid in last, proc.stderr
        assert f"{aid}: CORRUPT: manifest.json is missing" in proc.stderr
    _one_line(H.tselect("show", aid, store=st, check=False), aid, "manifest")
    args = H.vectors_args(chain["inputs"]) if which == "features" else \
        ["select", "--features", chain["features"], "--selector", "round_robin"]
    rerun = H.tselect(*args, store=st, check=False)  # the rerun repairs it: same id, intact
    assert rerun.returncode == 0 and H.last_line(rerun) == aid, rerun.stderr[-1500:]
    assert H.tselect("verify", aid, store=st).returncode == 0
    assert not H.part_dirs(st)
    assert H.fingerprint(st, aid)["files"] == H.fingerprint(chain["ref"], aid)["files"]


def test_rm_removes_an_artifact_without_manifest(chain, tmp_path):
    st = copy_store(chain["ref"], tmp_path / "s")
    aid = chain["selection"]
    (H.artifact_dir(st, aid) / "manifest.json").unlink()
    assert H.last_line(H.tselect("rm", aid, store=st)) == aid
    assert not H.artifact_dir(st, aid).exists()


# --- 2. rm never deletes under a reader; nothing is published from a vanished input -------------


def test_rm_refuses_while_select_reads_the_features(big_vectors, tmp_path):
    st = copy_store(big_vectors["ref"], tmp_path / "s")
    aid = big_vectors["aid"]
    args = ["select", "--features", aid, "--selector", "topk", "--budget", "50"]
    reader = H.spawn(*args, store=st, faults=True, extra_env={"TSELECT_FAULT_SLOW": "2"})
    assert H.wait_for(lambda: any((st / "select").glob("*.part")) if (st / "select").is_dir() else False, 60)
    _one_line(H.tselect("rm", aid, store=st, check=False), aid, "in use")
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    assert H.artifact_dir(st, aid).is_dir()
    # free again once the reader is done (--force: the new selection was made from it)
    assert H.last_line(H.tselect("rm", aid, "--force", store=st)) == aid


def test_rm_racing_select_never_yields_a_wrong_selection(big_vectors, tmp_path):
    ref = copy_store(big_vectors["ref"], tmp_path / "ref")
    aid = big_vectors["aid"]
    args = ["select", "--features", aid, "--selector", "kcenter", "--budget", "300"]
    want = (H.artifact_dir(ref, H.last_line(H.tselect(*args, store=ref))) / "indices.json").read_text()
    rng = random.Random(13)
    for k in range(6):
        st = copy_store(big_vectors["ref"], tmp_path / f"s{k}")
        reader = H.spawn(*args, store=st)
        time.sleep(rng.uniform(0.2, 2.0))
        rm = H.tselect("rm", aid, store=st, check=False)
        out, err = reader.communicate(timeout=300)
        assert "Traceback" not in err + rm.stderr, err + rm.stderr
        assert rm.returncode in (0, 2) and reader.returncode in (0, 2), (rm.stderr, err)
        if reader.returncode == 0:
            got = H.artifact_dir(st, out.strip().splitlines()[-1]) / "indices.json"
            assert got.read_text() == want  # never an order computed from missing (zero-filled) chunks
        else:
            assert len(err.strip().splitlines()) == 1 and not any((st / "select").glob("select-*[0-9a-f]"))


def test_an_input_deleted_mid_read_publishes_nothing(big_vectors, tmp_path):
    """Deleting behind tselect's back (not through rm): the read fails, nothing is cached."""
    st = copy_store(big_vectors["ref"], tmp_path / "s")
    aid = big_vectors["aid"]
    reader = H.spawn("select", "--features", aid, "--selector", "kcenter", "--budget", "2000", store=st)
    time.sleep(1.0)
    shutil.rmtree(H.artifact_dir(st, aid) / "features.zarr" / "0" / "pool" / "c")
    out, err = reader.communicate(timeout=300)
    if reader.returncode == 0:  # finished before the delete: its result must be the right one
        ref = copy_store(big_vectors["ref"], tmp_path / "ref")
        sel = H.last_line(H.tselect("select", "--features", aid, "--selector", "kcenter", "--budget", "2000", store=ref))
        assert (H.artifact_dir(st, sel) / "indices.json").read_text() == \
            (H.artifact_dir(ref, sel) / "indices.json").read_text()
    else:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and aid in lines[0] and "Traceback" not in err, err[-1500:]
        assert not (st / "select").is_dir() or not any((st / "select").glob("select-*[0-9a-f]"))


def test_non_finite_stored_features_are_one_line_for_every_selector(wide_vectors, tmp_path):
    import zarr

    from tselect.select.registry import SELECTORS

    st = copy_store(wide_vectors["ref"], tmp_path / "s")
    chain = {"features": wide_vectors["aid"]}
    arr = zarr.open_array(str(H.artifact_dir(st, chain["features"]) / "features.zarr" / "0" / "pool"), mode="r+")
    block = np.asarray(arr[1024:2048])
    block[3, :] = np.nan
    arr[1024:2048] = block  # a 128 KiB chunk: zarr recomputes its crc32c, only the values tell
    for name in SELECTORS:
        if {"scores", "exclude"} & set(SELECTORS[name].needs) or name == "random":  # random reads no features
            continue
        proc = H.tselect("select", "--features", chain["features"], "--selector", name, "--budget", "5",
                         store=st, check=False)
        _one_line(proc, chain["features"])
