"""The house plan: every stage in its own package, shared cores below all stages, no import up.

Every `import tselect.X` / `from tselect.X import ...` in the package (function-level ones too)
is checked against the layer order below; a new module must be placed in it on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tselect

PKG = Path(tselect.__file__).parent

# Shared cores: below every stage; they import only each other.
CORES = {"errors", "progress", "artifacts", "catalog", "store", "similarity", "metrics", "data", "models", "assets",
         "training", "scoring", "lineage", "composition", "tokens", "identity", "files", "validate", "budget", "scoring_fast", "distributed", "runtime", "__init__"}
# Stages, lowest first: a stage may import cores and stages before it, never one after it.
STAGES = ["warmup", "featurize", "scores", "select", "distance", "finetune", "evaluate", "experiment", "report"]
TOP = {"cli", "__main__"}  # the command line imports everything


def _layer(top: str) -> int:
    if top in CORES:
        return 0
    if top in STAGES:
        return 1 + STAGES.index(top)
    assert top in TOP, f"tselect.{top} has no place in the layer order of tests/test_layers.py; add it on purpose"
    return 1 + len(STAGES)


def _imports(path: Path) -> set[str]:
    """Top-level tselect subpackages/modules a file imports (anywhere in it)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tselect":
            parts = node.module.split(".")
            if len(parts) > 1:
                out.add(parts[1])
            else:
                out.update(a.name for a in node.names if (PKG / a.name).is_dir() or (PKG / f"{a.name}.py").is_file())
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("tselect."))
    return out


def _top(path: Path) -> str:
    rel = path.relative_to(PKG).parts
    return rel[0] if len(rel) > 1 else Path(rel[0]).stem


def test_every_stage_has_its_own_package_with_config_and_run():
    import importlib

    for stage in STAGES:
        assert (PKG / stage / "__init__.py").is_file(), f"stage {stage} must live in tselect/{stage}/"
        mod = importlib.import_module(f"tselect.{stage}")
        assert callable(getattr(mod, "run", None)), f"tselect.{stage} needs run(cfg, root) -> id"
        configs = [n for n in dir(mod) if n.endswith("Config") and isinstance(getattr(mod, n), type)]
        assert configs, f"tselect.{stage} must expose its Config"


def test_no_import_runs_back_up():
    bad = [f"{path.relative_to(PKG.parent)} imports tselect.{target}"
           for path in sorted(PKG.rglob("*.py")) for target in sorted(_imports(path))
           if target != _top(path) and _layer(target) > _layer(_top(path))]
    assert not bad, "imports running up the layers:\n" + "\n".join(bad)


def test_no_stage_is_dispatched_by_name():
    for path in sorted(PKG.rglob("*.py")):
        text = path.read_text()
        assert "import_module(" not in text, f"{path}: call stage functions directly, not by module name"
