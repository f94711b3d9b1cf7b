"""Content-addressed artifacts: id = hash(stage, schema version, config, input ids).

Layout: `<root>/<stage>/<id>/` holding the stage's files plus `manifest.json`, written last
inside `<id>.part/` and then renamed, so a directory without `.part` is always complete.
A per-artifact `flock` serializes identical concurrent runs: the second waits, then finds the
finished artifact and returns its id. The kernel drops the lock when a process dies, so a
killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tselect import __version__
from tselect.errors import UserError
from tselect.files import atomic_write, held, sha256_file

SCHEMA_VERSION = 1
# Stages whose content changed for the same config: finetune 2 = at least 8 optimizer steps, all at
# lr > 0 (finetune.fit_schedule); cells embed finetune results, so they change with it.
STAGE_SCHEMA = {"finetune": 2, "cell": 2}
MANIFEST = "manifest.json"
STAGES = ("warmup", "featurize", "select", "scores", "distance", "finetune", "evaluate", "cell", "experiment", "report")
# Ids are the only names built from data on disk (manifests, inputs, user refs): nothing else
# may reach a path. A ref is a full id or a prefix of one.
ID_PATTERN = re.compile(r"([a-z]+)-[0-9a-f]{16}")
REF_PATTERN = re.compile(r"[a-z]+(-[0-9a-f]{0,16})?")


def schema_of(stage: str) -> int:
    return STAGE_SCHEMA.get(stage, SCHEMA_VERSION)


def is_id(value: Any) -> bool:
    """A well-formed artifact id of a known stage (`<stage>-<16 hex>`)."""
    m = ID_PATTERN.fullmatch(value) if isinstance(value, str) else None
    return bool(m) and m.group(1) in STAGES


def check_id(value: Any, where: str) -> str:
    if not is_id(value):
        raise UserError(f"{where}: {str(value)[:80]!r} is not an artifact id (<stage>-<16 hex digits>); "
                        "the store was edited by hand: remove the damaged artifact with `tselect rm ID`")
    return value


def store_root(store: str | os.PathLike | None = None) -> Path:
    """`--store`, else `$TSELECT_STORE`, else `./.tselect`."""
    return Path(store or os.environ.get("TSELECT_STORE") or ".tselect")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def compute_id(stage: str, config: dict[str, Any], inputs: dict[str, str]) -> str:
    """`<stage>-<16 hex>` from everything that determines the artifact's content."""
    payload = {"stage": stage, "schema": schema_of(stage), "config": config, "inputs": inputs}
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
    """`<root>/<stage>/<id>`; refuses anything but a well-formed id, and links leading out of the store."""
    check_id(aid, "artifact id")
    d = Path(root) / aid.rsplit("-", 1)[0] / aid
    inside_store(root, d)
    return d


def inside_store(root: Path, path: Path) -> Path:
    """`path` after checking that, links followed, it stays inside the store `root`."""
    real_root, real = Path(root).resolve(), Path(path).resolve()
    if real != real_root and real_root not in real.parents:
        raise UserError(f"{path} leads outside the store {root} (a symbolic link?); remove the link and rerun")
    return Path(path)


def exists(root: Path, aid: str) -> bool:
    """A finished artifact `aid` is in the store (False for anything that is not an id)."""
    return is_id(aid) and (final_dir(root, aid) / MANIFEST).is_file()


def file_table(directory: Path) -> dict[str, dict[str, Any]]:
    """Every file under `directory` (except the manifest) → size and sha256."""
    table = {}
    for p in sorted(directory.rglob("*")):
        if p.is_symlink():
            raise UserError(f"{p} is a symbolic link inside the store; remove {directory} and rerun")
        if p.is_file() and p.name != MANIFEST:
            table[p.relative_to(directory).as_posix()] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    return table


def _lock_fd(root: Path, aid: str) -> int:
    lock_path = final_dir(root, aid).with_suffix(".lock")
    inside_store(root, lock_path)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(lock_path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise UserError(f"store directory {root} is not writable ({e.strerror}); pass --store DIR or set TSELECT_STORE to a writable directory") from None


@contextmanager
def locked(root: Path, aid: str) -> Iterator[None]:
    """The artifact's exclusive lock: one writer (or `rm`) at a time, and none while it is being read."""
    _unpin(aid)  # this process's own read pin would deadlock its exclusive lock
    with held(_lock_fd(root, aid)):
        yield


_PINS: dict[str, int] = {}  # artifact id → fd holding a shared lock for the rest of this process


def pin(root: Path, aid: str) -> None:
    """Hold a shared lock on an artifact this process reads, until it exits: `rm` cannot delete it meanwhile.

    A read-only store cannot be locked (nor can `rm` delete from it): then reading goes unpinned.
    """
    if aid in _PINS or len(_PINS) >= _max_pins():
        return
    lock_path = final_dir(root, aid).with_suffix(".lock")
    try:
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o644)
    except OSError:
        return
    fcntl.flock(fd, fcntl.LOCK_SH)  # waits for a running `rm` (then the artifact is gone) or writer
    _PINS[aid] = fd


