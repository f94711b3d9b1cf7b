"""Session fixtures for the reliability suite: toy inputs and reference (uninterrupted) stores.

Reference runs are made once per session and shared by the interruption, corruption and
determinism tests; tests never write into a reference store (they copy it first).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.reliability import helpers as H

FT_ARGS = ("--epochs", "2", "--batch-size", "4", "--effective-batch-size", "8", "--lr", "1e-3")


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
    """64 pool rows → vectors features → random selection → tiny LoRA finetune → evaluate."""
    d = tmp_path_factory.mktemp("chain")
    inp = H.make_vectors_inputs(d / "in", 64)
    st = d / "ref"
    f = H.last_line(H.tselect(*H.vectors_args(inp), store=st))
    s = H.last_line(H.tselect("select", "--features", f, "--selector", "round_robin", store=st))
    ft_args = ["finetune", "--selection", s, "--budget", "32", "--model", tiny_model_dir, *FT_ARGS]
    ft = H.last_line(H.tselect(*ft_args, store=st))
    ev_args = ["evaluate", "--target", inp["query"], "--finetune", ft]
    ev = H.last_line(H.tselect(*ev_args, store=st))
    return {"inputs": inp, "dir": d, "ref": st, "features": f, "selection": s, "finetune": ft,
            "ft_args": ft_args, "evaluate": ev, "ev_args": ev_args, "model": tiny_model_dir}


def copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
