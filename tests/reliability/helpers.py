"""Shared by the reliability tests and `python -m reliability.run`: CLI runs, toy data, store probes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]

# One intra-op thread: on two busy shared cores torch's OpenMP threads spin in barriers and the
# tiny model runs ~20x slower; a single thread keeps every run fast and reproducible.
BASE_ENV = {"TSELECT_PROGRESS": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TSELECT_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": str(REPO)}

# Manifest keys that legitimately differ between two runs of the same work.
VOLATILE_MANIFEST = {"created", "wall_time_s", "host"}
VOLATILE_RECORD = {"cost", "seconds", "wall_s"}


def env(store: Path | None = None, **extra: str) -> dict[str, str]:
    out = {**os.environ, **BASE_ENV, **extra}
    if store is not None:
        out["TSELECT_STORE"] = str(store)
    return out


def cli_argv(args, faults: bool = False) -> list[str]:
    module = "tests.reliability.faults" if faults else "tselect"
    return [sys.executable, "-m", module, *map(str, args)]


def tselect(*args, store: Path, check: bool = True, faults: bool = False, timeout: float = 600,
            extra_env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cli_argv(args, faults), capture_output=True, text=True, timeout=timeout,
                          env=env(store, **(extra_env or {})), cwd=cwd or REPO)
    if check:
        assert proc.returncode == 0, f"tselect {' '.join(map(str, args))} failed:\n{proc.stderr}"
    return proc


def spawn(*args, store: Path, faults: bool = False, extra_env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(cli_argv(args, faults), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(store, **(extra_env or {})), cwd=REPO, start_new_session=True)


def kill9(proc: subprocess.Popen) -> None:
    """SIGKILL the process we started (its own session, so its children too) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def last_line(proc) -> str:
    lines = (proc.stdout or "").strip().splitlines()
    return lines[-1] if lines else ""


# --- toy data ----------------------------------------------------------------------------------

def pool_rows(n: int, tag: str = "") -> list[dict]:
    """n distinct short chat rows (3 source tasks)."""
    return [{"messages": [{"role": "user", "content": f"Question {tag}{i}: what is {i} plus {i % 7}?"},
                          {"role": "assistant", "content": f"It is {i + i % 7}."}],
             "source_task": f"task{i % 3}"} for i in range(n)]


def query_rows(m: int = 4, subtasks: bool = True) -> list[dict]:
    rows = [{"prompt": f"What is {i} plus one?", "completion": f"{i + 1}."} for i in range(m)]
    return [{**r, "subtask": f"sub{i % 2}"} for i, r in enumerate(rows)] if subtasks else rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_vectors(path: Path, n: int, dim: int, seed: int) -> Path:
    np.save(path, np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32))
    return path


def make_vectors_inputs(d: Path, n_pool: int, n_query: int = 4, dim: int = 8, seed: int = 0) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    return {"pool": write_jsonl(d / "pool.jsonl", pool_rows(n_pool)),
            "query": write_jsonl(d / "query.jsonl", query_rows(n_query)),
            "pool_vectors": write_vectors(d / "p.npy", n_pool, dim, seed),
            "query_vectors": write_vectors(d / "q.npy", n_query, dim, seed + 1)}


def vectors_args(inp: dict[str, Path], *extra) -> list:
    return ["featurize", "--rep", "vectors", "--pool", inp["pool"], "--query", inp["query"],
            "--pool-vectors", inp["pool_vectors"], "--query-vectors", inp["query_vectors"], *extra]


# --- store probes ------------------------------------------------------------------------------

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def artifact_dir(store: Path, aid: str) -> Path:
    return store / aid.rsplit("-", 1)[0] / aid


def final_dirs(store: Path) -> list[Path]:
    """`<stage>/<id>` directories (finished artifacts), never `.part`."""
    return sorted(p for p in store.glob("*/*") if p.is_dir() and p.suffix != ".part") if store.exists() else []


def part_dirs(store: Path) -> list[Path]:
    return sorted(p for p in store.glob("*/*.part") if p.is_dir()) if store.exists() else []


def fingerprint(store: Path, aid: str) -> dict:
    """What must be identical between two runs of the same work: every file's bytes and the
    manifest minus its timestamps/host/timings."""
    d = artifact_dir(store, aid)
    manifest = json.loads((d / "manifest.json").read_text())
    files = {p.relative_to(d).as_posix(): sha256(p) for p in sorted(d.rglob("*"))
             if p.is_file() and p.name != "manifest.json"}
    stable = {k: v for k, v in manifest.items() if k not in VOLATILE_MANIFEST}
    stable["record"] = {k: v for k, v in manifest.get("record", {}).items() if k not in VOLATILE_RECORD}
    return {"files": files, "manifest": stable}


def bytes_differing(store_a: Path, store_b: Path, aid: str) -> int:
    """Bytes of artifact aid that differ between two stores (size differences count in full)."""
    a, b = artifact_dir(store_a, aid), artifact_dir(store_b, aid)
    lost = 0
    rels = {p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()} | \
           {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()}
    for rel in rels - {"manifest.json"}:
        pa, pb = a / rel, b / rel
        if not pa.is_file() or not pb.is_file():
            lost += (pa.stat().st_size if pa.is_file() else 0) + (pb.stat().st_size if pb.is_file() else 0)
            continue
        xa, xb = np.frombuffer(pa.read_bytes(), np.uint8), np.frombuffer(pb.read_bytes(), np.uint8)
        n = min(xa.size, xb.size)
        lost += int(np.count_nonzero(xa[:n] != xb[:n])) + abs(xa.size - xb.size)
    return lost


def chunk_files(zarr_dir: Path) -> dict[str, tuple[int, int]]:
    """Every data-chunk file of every array (`<arr>/c/...`) → (inode, mtime_ns): a rewrite by
    zarr's atomic replace always yields a new inode."""
    out = {}
    for p in sorted(zarr_dir.rglob("*")):
        rel = p.relative_to(zarr_dir).as_posix()
        if p.is_file() and "/c/" in f"/{rel}" and "_done/" not in rel and not p.name.endswith(".partial"):
            st = p.stat()
            out[rel] = (st.st_ino, st.st_mtime_ns)
    return out


def done_masks(zarr_dir: Path) -> dict[str, np.ndarray]:
    """`<ckpt>/<array>` → its done mask, read from the raw chunk bytes (bool, uncompressed)."""
    out = {}
    for meta in sorted(zarr_dir.rglob("*_done/zarr.json")):
        arr = meta.parent
        n = json.loads(meta.read_text())["shape"][0]
        chunk = arr / "c" / "0"
        mask = np.frombuffer(chunk.read_bytes(), dtype=bool) if chunk.is_file() else np.zeros(n, bool)
        out[arr.relative_to(zarr_dir).as_posix()[: -len("_done")]] = mask.copy()
    return out


def chunk_of(rel: str) -> tuple[str, int]:
    """'0/pool/c/3/0' → ('0/pool', 3)."""
    head, tail = rel.split("/c/", 1)
    return head, int(tail.split("/")[0])


def wait_for(predicate, timeout: float, every: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return False


def tselect_many(commands: list[list], store: Path, workdir: Path) -> list[str]:
    """Run commands in one fresh process (tests/reliability/multi.py); returns the ids they printed."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec = workdir / "commands.json"
    spec.write_text(json.dumps([[str(a) for a in c] for c in commands]))
    proc = subprocess.run([sys.executable, "-m", "tests.reliability.multi", str(spec)], capture_output=True,
                          text=True, env=env(store), cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
