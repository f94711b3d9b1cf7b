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


def _pin(root: Path, aid: str) -> None:
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


def list_artifacts(root: Path) -> list[Artifact]:
    out = []
    for stage_dir in sorted(p for p in root.glob("*") if p.is_dir()):
        for d in sorted(stage_dir.iterdir()):
            if is_id(d.name) and d.is_dir() and (d / MANIFEST).is_file():
                out.append(_load(d))
    return out


def _load(d: Path) -> Artifact:
    """The manifest as written, with its id and stage taken from the directory (never from the file)."""
    try:
        manifest = json.loads((d / MANIFEST).read_text())
        if not isinstance(manifest, dict):
            raise TypeError
        return Artifact(d.name, d.parent.name, d, manifest)
    except (OSError, UnicodeDecodeError, ValueError, TypeError):  # ValueError: JSON (also ints of 5,000 digits)
        raise UserError(f"artifact {d.name} has a corrupt manifest; delete {d} and rerun the command that made it") from None


def manifest_problems(art: Artifact) -> list[str]:
    """What is wrong with a manifest's own fields: id grammar and location, config/inputs hashing to
    the id, a non-empty table of safe relative file names. Every read checks these (see resolve)."""
    m = art.manifest
    if m.get("id") != art.id or m.get("stage") != art.stage or not is_id(art.id) or not art.id.startswith(art.stage + "-"):
        return [f"{MANIFEST}: id {str(m.get('id'))[:80]!r} / stage {str(m.get('stage'))[:20]!r} do not match "
                f"its directory {art.stage}/{art.id}"]
    problems = []
    config, inputs = m.get("config"), m.get("inputs")
    if not isinstance(config, dict) or not isinstance(inputs, dict) or not all(isinstance(v, str) for v in inputs.values()):
        problems.append(f"{MANIFEST}: config or inputs are missing or malformed")
    else:
        payload = {"stage": art.stage, "schema": m.get("schema_version"), "config": config, "inputs": inputs}
        recomputed = f"{art.stage}-{hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]}"
        if recomputed != art.id:
            problems.append(f"{MANIFEST}: config and inputs hash to {recomputed}, not {art.id} (edited by hand?)")
    files = m.get("files")
    if not isinstance(files, dict) or not files:
        problems.append(f"{MANIFEST}: the file table is missing or malformed")
    else:
        problems += [f"{MANIFEST}: file name {rel[:80]!r} leaves the artifact" for rel in files if not _safe_rel(rel)]
    return problems


def _safe_rel(rel: Any) -> bool:
    """A relative POSIX path below the artifact: no absolute path, no '..', no empty parts."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel:
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


def _candidates(root: Path, ref: str) -> list[Path]:
    """Directories named by an id or id prefix (ref checked against the id grammar first)."""
    ref = str(ref).strip()
    if not REF_PATTERN.fullmatch(ref):
        raise UserError(f"'{ref[:80]}' is not an artifact id or id prefix (<stage>-<hex>); "
                        f"list them with `tselect ls --store {root}`")
    found = [d for d in Path(root).glob(f"*/{ref}*") if is_id(d.name) and d.is_dir()]
    for d in found:
        inside_store(root, d)
    return found


def _unique(root: Path, ref: str, found: list[Path]) -> Path:
    if not found:
        raise UserError(f"no artifact '{ref}' in store {root}; list them with `tselect ls --store {root}`")
    if len(found) > 1:
        names = ", ".join(sorted(d.name for d in found)[:5])
        raise UserError(f"artifact prefix '{ref}' is ambiguous ({names}); give more characters")
    return found[0]


def resolve(root: Path, ref: str, stage: str | None = None) -> Artifact:
    """An artifact by id or unique id prefix (optionally of a required stage), ready to read.

    Its manifest must pass manifest_problems (an edited config, an emptied file table or a forged
    id is refused, not used), and the artifact is pinned: `tselect rm` cannot delete it while this
    process runs.
    """
    d = _unique(root, ref, [d for d in _candidates(root, ref) if (d / MANIFEST).is_file()])
    _pin(root, d.name)
    if not (d / MANIFEST).is_file():  # deleted by an `rm` we waited for
        raise UserError(f"artifact {d.name} was just deleted from store {root}; rerun the command that made it")
    art = _load(d)
    problems = manifest_problems(art)
    if problems:
        raise UserError(f"artifact {art.id} has a damaged manifest ({problems[0]}); remove it with "
                        f"`tselect rm {art.id}` and rerun the command that made it")
    if stage is not None and art.stage != stage:
        raise UserError(f"artifact {art.id} is a {art.stage} artifact, but a {stage} artifact is needed here")
    return art


def find_unchecked(root: Path, ref: str) -> Artifact | Path:
    """For show/verify/rm: the artifact as it is (manifest unchecked), or the bare directory of a
    damaged one that lost its manifest."""
    found = _candidates(root, ref)
    with_manifest = [d for d in found if (d / MANIFEST).is_file()]
    d = _unique(root, ref, with_manifest or found)
    return _load(d) if (d / MANIFEST).is_file() else d


def verify(art: Artifact) -> list[str]:
    """Problems found by checking the manifest and re-hashing every file against it (empty list = intact)."""
    problems = manifest_problems(art)
    files = art.manifest.get("files")
    if not isinstance(files, dict) or not files:
        return problems
    for rel, info in files.items():
        problem = _file_problem(art.path, rel, info)
        if problem:
            problems.append(f"{str(rel)[:80]}: {problem}")
    return problems


def _file_problem(base: Path, rel: Any, info: Any) -> str | None:
    """Why `base/rel` does not match its manifest entry {size, sha256}, or None when it does.

    Names leaving the artifact and links are problems: nothing outside the artifact is ever read.
    """
    if not _safe_rel(rel):
        return "its name leaves the artifact"
    if not isinstance(info, dict) or not isinstance(info.get("size"), int) or not isinstance(info.get("sha256"), str):
        return f"its {MANIFEST} entry is malformed"
    p = base / rel
    real_base = base.resolve()
    if p.is_symlink() or real_base not in p.resolve().parents:
        return "it is a link leading out of the artifact"
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
    problem = _file_problem(art.path, rel, _files(art).get(rel))
    if problem is not None:
        raise UserError(f"artifact {art.id} is corrupt ({rel}: {problem}); remove it with "
                        f"`tselect rm {art.id}` and rerun the command that made it")
    return art.path / rel


def check_small_files(art: Artifact, max_bytes: int = 1 << 16) -> None:
    """Check every file of at most `max_bytes` against the manifest (metadata, done masks, ...),
    and that every bigger one is there with its recorded size.

    Cheap even for a 16 GB feature store; big zarr chunks carry their own crc32c, checked as read.
    """
    for rel, info in _files(art).items():
        if not isinstance(info, dict) or not isinstance(info.get("size"), int) or info["size"] <= max_bytes:
            checked_path(art, rel)
            continue
        p = art.path / rel
        if not _safe_rel(rel) or not p.is_file() or p.is_symlink() or p.stat().st_size != info["size"]:
            raise UserError(f"artifact {art.id} is corrupt ({rel} is missing or changed size); remove it with "
                            f"`tselect rm {art.id}` and rerun the command that made it")


def open_features(art: Artifact):
    """A featurize artifact's store (store.Features) after checking its metadata against the manifest."""
    from tselect import store

    check_small_files(art)
    return store.open_features(art.path)


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
