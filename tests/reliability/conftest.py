"""Session fixtures for the reliability suite: toy inputs and reference (uninterrupted) stores.

Reference runs are made once per session and shared by the interruption, corruption and
determinism tests; tests never write into a reference store (they copy it first).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.reliability import helpers as H
from tests.reliability import scenarios as S


@pytest.fixture(scope="session")
def big_vectors(tmp_path_factory) -> dict:
    """3,000 pool rows with 8-d vectors: 3 pool chunks (1,024 rows max per chunk) + 1 query chunk."""
    d = tmp_path_factory.mktemp("bigvec")
    inp = H.make_vectors_inputs(d / "in", 3000)
    args = H.vectors_args(inp)
    ref = d / "ref"
    aid = H.last_line(H.tselect(*args, store=ref))
    return {"inputs": inp, "args": args, "ref": ref, "aid": aid, "dir": d}


@pytest.fixture(scope="session")
def small_chain(tmp_path_factory, tiny_model_dir) -> dict:
    """64 pool rows → vectors features → round_robin selection → tiny LoRA finetune → evaluate."""
    return S.build_chain(tmp_path_factory.mktemp("chain"), tiny_model_dir)


def copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def wide_vectors(tmp_path_factory) -> dict:
    """3,000 pool rows of 64-d vectors: 128 KiB pool chunks, above the size whose sha256 is checked
    when features are opened, so only the per-chunk checks on read can catch their damage."""
    d = tmp_path_factory.mktemp("widevec")
    inp = H.make_vectors_inputs(d / "in", 3000, dim=64)
    args = H.vectors_args(inp)
    ref = d / "ref"
    aid = H.last_line(H.tselect(*args, store=ref))
    return {"inputs": inp, "args": args, "ref": ref, "aid": aid, "dir": d}
