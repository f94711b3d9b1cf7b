"""Hugging Face hub ids, resolved from the local HF cache (offline unless downloads are allowed).

`huggingface_hub.snapshot_download(..., local_files_only=True)` maps `org/name` (and a revision:
a branch, tag or commit) to the snapshot directory already in `$HF_HUB_CACHE` / `$HF_HOME`,
without touching the network. Downloads happen only with `--allow-download`
(`TSELECT_ALLOW_DOWNLOAD=1`). Artifacts never hash the name: models enter ids by their file
fingerprint, data by the content hash of their rows; the resolved commit is recorded.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from tselect.errors import UserError

# `org/name` or `org/name@revision`: what the hub and `hf download` accept as a repo id.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
ALLOW_ENV = "TSELECT_ALLOW_DOWNLOAD"
# A missing `dir/file.jsonl` is a missing file, not a repo named `file.jsonl`.
_FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv", ".tsv", ".arrow", ".npy", ".txt", ".gguf",
                  ".safetensors", ".bin")


def downloads_allowed() -> bool:
    return os.environ.get(ALLOW_ENV, "").lower() in ("1", "true", "yes")


def looks_like_hub_id(spec: str) -> bool:
    """True for `org/name[@rev]` that is not an existing local path (a local path always wins)."""
    if not _HUB_ID.match(spec) or spec.split("@")[0].lower().endswith(_FILE_SUFFIXES):
        return False
    return not Path(spec).expanduser().exists()


def split_revision(spec: str, revision: str | None = None) -> tuple[str, str | None]:
    """`org/name@rev` -> (`org/name`, `rev`); an explicit `revision` must agree with the suffix."""
    repo, _, suffix = spec.partition("@")
    if suffix and revision and suffix != revision:
        raise UserError(f"{spec!r} names revision {suffix!r} but --revision is {revision!r}; give one of them")
    return repo, suffix or revision


@dataclass(frozen=True)
class Snapshot:
    repo_id: str
    repo_type: str  # "model" or "dataset"
    path: Path  # the snapshot directory: <cache>/<type>s--org--name/snapshots/<commit>
    commit: str


def resolve_snapshot(spec: str, repo_type: str, revision: str | None = None, flag: str = "--model") -> Snapshot:
    """The local snapshot of a hub repo; offline from the cache unless downloads are allowed."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    repo_id, rev = split_revision(spec, revision)
    allow = downloads_allowed()
    try:
        path = Path(snapshot_download(repo_id, repo_type=repo_type, revision=rev, cache_dir=hub_cache(),
                                      local_files_only=not allow))
    except LocalEntryNotFoundError:
        kind = "--repo-type dataset " if repo_type == "dataset" else ""
        at = f" --revision {rev}" if rev else ""
        raise UserError(f"{flag} {spec!r}: no such local path, and not in the local Hugging Face cache ({hub_cache()}); "
                        f"tselect does not "
                        f"download by default; run `hf download {kind}{repo_id}{at}` once, or pass --allow-download "
                        "(or a local path)") from None
    except HFValidationError as e:
        raise UserError(f"{flag} {spec!r} is not a valid hub id ({_first_line(e)}); pass org/name or a local path") from None
    except Exception as e:  # network and HTTP errors with --allow-download: one line, not a traceback
        raise UserError(f"{flag} {spec!r}: cannot fetch from the hub ({_first_line(e)}); check the id and revision, "
                        "or download it with `hf download` and run offline") from None
    return Snapshot(repo_id, repo_type, path, path.name)


def hub_cache() -> str:
    """`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else huggingface_hub's default, read at call time."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return str(constants.HF_HUB_CACHE)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
