"""Flipped and truncated bytes in a feature chunk, a manifest, an adapter and an index list.

`tselect verify ID` must exit 2 naming the artifact and how to rebuild it; commands that read a
checksummed file (indices.json for select --exclude / finetune / export / mix, adapter files for
evaluate) must refuse it with one line, never use it silently. Feature chunks carry a crc32c each, so
`select` refuses a flipped or truncated chunk the moment it reads it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.reliability import helpers as H



def flip(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    """Keep the first third (at least one byte less than before: a 1-byte done mask becomes empty)."""
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: min(size - 1, size // 3)])


CORRUPT = {"flip": flip, "truncate": truncate}


@pytest.fixture
def chain(small_chain, tmp_path) -> dict:
    st = tmp_path / "store"
    shutil.copytree(small_chain["ref"], st)
    return {**small_chain, "store": st}


def one_line_error(proc, *needles: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def verify_reports(store: Path, aid: str, what: str) -> None:
    for args in (("verify", aid), ("verify",)):
        proc = H.tselect(*args, store=store, check=False)
        assert proc.returncode == 2, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and aid in last and f"tselect rm ID --store {store}" in last, proc.stderr
        assert f"{aid}: CORRUPT" in proc.stderr and what in proc.stderr, proc.stderr


def no_new_parts(store: Path) -> None:
    assert not H.part_dirs(store), H.part_dirs(store)


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_feature_chunk_corruption_is_found_by_verify(chain, how):
    st, f = chain["store"], chain["features"]
    chunk = H.artifact_dir(st, f) / "features.zarr" / "0" / "pool" / "c" / "0" / "0"
    CORRUPT[how](chunk)
    verify_reports(st, f, "features.zarr/0/pool/c/0/0")


@pytest.mark.parametrize("rel", ["pool/c/0/0", "pool_done/c/0", "pool/zarr.json"])
@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_select_refuses_a_corrupt_feature_chunk(chain, how, rel):
    st, f = chain["store"], chain["features"]
    CORRUPT[how](H.artifact_dir(st, f) / "features.zarr" / "0" / rel)
    proc = H.tselect("select", "--features", f, "--selector", "topk", "--budget", "5", store=st, check=False)
    one_line_error(proc, f)
    assert not (st / "select").exists() or len(H.final_dirs(st)) == len(H.final_dirs(chain["ref"]))


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_manifest_corruption_is_found(chain, how):
    st, f = chain["store"], chain["features"]
    manifest = H.artifact_dir(st, f) / "manifest.json"
    if how == "flip":  # flip one hex digit of a recorded checksum: still valid JSON
        text = manifest.read_text()
        key = '"sha256": "'
        i = text.index(key) + len(key)
        manifest.write_text(text[:i] + ("0" if text[i] != "0" else "1") + text[i + 1:])
        verify_reports(st, f, "checksum mismatch")
    else:
        truncate(manifest)
        proc = H.tselect("verify", f, store=st, check=False)
        one_line_error(proc, f, "corrupt manifest")
        proc = H.tselect("verify", store=st, check=False)  # the whole store: the other artifacts still get checked
        assert proc.returncode == 2 and f"{chain['selection']}: ok" in proc.stderr, proc.stderr
        proc = H.tselect("select", "--features", f, store=st, check=False)
        one_line_error(proc, f, "corrupt manifest")


def test_manifest_missing_keys_is_one_line(chain):
    st, f = chain["store"], chain["features"]
    manifest = H.artifact_dir(st, f) / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"id":', '"iq":', 1))
    verify_reports(st, f, "manifest.json")  # reported like any other damage (the id comes from the directory)
    one_line_error(H.tselect("select", "--features", f, "--selector", "topk", store=st, check=False), f)


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_corrupt_adapter_is_refused_by_verify_and_evaluate(chain, how):
    st, ft = chain["store"], chain["finetune"]
    CORRUPT[how](H.artifact_dir(st, ft) / "adapter" / "adapter_model.safetensors")
    verify_reports(st, ft, "adapter/adapter_model.safetensors")
    shutil.rmtree(st / "evaluate")
    proc = H.tselect(*chain["ev_args"], store=st, check=False)
    one_line_error(proc, ft, "adapter/adapter_model.safetensors", "tselect rm")
    no_new_parts(st)
    assert not (st / "evaluate").exists() or not H.final_dirs(st / "evaluate")


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_corrupt_index_list_is_never_used(chain, tmp_path, how):
    st, s = chain["store"], chain["selection"]
    CORRUPT[how](H.artifact_dir(st, s) / "indices.json")
    verify_reports(st, s, "indices.json")
    finals = H.final_dirs(st)
    readers = {
        "export": ("export", s, "--out", tmp_path / "out.jsonl"),
        "export --indices": ("export", s, "--out", tmp_path / "idx.json", "--indices"),
        "finetune": ("finetune", "--selection", s, "--budget", "4", "--model", chain["model"], "--epochs", "1"),
        "select --exclude": ("select", "--features", chain["features"], "--selector", "strict_random",
                             "--budget", "4", "--exclude", s),
        "mix": ("mix", s),
    }
    for name, args in readers.items():
        proc = H.tselect(*args, store=st, check=False)
        one_line_error(proc, s, "indices.json")
    assert H.final_dirs(st) == finals and not (tmp_path / "out.jsonl").exists() and not (tmp_path / "idx.json").exists()
    no_new_parts(st)


def test_verify_all_names_every_corrupt_artifact(chain):
    st = chain["store"]
    flip(H.artifact_dir(st, chain["selection"]) / "indices.json")
    flip(H.artifact_dir(st, chain["evaluate"]) / "metrics.json")
    proc = H.tselect("verify", store=st, check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "2 of" in last and chain["selection"] in last and chain["evaluate"] in last, last
    assert f"{chain['features']}: ok" in proc.stderr and f"{chain['finetune']}: ok" in proc.stderr
