"""Content-addressed artifacts: id = hash(stage, schema version, config, input ids).

Layout: `<root>/<stage>/<id>/` holding the stage's files plus `manifest.json`, written last
inside `<id>.part/` and then renamed, so a directory without `.part` is always complete.
A per-artifact `flock` serializes identical concurrent runs: the second waits, then finds the
finished artifact and returns its id. The kernel drops the lock when a process dies, so a
killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tselect import __version__
from tselect.errors import UserError
from tselect.files import atomic_write, flock, sha256_file

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
STAGES = ("warmup", "featurize", "select", "scores", "distance", "finetune", "evaluate", "cell", "experiment", "report")


def store_root(store: str | os.PathLike | None = None) -> Path:
    """`--store`, else `$TSELECT_STORE`, else `./.tselect`."""
    return Path(store or os.environ.get("TSELECT_STORE") or ".tselect")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def compute_id(stage: str, config: dict[str, Any], inputs: dict[str, str]) -> str:
    """`<stage>-<16 hex>` from everything that determines the artifact's content."""
    payload = {"stage": stage, "schema": SCHEMA_VERSION, "config": config, "inputs": inputs}
    digest = hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]
    return f"{stage}-{digest}"


@dataclass(frozen=True)
class Artifact:
    id: str
    stage: str
    path: Path
    manifest: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest["config"]

    @property
    def inputs(self) -> dict[str, str]:
        return self.manifest["inputs"]

    @property
    def record(self) -> dict[str, Any]:
        return self.manifest.get("record", {})


@dataclass
class Build:
    """Handed to a stage's writer: fill `path`, add facts with `record(...)`."""

    id: str
    stage: str
    path: Path
    records: dict[str, Any] = field(default_factory=dict)

    def record(self, **facts: Any) -> None:
        self.records.update(facts)


def final_dir(root: Path, aid: str) -> Path:
    stage = aid.rsplit("-", 1)[0]
    return root / stage / aid


def exists(root: Path, aid: str) -> bool:
    return (final_dir(root, aid) / MANIFEST).is_file()


def file_table(directory: Path) -> dict[str, dict[str, Any]]:
    """Every file under `directory` (except the manifest) → size and sha256."""
    table = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            table[p.relative_to(directory).as_posix()] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    return table


@contextmanager
def locked(root: Path, aid: str) -> Iterator[None]:
    lock_path = final_dir(root, aid).with_suffix(".lock")
    with ExitStack() as held:
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            held.enter_context(flock(lock_path))
        except OSError as e:
            raise UserError(f"store directory {root} is not writable ({e.strerror}); pass --store DIR or set TSELECT_STORE to a writable directory") from None
        yield


def produce(root: Path, stage: str, config: dict[str, Any], inputs: dict[str, str],
            write: Callable[[Build], None], resume: bool = False) -> str:
    """Build the artifact unless it exists; returns its id.

    `write(build)` fills `build.path` (the `.part` directory). With `resume=True` a `.part` left
    by an interrupted run is kept so the writer can skip finished chunks; otherwise it is wiped.
    """
    aid = compute_id(stage, config, inputs)
    if exists(root, aid):
        return aid
    with locked(root, aid):
        if exists(root, aid):  # a concurrent identical run finished while we waited
            return aid
        part = final_dir(root, aid).with_suffix(".part")
        if part.exists() and not resume:
            shutil.rmtree(part)
        fresh = not part.exists()
        part.mkdir(parents=True, exist_ok=True)
        build = Build(aid, stage, part)
        started = time.time()
        try:
            write(build)
        except Exception as e:
            # Bad input found inside the writer, or any failure of a build that cannot resume:
            # nothing in the .part is worth keeping. A resumable build keeps its finished chunks.
            if not resume or (fresh and isinstance(e, UserError)):
                shutil.rmtree(part, ignore_errors=True)
            raise
        _finish(build, config, inputs, time.time() - started)
    return aid


PENDING = "pending.json"


def produce_shard(root: Path, stage: str, config: dict[str, Any], inputs: dict[str, str],
                  write: Callable[[Build], None], complete: Callable[[Path], bool]) -> tuple[str, bool]:
    """One shard's part of a sharded artifact; returns (id, whether the artifact is now complete).

    Shards write disjoint chunks of the same `.part` without holding the artifact lock (the
    writer guarantees disjointness); whichever shard, under the lock, finds `complete(part)`
    true writes the manifest and renames. `pending.json` keeps the config and inputs so
    `merge` can finish an artifact whose last shard died after writing its chunks.
    """
    aid = compute_id(stage, config, inputs)
    if exists(root, aid):
        return aid, True
    part = final_dir(root, aid).with_suffix(".part")
    with locked(root, aid):
        if exists(root, aid):
            return aid, True
        part.mkdir(parents=True, exist_ok=True)
        if not (part / PENDING).is_file():  # tmp + rename: a reader never sees half a file
            atomic_write(part / PENDING, canonical_json({"stage": stage, "config": config, "inputs": inputs}))
    build = Build(aid, stage, part)
    started = time.time()
    write(build)
    return aid, finish_if_complete(root, aid, complete, build, time.time() - started)


def finish_if_complete(root: Path, aid: str, complete: Callable[[Path], bool], build: Build | None = None,
                       wall: float = 0.0) -> bool:
    part = final_dir(root, aid).with_suffix(".part")
    with locked(root, aid):
        if exists(root, aid):
            return True
        if not part.is_dir() or not (part / PENDING).is_file() or not complete(part):
            return False
        pending = json.loads((part / PENDING).read_text())
        (part / PENDING).unlink()
        build = build or Build(aid, pending["stage"], part)
        _finish(build, pending["config"], pending["inputs"], wall)
    return True


