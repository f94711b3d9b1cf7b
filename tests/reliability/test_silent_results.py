"""Silent wrong results (exit 0, wrong output), each as a class: the finetune schedule, missing
feature chunks, vectors that overflow the stored dtype, and edited manifests used downstream.

Every case must end in a correct result or in one `error:` line with exit 2 and no artifact.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.reliability import helpers as H
from tests.reliability.conftest import copy_store

# --- 1. finetune schedule: at least 8 optimizer steps, every one at lr > 0 ----------------------


@pytest.mark.parametrize("n_rows", [1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 64, 100, 1000])
@pytest.mark.parametrize("batch,eff,epochs,warmup", [(4, 16, 1, 0.03), (4, 16, 2, 0.03), (8, 64, 1, 0.5),
                                                     (1, 1, 1, 0.99), (2, 32, 3, 0.1), (16, 16, 1, 0.0)])
def test_every_fitted_schedule_has_enough_steps_all_at_positive_lr(n_rows, batch, eff, epochs, warmup):
    from tselect.finetune import MIN_OPTIMIZER_STEPS, fit_schedule
    from tselect.training import TrainConfig, expected_steps, floor_warmup_linear, warmup_steps

    asked = TrainConfig(batch_size=batch, effective_batch_size=eff, epochs=epochs, warmup_ratio=warmup)
    used = fit_schedule(asked, n_rows)
    steps = expected_steps(n_rows, used)
    assert steps >= MIN_OPTIMIZER_STEPS
    if expected_steps(n_rows, asked) >= MIN_OPTIMIZER_STEPS:
        assert used == asked  # a schedule that already trains is left alone
    lr = floor_warmup_linear(steps, warmup)
    multipliers = [lr(s) for s in range(steps)]
    assert all(0 < m <= 1 for m in multipliers), multipliers
    assert warmup_steps(steps, warmup) == min(int(np.floor(warmup * steps)), steps - 1)
    assert max(multipliers) == 1.0  # the peak lr is reached


def test_floor_warmup_linear_exact_values():
    from tselect.training import floor_warmup_linear

    assert [floor_warmup_linear(8, 0.25)(s) for s in range(8)] == [1 / 3, 2 / 3, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6]
    assert [floor_warmup_linear(1, 0.03)(0)] == [1.0]  # HF's ceil warmup gave this only step lr 0


@pytest.mark.slow
@pytest.mark.parametrize("budget", [16, 5])
def test_finetune_with_default_schedule_at_small_budget_trains(small_chain, budget, tmp_path):
    """The defaults (effective batch 16, warmup 0.03) at budget 16 used to take one step at lr 0."""
    from safetensors.numpy import load_file

    st = copy_store(small_chain["ref"], tmp_path / "s")
    ft = H.last_line(H.tselect("finetune", "--selection", small_chain["selection"], "--budget", budget,
                               "--model", small_chain["model"], "--epochs", "1", store=st))
    d = H.artifact_dir(st, ft)
    curve = json.loads((d / "train_curve.json").read_text())
    schedule = json.loads((d / "manifest.json").read_text())["record"]["schedule"]
    assert len(curve["lr"]) == schedule["optimizer_steps"] >= 8 and min(curve["lr"]) > 0, curve
    assert schedule["lr_first"] > 0 and schedule["requested"]["effective_batch_size"] == 16
    weights = load_file(str(d / "adapter" / "adapter_model.safetensors"))
    assert any(np.abs(v).max() > 0 for k, v in weights.items() if "lora_B" in k)  # the adapter moved


# --- 2. a feature chunk missing on disk is corruption, never zeros -----------------------------


def _chunk_files(st, aid):
    z = H.artifact_dir(st, aid) / "features.zarr"
    return sorted(p for p in z.rglob("c/*/*") if p.is_file() and "_done" not in p.as_posix())


@pytest.mark.parametrize("vectors", ["big_vectors", "wide_vectors"])
def test_every_missing_feature_chunk_is_refused_by_select(vectors, request, tmp_path):
    v = request.getfixturevalue(vectors)  # 16 KiB chunks, and 128 KiB ones (sha256 not checked on open)
    aid = v["aid"]
    chunks = _chunk_files(v["ref"], aid)
    assert len(chunks) >= 4  # 3 pool chunks + 1 query chunk
    for k, chunk in enumerate(chunks):
        st = copy_store(v["ref"], tmp_path / f"s{k}")
        (st / chunk.relative_to(v["ref"])).unlink()
        for args in (["select", "--features", aid, "--selector", "topk", "--budget", "5"],
                     ["select", "--features", aid, "--selector", "kcenter", "--budget", "5"]):
            proc = H.tselect(*args, store=st, check=False)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 2 and len(lines) == 1 and aid in lines[0], (chunk, proc.stderr[-800:])
            assert not (st / "select").exists() or not any((st / "select").glob("select-*[0-9a-f]"))


def test_a_chunk_deleted_while_rows_are_read_is_detected(big_vectors, tmp_path):
    """The read itself checks the chunk files after reading (a delete between open and read)."""
    from tselect import catalog
    from tselect.errors import UserError

    st = copy_store(big_vectors["ref"], tmp_path / "s")
    feats = catalog.open_features(catalog.find_unchecked(st, big_vectors["aid"]))
    last = _chunk_files(st, big_vectors["aid"])
    pool_chunks = [p for p in last if "/pool/" in p.as_posix()]
    pool_chunks[-1].unlink()
    assert np.asarray(feats.pools[0][:100]).any()  # an untouched chunk still reads
    with pytest.raises(UserError, match="missing"):
        feats.pools[0][2500:2600]


# --- 3. vectors that overflow or vanish in the stored dtype -------------------------------------


@pytest.fixture(scope="module")
def vec_case(tmp_path_factory):
    d = tmp_path_factory.mktemp("vecscale")
    inp = H.make_vectors_inputs(d / "in", 40)
    st = d / "ref"
    f = H.last_line(H.tselect(*H.vectors_args(inp), store=st))
    s = H.last_line(H.tselect("select", "--features", f, "--selector", "topk", store=st))
    return {"dir": d, "inp": inp, "indices": (H.artifact_dir(st, s) / "indices.json").read_text()}


def _topk_order(inp: dict, dtype: str, st) -> tuple[int, list[int], list[float]] | None:
    proc = H.tselect(*H.vectors_args(inp, "--dtype", dtype), store=st, check=False)
    if proc.returncode == 2:  # refusing is allowed; a silent wrong selection is not
        assert len(proc.stderr.strip().splitlines()) == 1 and not H.final_dirs(st), proc.stderr
        return None
    assert proc.returncode == 0, proc.stderr[-800:]
    s = H.last_line(H.tselect("select", "--features", H.last_line(proc), "--selector", "topk", store=st))
    out = json.loads((H.artifact_dir(st, s) / "indices.json").read_text())
    return out["indices"], out["scores"]


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("scale", [1e200, 1e38, 1e30, 1e6, 1e-8, 1e-30, 1e-300])
def test_finite_vectors_of_any_scale_give_the_same_selection(vec_case, dtype, scale, tmp_path):
    inp = dict(vec_case["inp"])
    ref = _topk_order(inp, dtype, tmp_path / "ref")
    np.save(tmp_path / "p.npy", np.load(inp["pool_vectors"]).astype(np.float64) * scale)
    inp["pool_vectors"] = tmp_path / "p.npy"
    got = _topk_order(inp, dtype, tmp_path / "st")
    if got is None:
        return
    assert sorted(got[0]) == list(range(40))
    assert np.allclose(got[1], ref[1], atol=2e-3)  # the same cosines (rounding of the stored dtype aside)
    if dtype == "float32":
        assert got[0] == ref[0]


@pytest.mark.parametrize("name,make", [
    ("nan", lambda p: p.__setitem__((3, 1), np.nan)),
    ("inf", lambda p: p.__setitem__((0, 0), np.inf)),
    ("zero-row", lambda p: p.__setitem__(5, 0.0)),
])
def test_non_finite_or_zero_rows_are_one_line(vec_case, name, make, tmp_path):
    inp = dict(vec_case["inp"])
    p = np.load(inp["pool_vectors"]).astype(np.float64)
    make(p)
    np.save(tmp_path / "p.npy", p)
    inp["pool_vectors"] = tmp_path / "p.npy"
    proc = H.tselect(*H.vectors_args(inp), store=tmp_path / "st", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "--pool-vectors" in lines[0], proc.stderr[-800:]
    assert not H.final_dirs(tmp_path / "st") and not H.part_dirs(tmp_path / "st")


@pytest.mark.parametrize("name,array", [
    ("width-0", np.zeros((40, 0))), ("complex", np.ones((40, 8), dtype=complex)),
    ("bool", np.ones((40, 8), dtype=bool)), ("strings", np.array([["a"] * 8] * 40)),
    ("structured", np.zeros(40, dtype=[("a", "f4"), ("b", "f4")])), ("3-d", np.ones((40, 2, 4))),
])
def test_vectors_that_are_not_real_rows_are_one_line(vec_case, name, array, tmp_path):
    inp = dict(vec_case["inp"])
    np.save(tmp_path / "p.npy", array)
    inp["pool_vectors"] = tmp_path / "p.npy"
    proc = H.tselect(*H.vectors_args(inp), store=tmp_path / "st", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (name, proc.stderr[-800:])
    assert not H.final_dirs(tmp_path / "st")


def test_rows_that_underflow_the_stored_dtype_are_refused_by_the_writer(tmp_path):
    """The generic check in RowWriter, for every representation: validated after the cast."""
    from tselect.errors import UserError
    from tselect.store import RowWriter

    w = RowWriter(tmp_path / "g", "pool", 4, 3, "float16")
    rows = np.full((4, 3), 1e-9, dtype=np.float32)  # non-zero in float32, zero in float16
    with pytest.raises(UserError, match="all-zero once stored as float16"):
        w.write(0, rows)
    with pytest.raises(UserError, match="non-finite"):
        w.write(0, np.full((4, 3), 1e6, dtype=np.float32))  # inf in float16
    w.write(0, np.zeros((4, 3), dtype=np.float32))  # rows that are zero on purpose stay allowed


# --- 4. edited manifests are refused by every downstream read -----------------------------------

EDITS = {
    "config": lambda m: m["config"].update({"seed": 12345}) if "seed" in m["config"] else m["config"].update(x=1),
    "inputs": lambda m: m["inputs"].update({k: "0" * 16 for k in list(m["inputs"])[:1]}),
    "empty-files": lambda m: m.update(files={}),
    "no-files": lambda m: m.pop("files"),
    "id": lambda m: m.update(id=m["id"][:-1] + ("0" if m["id"][-1] != "0" else "1")),
    "stage": lambda m: m.update(stage="report"),
    "schema": lambda m: m.update(schema_version=99),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
@pytest.mark.parametrize("target,reader", [
    ("features", lambda c, st: ["select", "--features", c["features"], "--selector", "topk", "--budget", "4"]),
    ("selection", lambda c, st: ["export", c["selection"], "--out", st / "x.jsonl"]),
    ("selection", lambda c, st: ["select", "--features", c["features"], "--selector", "strict_random",
                                 "--budget", "4", "--exclude", c["selection"]]),
    ("selection", lambda c, st: ["distance", "--features", c["features"], "--selection", c["selection"],
                                 "--budget", "4"]),
])
def test_edited_manifest_is_refused_downstream(small_chain_untrained, edit, target, reader, tmp_path):
    c = small_chain_untrained
    st = copy_store(c["ref"], tmp_path / "s")
    path = H.artifact_dir(st, c[target]) / "manifest.json"
    m = json.loads(path.read_text())
    EDITS[edit](m)
    path.write_text(json.dumps(m))
    before = set(H.final_dirs(st))
    proc = H.tselect(*reader(c, st), store=st, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and c[target] in lines[0], proc.stderr[-800:]
    assert set(H.final_dirs(st)) == before  # nothing published from the edited artifact


@pytest.fixture(scope="module")
def small_chain_untrained(tmp_path_factory):
    from tests.reliability import scenarios as S

    out = S.build_chain(tmp_path_factory.mktemp("chain-u"), None, train=False)
    shutil.rmtree(out["dir"] / "cmds", ignore_errors=True)
    return out
