"""Disk: a store on a small or full filesystem (tmpfs mounts; skipped where mounting is not allowed).

featurize estimates the space it needs and refuses early (tselect/featurize/__init__.py
_check_space); a write that fails anyway is one line and leaves nothing half-finished.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from tests.reliability import helpers as H


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size, ro=False) → a fresh tmpfs directory, unmounted at teardown; skip if not permitted."""
    mounted: list[Path] = []

    def mount(size: str, ro: bool = False) -> Path:
        d = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
        d.mkdir()
        opts = f"size={size}" + (",ro" if ro else "")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})")
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> dict:
    """3,000 × 256 float32 vectors: about 1.5 MB of float16 features."""
    d = tmp_path_factory.mktemp("wide")
    inp = H.make_vectors_inputs(d, 3000, dim=256)
    return {"args": H.vectors_args(inp), "dir": d}


def one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-1500:]
    return lines[0]


def test_featurize_on_a_too_small_disk_fails_early_with_the_space_needed(wide, tmpfs):
    st = tmpfs("1M") / "store"
    line = one_line(H.tselect(*wide["args"], store=st, check=False))
    assert "free" in line and "need" in line and "MB" in line and "--store" in line, line
    assert not H.final_dirs(st) and not H.part_dirs(st)  # refused before any work or directory


def test_rerun_of_a_finished_featurize_on_a_full_disk_prints_its_id(wide, tmpfs, tmp_path):
    ref = tmp_path / "ref"
    aid = H.last_line(H.tselect(*wide["args"], store=ref))
    fs = tmpfs("4M")
    subprocess.run(["cp", "-a", str(ref), str(fs / "store")], check=True)
    _fill(fs)
    proc = H.tselect(*wide["args"], store=fs / "store", check=False)
    assert proc.returncode == 0 and H.last_line(proc) == aid, proc.stderr[-500:]


def _fill(fs: Path) -> None:
    with open(fs / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (64 << 10))
                f.flush()
        except OSError:
            pass


@pytest.fixture
def disk_full_mid_write(wide, tmpfs, tmp_path) -> dict:
    """Start featurize on a 12 MB tmpfs (enough by the estimate), fill the disk while it writes."""
    fs = tmpfs("12M")
    st = fs / "store"
    proc = H.spawn(*wide["args"], store=st, faults=True, extra_env={"TSELECT_FAULT_SLOW": "0.25"})
    part_seen = H.wait_for(lambda: bool(H.part_dirs(st)), 60)
    _fill(fs)
    out, err = proc.communicate(timeout=120)
    (fs / "filler").unlink()
    return {"rc": proc.returncode, "stderr": err, "store": st, "part_seen": part_seen}


def test_disk_full_mid_write_keeps_finished_work_and_resumes(wide, disk_full_mid_write, tmp_path):
    r = disk_full_mid_write
    assert r["part_seen"] and r["rc"] != 0
    assert not H.final_dirs(r["store"])  # never a finished-looking artifact
    proc = H.tselect(*wide["args"], store=r["store"])  # space freed: the same command resumes
    aid = H.last_line(proc)
    ref = tmp_path / "ref"
    H.tselect(*wide["args"], store=ref)
    got, want = H.fingerprint(r["store"], aid), H.fingerprint(ref, aid)
    assert {k: v for k, v in got["files"].items() if not k.endswith(".partial")} == want["files"]


def test_disk_full_mid_write_is_one_line(disk_full_mid_write):
    one_line(type("P", (), {"returncode": disk_full_mid_write["rc"], "stderr": disk_full_mid_write["stderr"]}))


def test_read_only_store_is_one_line(wide, tmpfs):
    st = tmpfs("64M", ro=True) / "store"
    line = one_line(H.tselect(*wide["args"], store=st, check=False))
    assert "not writable" in line and "--store" in line, line
