"""Escapes from the store: every id read from disk or the command line must match the id grammar and
resolve inside the store; links planted in the store are never followed out of it.

Each case plants something in a copy of a small store, runs a command, and checks that a
sentinel directory outside the store is untouched and the command either worked inside the
store or printed one `error:` line with exit 2.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.reliability import helpers as H
from tests.reliability.conftest import copy_store


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from tests.reliability import scenarios as S

    return S.build_chain(tmp_path_factory.mktemp("esc"), None, train=False)


@pytest.fixture
def world(chain, tmp_path):
    """A copy of the store and a sentinel directory beside it that nothing may touch."""
    st = copy_store(chain["ref"], tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    return st, outside


def _untouched(outside) -> bool:
    return (outside / "keep.txt").is_file() and sorted(p.name for p in outside.iterdir()) == ["keep.txt"]


def _one_line_or_ok(proc) -> None:
    """Success, or exit 2 with one `error:` line (verify first reports one `<id>: ...` line per artifact)."""
    lines = proc.stderr.strip().splitlines()
    if proc.args[3] == "verify":
        lines = [ln for ln in lines if not (ln.split(":", 1)[0].count("-") >= 1 and ": " in ln and " " not in ln.split(":", 1)[0])]
    assert proc.returncode == 0 or (proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")), \
        proc.stderr[-1000:]
    assert "Traceback" not in proc.stderr


def _forged_ids(outside, other: str) -> list:
    return [str(outside), str(outside) + "/", "../../outside", "../outside", "featurize/../../outside", other, "",
            "select-" + "0" * 16 + "/../../../outside", "x" * 300, None, 5, ["a"]]


@pytest.mark.parametrize("k", range(12))
def test_rm_never_deletes_what_a_forged_manifest_id_names(chain, world, k):
    st, outside = world
    victim = H.artifact_dir(st, chain["selection"])
    m = json.loads((victim / "manifest.json").read_text())
    m["id"] = _forged_ids(outside, chain["features"])[k]
    (victim / "manifest.json").write_text(json.dumps(m))
    proc = H.tselect("rm", chain["selection"], store=st, check=False)
    _one_line_or_ok(proc)
    assert _untouched(outside)
    assert H.artifact_dir(st, chain["features"]).is_dir()  # another artifact's id in the manifest: not it
    if proc.returncode == 0:
        assert H.last_line(proc) == chain["selection"] and not victim.exists()


@pytest.mark.parametrize("k", range(12))
def test_forged_input_ids_are_refused_by_readers(chain, world, k):
    st, outside = world
    victim = H.artifact_dir(st, chain["selection"])
    m = json.loads((victim / "manifest.json").read_text())
    m["inputs"]["features"] = _forged_ids(outside, "featurize-" + "0" * 16)[k]
    (victim / "manifest.json").write_text(json.dumps(m))
    for args in (["export", chain["selection"], "--out", st / "x.jsonl"], ["show", chain["selection"]],
                 ["verify", chain["selection"]], ["rm", chain["selection"]]):
        proc = H.tselect(*args, store=st, check=False)
        _one_line_or_ok(proc)
        assert args[0] not in ("export", "verify") or proc.returncode == 2
    assert _untouched(outside)


@pytest.mark.parametrize("ref", ["../outside", "/tmp", "..", "featurize/../..", "*", "select-*", "a b", "select-[0]"])
@pytest.mark.parametrize("command", ["rm", "show", "path", "verify", "export"])
def test_refs_with_path_characters_are_refused(world, ref, command):
    st, outside = world
    args = [command, ref] + (["--out", str(st / "x.jsonl")] if command == "export" else [])
    proc = H.tselect(*args, store=st, check=False)
    _one_line_or_ok(proc)
    assert proc.returncode == 2
    assert _untouched(outside)


def test_a_planted_part_link_never_sends_featurize_outside(chain, world, tmp_path):
    st, outside = world
    inp = H.make_vectors_inputs(tmp_path / "in2", 64, seed=7)  # another artifact: not in the store yet
    fresh = tmp_path / "probe"
    aid = H.last_line(H.tselect(*H.vectors_args(inp), store=fresh))
    part = H.artifact_dir(st, aid).with_suffix(".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, part)
    proc = H.tselect(*H.vectors_args(inp), store=st, check=False)
    _one_line_or_ok(proc)
    assert _untouched(outside)
    assert proc.returncode == 2 and "link" in proc.stderr


@pytest.mark.parametrize("what", ["stage-dir", "artifact-dir", "inner-file", "inner-dir"])
def test_links_inside_the_store_are_never_followed_out(chain, world, what):
    st, outside = world
    sel = H.artifact_dir(st, chain["selection"])
    if what == "stage-dir":  # a whole stage directory that is a link to elsewhere
        (st / "select").rename(outside.parent / "moved")
        os.symlink(outside, st / "select")
    elif what == "artifact-dir":
        os.rename(sel, outside.parent / "moved")
        os.symlink(outside, sel)
    elif what == "inner-file":
        (sel / "indices.json").unlink()
        os.symlink(outside / "keep.txt", sel / "indices.json")
    else:
        os.symlink(outside, sel / "sub")
        m = json.loads((sel / "manifest.json").read_text())
        m["files"]["sub/keep.txt"] = {"size": 8, "sha256": "0" * 64}
        (sel / "manifest.json").write_text(json.dumps(m))
    for args in (["verify", chain["selection"]], ["verify"], ["export", chain["selection"], "--out", st.parent / "x.jsonl"],
                 ["rm", chain["selection"]]):
        proc = H.tselect(*args, store=st, check=False)
        _one_line_or_ok(proc)
        if (args[0] == "export" and what != "inner-dir") or args == ["verify", chain["selection"]]:
            assert proc.returncode == 2, (args, proc.stderr[-500:])
    assert _untouched(outside)


@pytest.mark.parametrize("rel", ["../../../outside/keep.txt", "/etc/hostname", "a/../../x", "", "./x"])
def test_verify_refuses_file_names_that_leave_the_artifact(chain, world, rel):
    st, outside = world
    sel = H.artifact_dir(st, chain["selection"])
    m = json.loads((sel / "manifest.json").read_text())
    m["files"][rel] = {"size": 8, "sha256": "0" * 64}
    (sel / "manifest.json").write_text(json.dumps(m))
    proc = H.tselect("verify", chain["selection"], store=st, check=False)
    assert proc.returncode == 2 and "leaves the artifact" in proc.stderr, proc.stderr[-800:]
    assert _untouched(outside)
