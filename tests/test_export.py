"""Export round-trips: rows come back in the user's layout and fields (their `id` kept), found by
example id after the pool moved or grew; budgets as counts or fractions."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.test_cli_e2e import last_line, tselect
from tselect import catalog as C

N = 20


def alpaca_rows(n: int = N) -> list[dict]:
    return [{"id": f"ex-{i:03d}", "instruction": f"Name fact number {i}.", "input": "" if i % 2 else f"context {i}",
             "output": f"Fact {i} is {i * 7}.", "source_task": "facts"} for i in range(n)]


@pytest.fixture
def chain(tmp_path, store):
    """A vectors featurize over an alpaca pool and a round-robin selection of 6."""
    data = tmp_path / "data"
    data.mkdir()
    pool = data / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows()))
    query = data / "query.jsonl"
    query.write_text(json.dumps({"prompt": "A fact?", "completion": "Fact 3 is 21."}) + "\n")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "p.npy", rng.normal(size=(N, 4)))
    np.save(tmp_path / "q.npy", rng.normal(size=(1, 4)))
    f = last_line(tselect("featurize", "--rep", "vectors", "--pool", pool, "--query", query,
                          "--pool-vectors", tmp_path / "p.npy", "--query-vectors", tmp_path / "q.npy", store=store))
    s = last_line(tselect("select", "--features", f, "--selector", "topk", "--budget", "6", store=store))
    return pool, f, s


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_alpaca_in_alpaca_out_after_moving_and_growing_the_pool(tmp_path, store, chain):
    pool, f, s = chain
    sel = json.loads((C.resolve(store, s).path / "indices.json").read_text())
    order, ex_ids = sel["indices"], sel["example_ids"]
    assert len(ex_ids) == 6 and len(set(ex_ids)) == 6
    moved = tmp_path / "elsewhere" / "pool.jsonl"
    moved.parent.mkdir()
    # moved, with two new rows in front: positions shift, ids do not
    extra = [{"id": "new-1", "instruction": "New?", "input": "", "output": "Yes."},
             {"id": "new-2", "instruction": "Newer?", "input": "", "output": "Yes!"}]
    moved.write_text("".join(json.dumps(r) + "\n" for r in extra) + pool.read_text())
    pool.unlink()
    proc = tselect("export", s, "--out", tmp_path / "x.jsonl", store=store, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "does not exist" in proc.stderr
    out = tmp_path / "subset.jsonl"
    tselect("export", s, "--out", out, "--pool", moved, "--scores", store=store)
    got = read_jsonl(out)
    rows = alpaca_rows()
    assert [{k: v for k, v in g.items() if not k.startswith("tselect_")} for g in got] == [rows[i] for i in order]
    assert [g["tselect_rank"] for g in got] == [1, 2, 3, 4, 5, 6]
    assert [g["tselect_score"] for g in got] == sel["scores"]
    # the exported file reads back to the same examples (same content ids as the selection recorded)
    from tselect.data import load_dataset

    assert [e.id for e in load_dataset(str(out)).examples] == ex_ids


def test_export_refuses_a_pool_missing_selected_rows(tmp_path, store, chain):
    pool, f, s = chain
    order = json.loads((C.resolve(store, s).path / "indices.json").read_text())["indices"]
    rows = alpaca_rows()
    rows[order[0]]["output"] = "edited"
    other = tmp_path / "edited.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = tselect("export", s, "--out", tmp_path / "x.jsonl", "--pool", other, store=store, check=False)
    assert proc.returncode == 2 and "1 of the 6 selected examples" in proc.stderr and "--pool" in proc.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_parquet_out_and_fraction_budgets(tmp_path, store, chain):
    from tselect.data import load_dataset

    pool, f, s = chain
    out = tmp_path / "subset.parquet"
    tselect("export", s, "--out", out, "--percentage", "0.1", store=store)  # floor(0.1 * 20) = 2
    back = load_dataset(str(out))
    assert [e.row["id"] for e in back.examples] == [r["id"] for r in read_or_export(tmp_path, store, s, "2")]
    s25 = last_line(tselect("select", "--features", f, "--selector", "topk", "--budget", "25%", store=store))
    assert C.resolve(store, s25).record["n_selected"] == 5
    s_frac = last_line(tselect("select", "--features", f, "--selector", "topk", "--percentage", "0.25", store=store))
    assert s_frac == s25
    d = last_line(tselect("distance", "--features", f, "--selection", s25, "--budget", "10%", "--budget", "5",
                          store=store))
    rows = json.loads((C.resolve(store, d).path / "distances.json").read_text())["rows"]
    assert [r["budget"] for r in rows] == [2, 5]  # 10% of 20 = 2
    proc = tselect("select", "--features", f, "--budget", "1.5", store=store, check=False)
    assert proc.returncode == 2 and "fraction in (0, 1]" in proc.stderr


def read_or_export(tmp_path, store, s, k):
    out = tmp_path / f"first{k}.jsonl"
    tselect("export", s, "--out", out, "--budget", k, store=store)
    return read_jsonl(out)


def test_old_selections_without_ids_still_export_from_the_same_pool(tmp_path, store, chain):
    pool, f, s = chain
    path = C.resolve(store, s).path / "indices.json"
    data = json.loads(path.read_text())
    data.pop("example_ids")
    path.chmod(0o644)
    path.write_text(json.dumps(data))
    manifest = json.loads((path.parent / "manifest.json").read_text())
    from tselect.artifacts import sha256_file

    manifest["files"]["indices.json"] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    (path.parent / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "old.jsonl"
    tselect("export", s, "--out", out, store=store)
    assert [r["id"] for r in read_jsonl(out)] == [f"ex-{i:03d}" for i in data["indices"]]
    shutil.move(pool, tmp_path / "gone.jsonl")
    (tmp_path / "grown.jsonl").write_text((tmp_path / "gone.jsonl").read_text() + json.dumps(
        {"instruction": "x", "output": "y"}) + "\n")
    proc = tselect("export", s, "--out", out, "--pool", tmp_path / "grown.jsonl", store=store, check=False)
    assert proc.returncode == 2 and "changed since" in proc.stderr


def test_finetune_finds_the_selection_in_a_moved_pool(tmp_path, store, chain, tiny_model_dir):
    pool, f, s = chain
    moved = tmp_path / "moved.jsonl"
    moved.write_text(json.dumps({"instruction": "Extra?", "output": "Yes."}) + "\n" + pool.read_text())
    pool.unlink()
    args = ("finetune", "--selection", s, "--budget", "4", "--model", tiny_model_dir, "--epochs", "1",
            "--batch-size", "2", "--effective-batch-size", "2", "--max-length", "64")
    proc = tselect(*args, store=store, check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    ft = C.resolve(store, last_line(tselect(*args, "--pool", moved, store=store)))
    assert ft.record["n_selected"] == 4 and ft.record["pool"] == str(moved)