def _max_pins() -> int:
    """Pins stay well inside the open-file limit (raised to its hard maximum once)."""
    import resource

    inf = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 16 if hard == inf else min(hard, 1 << 16)
    if soft != inf and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return max(64, (1 << 16 if soft == inf else soft) // 2)


def _unpin(aid: str) -> None:
    fd = _PINS.pop(aid, None)
    if fd is not None:
        os.close(fd)


def _check_inputs_present(root: Path, inputs: dict[str, Any]) -> None:
    """A result is published only if every input artifact still exists (none vanished mid-read)."""
    for key, value in inputs.items():
        for aid in str(value).split(","):
            if is_id(aid) and not exists(root, aid):
                raise UserError(f"input {key} {aid} was deleted while this command read it; nothing was published: "
                                "recreate it and rerun the command")


def _reject_links(part: Path) -> None:
    """A resumed .part may hold only what tselect wrote: no symbolic links that lead elsewhere."""
    for p in [part, *part.rglob("*")]:
        if p.is_symlink():
            raise UserError(f"{p} is a symbolic link inside the store; remove {part} and rerun")


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
        _drop_damaged(root, aid)
        part = _part_dir(root, aid)
        if part.exists() and not resume:
            shutil.rmtree(part)
        fresh = not part.exists()
        part.mkdir(parents=True, exist_ok=True)
        _reject_links(part)
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
        _check_inputs_present(root, inputs)
        _finish(build, config, inputs, time.time() - started)
    return aid


def _part_dir(root: Path, aid: str) -> Path:
    """`<id>.part`, refused when it is a link (a planted link would send the writer outside the store)."""
    part = final_dir(root, aid).with_suffix(".part")
    if part.is_symlink():
        raise UserError(f"{part} is a symbolic link; tselect writes only inside its store: remove it and rerun")
    return part


def damaged_dirs(root: Path) -> list[Path]:
    """Finished-looking artifact directories without a manifest (deleted by hand or by a disk fault)."""
    if not Path(root).is_dir():
        return []
    return sorted(d for d in Path(root).glob("*/*") if is_id(d.name) and d.is_dir() and not d.is_symlink()
                  and not (d / MANIFEST).exists())


def _drop_damaged(root: Path, aid: str) -> None:
    """Under the artifact's lock: a final directory without manifest.json cannot be trusted; rebuild it."""
    d = final_dir(root, aid)
    if d.is_symlink():
        raise UserError(f"{d} is a symbolic link; tselect writes only inside its store: remove it and rerun")
    if d.is_dir() and not (d / MANIFEST).exists():
        from tselect import progress

        progress.note(f"{aid}: found without its {MANIFEST} (damaged); rebuilding it")
        shutil.rmtree(d)


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
    with locked(root, aid):
        if exists(root, aid):
            return aid, True
        _drop_damaged(root, aid)
        part = _part_dir(root, aid)
        part.mkdir(parents=True, exist_ok=True)
        _reject_links(part)
        if not (part / PENDING).is_file():  # tmp + rename: a reader never sees half a file
            atomic_write(part / PENDING, canonical_json({"stage": stage, "config": config, "inputs": inputs}))
    build = Build(aid, stage, part)
    started = time.time()
    write(build)
    return aid, finish_if_complete(root, aid, complete, build, time.time() - started)


def finish_if_complete(root: Path, aid: str, complete: Callable[[Path], bool], build: Build | None = None,
                       wall: float = 0.0) -> bool:
    with locked(root, aid):
        if exists(root, aid):
            return True
        _drop_damaged(root, aid)
        part = _part_dir(root, aid)
        if not part.is_dir() or not (part / PENDING).is_file() or not complete(part):
            return False
        pending = json.loads((part / PENDING).read_text())
        _reject_links(part)
        _check_inputs_present(root, pending["inputs"])
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
        "id": build.id, "stage": build.stage, "schema_version": schema_of(build.stage),
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


def remove(root: Path, aid: str) -> None:
    """Delete an artifact and its .part, under its exclusive lock taken without waiting: a command
    that reads the artifact (resolve pins it) or writes it makes `rm` refuse instead."""
    _unpin(aid)
    d = final_dir(root, aid)
    fd = _lock_fd(root, aid)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"artifact {aid} is in use by a running tselect command (reading or writing it); "
                            f"rerun `tselect rm {aid}` when that command has finished") from None
        for target in (d, d.with_suffix(".part")):
            if target.is_symlink():
                target.unlink()  # the link itself, never what it points to
            elif target.exists():
                shutil.rmtree(target)
    finally:
        os.close(fd)
