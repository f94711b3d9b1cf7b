"""File primitives every writer shares: atomic replace, exclusive flock, sha256 of a file.

A shared core below every stage (no tselect imports). Atomic writes go to `<name>.<pid>.<tid>.tmp`
beside the target and are renamed over it, so a reader sees the old file or the new one, never
half of one, and concurrent writers never share a temporary; artifacts sweep `*.tmp` a killed
writer left behind before writing a manifest.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_BLOCK = 1 << 20  # hash 1 MiB at a time: flat memory for any file size


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` in one rename."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only still there when writing failed


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` (text is UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


@contextmanager
def held(fd: int) -> Iterator[None]:
    """Hold an exclusive flock on the open file `fd` for the block, then unlock and close it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextmanager
def flock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path` (created if missing; never through a link) for the block.

    flock is per open file description: threads of one process need their own lock as well.
    """
    with held(os.open(lock_path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o644)):
        yield
