"""Reading the store: find an artifact by id or prefix, check its manifest and files before any
use, list what the store holds. Writing (ids, locks, `.part`, publishing) is tselect.artifacts.

Every read goes through `resolve` (or `find_unchecked` for commands that must see damaged
artifacts, such as `rm` and `verify`): the manifest's id, stage and hash are checked, and the
artifact is pinned with a shared lock so that `rm` cannot delete it while this process reads it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tselect.artifacts import MANIFEST, REF_PATTERN, Artifact, canonical_json, inside_store, is_id, pin
from tselect.errors import UserError
from tselect.files import sha256_file


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
    pin(root, d.name)
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
