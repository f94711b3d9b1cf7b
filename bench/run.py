"""Run benchmarks: every module `bench/<name>_bench.py` that defines `main(argv) -> int | None`.

    python -m bench.run                      # all benchmarks, default sizes
    python -m bench.run select --n 100000    # one benchmark; the rest of argv goes to it
    python -m bench.run --list
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

SUFFIX = "_bench"


def discover() -> dict[str, str]:
    """{short name: module name} for bench/*_bench.py, sorted by name."""
    here = Path(__file__).parent
    return {p.stem[: -len(SUFFIX)]: f"bench.{p.stem}" for p in sorted(here.glob(f"*{SUFFIX}.py"))}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    found = discover()
    if argv[:1] == ["--list"]:
        print("\n".join(found))
        return 0
    if argv and not argv[0].startswith("-"):
        name, rest = argv[0], argv[1:]
        if name not in found:
            print(f"error: no benchmark '{name}'; available: {', '.join(found)}", file=sys.stderr)
            return 2
        return _run(found[name], rest)
    if argv:
        print("error: name a benchmark before its options, e.g. `python -m bench.run select --n 1000`",
              file=sys.stderr)
        return 2
    status = 0
    for module in found.values():
        status = max(status, _run(module, []))
    return status


def _run(module: str, argv: list[str]) -> int:
    mod = importlib.import_module(module)
    if not callable(getattr(mod, "main", None)):
        print(f"skipping {module}: it has no main(argv)", file=sys.stderr)
        return 0
    print(f"== {module} {' '.join(argv)}", file=sys.stderr, flush=True)
    return int(mod.main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