def _sweep_temporaries(part: Path) -> None:
    """Leftovers of a killed writer are not content: zarr's *.partial files, atomic writes' *.tmp."""
    for p in list(part.rglob("*.partial")) + list(part.rglob("*.tmp")):
        p.unlink(missing_ok=True)


def _finish(build: Build, config: dict, inputs: dict, wall: float) -> None:
    _sweep_temporaries(build.path)
    manifest = {
        "id": build.id, "stage": build.stage, "schema_version": SCHEMA_VERSION,
        "config": config, "inputs": inputs, "record": build.records,
        "tselect_version": __version__, "host": socket.gethostname(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_time_s": round(wall, 3), "files": file_table(build.path),
    }
    atomic_write(build.path / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=str))
    _fsync_dir(build.path)
    os.replace(build.path, final_dir(build.path.parent.parent, build.id))
    _fsync_dir(build.path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_artifacts(root: Path) -> list[Artifact]:
    out = []
    for stage_dir in sorted(p for p in root.glob("*") if p.is_dir()):
        for d in sorted(stage_dir.iterdir()):
            if d.is_dir() and d.suffix != ".part" and (d / MANIFEST).is_file():
                out.append(_load(d))
    return out


def _load(d: Path) -> Artifact:
    try:
        manifest = json.loads((d / MANIFEST).read_text())
        return Artifact(manifest["id"], manifest["stage"], d, manifest)
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"artifact {d.name} has a corrupt manifest; delete {d} and rerun the command that made it") from None


def resolve(root: Path, ref: str, stage: str | None = None) -> Artifact:
    """An artifact by id or unique id prefix (optionally of a required stage)."""
    ref = ref.strip()
    candidates = [d for d in root.glob(f"*/{ref}*") if d.is_dir() and d.suffix != ".part"]
    candidates = [d for d in candidates if (d / MANIFEST).is_file()]
    if not candidates:
        raise UserError(f"no artifact '{ref}' in store {root}; list them with `tselect ls --store {root}`")
    if len(candidates) > 1:
        names = ", ".join(sorted(d.name for d in candidates)[:5])
        raise UserError(f"artifact prefix '{ref}' is ambiguous ({names}); give more characters")
    art = _load(candidates[0])
    if stage is not None and art.stage != stage:
        raise UserError(f"artifact {art.id} is a {art.stage} artifact, but a {stage} artifact is needed here")
    return art


def verify(art: Artifact) -> list[str]:
    """Problems found by re-hashing every file against the manifest (empty list = intact)."""
    problems = []
    m = art.manifest
    payload = {"stage": m.get("stage"), "schema": m.get("schema_version"), "config": m.get("config"),
               "inputs": m.get("inputs")}
    recomputed = f"{m.get('stage')}-{hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]}"
    if recomputed != art.id or m.get("id") != art.id:
        problems.append(f"{MANIFEST}: config and inputs hash to {recomputed}, not {art.id} (edited by hand?)")
    files = m.get("files")
    if not isinstance(files, dict) or not files:
        return problems + [f"{MANIFEST}: the file table is missing or malformed"]
    for rel, info in files.items():
        problem = _file_problem(art.path / rel, info)
        if problem:
            problems.append(f"{rel}: {problem}")
    return problems


def _file_problem(p: Path, info: Any) -> str | None:
    """Why `p` does not match its manifest entry {size, sha256}, or None when it does."""
    if not isinstance(info, dict) or not isinstance(info.get("size"), int) or not isinstance(info.get("sha256"), str):
        return f"its {MANIFEST} entry is malformed"
    if not p.is_file():
        return "missing"
    if p.stat().st_size != info["size"]:
        return f"size {p.stat().st_size} != {info['size']}"
    if sha256_file(p) != info["sha256"]:
        return "checksum mismatch"
    return None


def _files(art: Artifact) -> dict:
    files = art.manifest.get("files")
    return files if isinstance(files, dict) else {}


def checked_path(art: Artifact, rel: str) -> Path:
    """Path of a file in an artifact after checking it against the manifest checksum."""
    p = art.path / rel
    if _file_problem(p, _files(art).get(rel)) is not None:
        raise UserError(f"artifact {art.id} is corrupt ({rel} fails its checksum); remove it with "
                        f"`tselect rm {art.id}` and rerun the command that made it")
    return p


def check_small_files(art: Artifact, max_bytes: int = 1 << 16) -> None:
    """Check every file of at most `max_bytes` against the manifest (metadata, done masks, ...).

    Cheap even for a 16 GB feature store; big zarr chunks carry their own crc32c instead.
    """
    for rel, info in _files(art).items():
        if not isinstance(info, dict) or not isinstance(info.get("size"), int) or info["size"] <= max_bytes:
            checked_path(art, rel)


def open_features(art: Artifact):
    """A featurize artifact's store (store.Features) after checking its metadata against the manifest."""
    from tselect import store

    check_small_files(art)
    return store.open_features(art.path)


def remove(root: Path, aid: str) -> None:
    with locked(root, aid):
        shutil.rmtree(final_dir(root, aid), ignore_errors=True)
        shutil.rmtree(final_dir(root, aid).with_suffix(".part"), ignore_errors=True)
