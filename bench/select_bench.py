"""Selection at pool scale: wall time, CPU time and peak RSS of every selector that reads the
similarity (topk, round_robin, uot, knn_uniform, less_task) on a synthetic fp16 feature store,
against the bare chunked similarity matmul over the same store.

    python -m bench.run select --n 1000000 --m 1000 --dim 8192 --budget 10000
    python -m bench.run select --agreement-n 20000   # + uot's candidate path against the dense solve

The store (`bench/data/select-n{N}-m{M}-d{D}-s{seed}/features.zarr`, the featurize layout
and chunking) is generated once, resumably. Pool and query rows are unit-normalized
`center + 1.5·noise` with 64 Gaussian centers, so queries share neighbourhoods and
round-robin sees real collisions. Every case runs in its own subprocess (peak RSS per case),
after the store's pages are evicted from the page cache (every case reads from disk).
"bare" = read a chunk, cast to fp32, one matmul (torch when installed), discard: the floor
every selector pays per pass. less_task gets 8 synthetic query subtasks (query i → i mod 8).
Results: bench/results/select.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
CASES = ("bare", "topk", "round_robin", "uot", "knn_uniform", "less_task")
DEFAULT_CASES = "bare,topk,round_robin,uot,knn_uniform,less_task,bare"  # bare twice brackets drift
TARGETS = {"ratio_vs_bare": 1.5, "peak_rss_gb": 2.0, "applies_to": list(CASES[1:])}


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.run select", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="pool rows N")
    ap.add_argument("--m", type=int, default=1000, help="query rows M")
    ap.add_argument("--dim", type=int, default=8192, help="feature dim d")
    ap.add_argument("--budget", type=int, default=10_000, help="selection budget k")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", default=DEFAULT_CASES, help=f"comma list from {CASES} (repeats allowed)")
    ap.add_argument("--data", type=Path, default=HERE / "data")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--no-evict", action="store_true", help="keep the store in the page cache between cases")
    ap.add_argument("--agreement-n", type=int, default=0,
                    help="also compare uot's candidate path with the dense solve on N rows in memory (0 = skip)")
    ap.add_argument("--agreement-m", type=int, default=1000, help="query rows M of the agreement check")
    ap.add_argument("--agreement-dim", type=int, default=1024, help="feature dim of the agreement check")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: measure one case, print JSON
    ap.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# ---- synthetic store -------------------------------------------------------------------

def ensure_store(a: argparse.Namespace) -> Path:
    """The feature artifact dir for these sizes, generating (or finishing) it if needed."""
    from tselect import store
    from tselect.featurize.common import resumable_chunk_rows

    art = a.data / f"select-n{a.n}-m{a.m}-d{a.dim}-s{a.seed}"
    group = art / store.FEATURES
    need = (a.n + a.m) * a.dim * 2
    if not (group / "0" / "pool").exists():
        free = shutil.disk_usage(a.data.resolve() if a.data.exists() else HERE).free
        if free < need * 1.05:
            raise SystemExit(f"error: the store needs {need / 1e9:.1f} GB but {a.data} has {free / 1e9:.1f} GB "
                             "free; pass a smaller --n or --dim, or another --data")
    group.mkdir(parents=True, exist_ok=True)
    store.open_group(group)
    centers = np.random.default_rng([a.seed, 7]).standard_normal((64, a.dim), dtype=np.float32)
    for name, n, stream in (("query", a.m, 1), ("pool", a.n, 0)):
        w = store.RowWriter(group / "0", name, n, a.dim, "float16", resumable_chunk_rows(a.dim, "float16"))
        todo, t0 = w.pending(), time.perf_counter()
        workers = os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=workers) as pool:  # RNG + cast release the GIL
            for i in range(0, len(todo), 2 * workers):  # bounded batches: at most 2 chunks per thread in memory
                batch = todo[i : i + 2 * workers]
                made = pool.map(lambda c, w=w, s=stream: _rows(a.seed, s, *w.bounds(c), centers), batch)
                for c, rows in zip(batch, made):
                    w.write(c, rows)  # one writer: the done mask is a single zarr chunk (read-modify-write)
        if todo:
            print(f"generated {name} {n}×{a.dim} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    store.set_attrs(group, {"representation": "synthetic", "dim": a.dim, "checkpoints": ["0"], "weights": [1.0],
                            "n_pool": a.n, "n_query": a.m})
    return art


def _rows(seed: int, stream: int, start: int, stop: int, centers: np.ndarray) -> np.ndarray:
    """Unit rows [stop-start, d] around random centers; seeded per chunk, so resumable."""
    from tselect.similarity import l2_normalize

    rng = np.random.default_rng([seed, stream, start])
    x = rng.standard_normal((stop - start, centers.shape[1]), dtype=np.float32)  # [n, d]
    x *= 1.5
    x += centers[rng.integers(0, centers.shape[0], size=stop - start)]
    return l2_normalize(x)


def evict(path: Path) -> None:
    """Drop the store's pages from the page cache (POSIX_FADV_DONTNEED on each file)."""
    for f in path.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# ---- one case, in a fresh process ------------------------------------------------------

def measure(case: str, art: Path, budget: int) -> dict:
    """Run one case in this process; wall time of the case only (imports done before)."""
    import warnings

    from tselect import store
    from tselect.similarity import feature_similarity

    try:
        import torch  # noqa: F401  (imported up front so no case pays for it inside the timing)
    except ImportError:
        pass
    feats = store.open_features(art)
    sim = feature_similarity(feats)
    passes = [0]
    chunks = sim.chunks

    def counted():
        passes[0] += 1
        yield from chunks()

    sim.chunks = counted
    rss_before = _rss_mb()
    load = os.getloadavg()[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        out = bare_pass(sim) if case == "bare" else _select(case, feats, sim, budget)
        seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    passes[0] += case == "bare"  # bare reads the pool once, without sim.chunks()
    return {"case": case, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "passes": passes[0],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_before_mb": round(rss_before, 1), "chunk_rows": sim.chunk_rows,
            "load_avg_1m": [round(load, 2), round(os.getloadavg()[0], 2)],
            "selected": out, "warnings": [str(w.message) for w in caught]}


def bare_pass(sim) -> int:
    """Read each chunk, cast to fp32, one matmul, discard: serial, same chunks and backend."""
    from tselect.similarity import _matmul

    pool, d = sim.pools[0], sim.pools[0].shape[1]
    matmul = _matmul(sim._q, 2.0 * sim.n_query * sim.n_pool * d)
    for start in range(0, sim.n_pool, sim.chunk_rows):
        matmul([np.asarray(pool[start : start + sim.chunk_rows], dtype=np.float32)])
    return 0


def _select(case: str, feats, sim, budget: int) -> int:
    from tselect.select.inputs import SelectInputs
    from tselect.select.registry import SELECTORS

    sel = SELECTORS[case]
    subtasks = [f"t{i % 8}" for i in range(feats.n_query)] if case == "less_task" else None
    inp = SelectInputs(n_pool=feats.n_pool, sim=sim, pool_features=feats.pools, query_features=feats.queries,
                       weights=feats.weights, query_subtasks=subtasks)
    out = sel.fn(inp, budget, sel.params(), 0)
    order = out[0] if isinstance(out, tuple) else out
    assert len(order) == budget and len(set(order.tolist())) == budget
    return int(len(order))


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all threads): a contention-robust work measure."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_case(case: str, art: Path, a: argparse.Namespace) -> dict:
    if not a.no_evict:
        evict(art)
    cmd = [sys.executable, "-m", "bench.select_bench", "--worker", case, "--store", str(art), "--budget", str(a.budget)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
    if proc.returncode != 0:
        raise SystemExit(f"error: case {case} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- report ----------------------------------------------------------------------------

def machine() -> dict:
    import numpy

    info = {"cores": os.cpu_count(), "cpu": _cpu_model(), "python": platform.python_version(),
            "numpy": numpy.__version__, "mem_total_gb": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9, 1)}
    for mod in ("torch", "zarr"):
        try:
            info[mod] = importlib_version(mod)
        except Exception:  # not installed: the numpy path is measured
            info[mod] = None
    return info


def importlib_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def summarize(results: list[dict], a: argparse.Namespace, argv: list[str]) -> tuple[dict, str]:
    store_gb = a.n * a.dim * 2 / 1e9
    base = float(np.mean([r["seconds"] for r in results if r["case"] == "bare"] or [np.nan]))
    base_cpu = float(np.mean([r["cpu_seconds"] for r in results if r["case"] == "bare"] or [np.nan]))
    for r in results:  # ratios against the mean of the bare runs
        r["store_gb_per_s"] = round(r["passes"] * store_gb / r["seconds"], 3) if r["seconds"] else None
        r["x_bare"] = round(r["seconds"] / base, 3) if base == base else None
        r["x_bare_cpu"] = round(r["cpu_seconds"] / base_cpu, 3) if base_cpu == base_cpu else None
    if base == base:
        flop = 2.0 * a.n * a.m * a.dim
        for r in results:
            r["gflop_per_s_one_pass"] = round(flop / r["seconds"] / 1e9, 1) if r["case"] == "bare" else None
    sel = [r for r in results if r["case"] != "bare"]
    met = {"wall": all(r["x_bare"] is not None and r["x_bare"] <= TARGETS["ratio_vs_bare"] for r in sel),
           "cpu": all(r["x_bare_cpu"] is not None and r["x_bare_cpu"] <= TARGETS["ratio_vs_bare"] for r in sel),
           "peak_rss": all(r["peak_rss_mb"] / 1024 <= TARGETS["peak_rss_gb"] for r in sel)}
    sizes = {"n_pool": a.n, "n_query": a.m, "dim": a.dim, "dtype": "float16", "store_gb": round(store_gb, 2),
             "budget": a.budget, "evicted_before_each_case": not a.no_evict}
    doc = {"machine": machine(), "sizes": sizes, "targets": TARGETS,
           "command": " ".join(["python -m bench.run select", *argv]),
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "targets_met": met, "cases": results}
    return doc, markdown(doc)


def markdown(doc: dict) -> str:
    s, m = doc["sizes"], doc["machine"]
    lines = [f"N={s['n_pool']:,} pool × M={s['n_query']:,} query × d={s['dim']} ({s['dtype']}, {s['store_gb']} GB), "
             f"budget {s['budget']:,}; {m['cores']} cores ({m['cpu']}), numpy {m['numpy']}, torch {m['torch']}.",
             "", "| case | wall s | × bare | CPU s | × bare CPU | passes | store GB/s | peak RSS GB | load avg |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in doc["cases"]:
        x, xc = (f"{v:.2f}" if v is not None else "–" for v in (r["x_bare"], r["x_bare_cpu"]))
        lines.append(f"| {r['case']} | {r['seconds']:.1f} | {x} | {r['cpu_seconds']:.0f} | {xc} | {r['passes']} | "
                     f"{r['store_gb_per_s']} | {r['peak_rss_mb'] / 1024:.2f} | {r['load_avg_1m'][0]}→{r['load_avg_1m'][1]} |")
    t, met = doc["targets"], doc["targets_met"]
    lines += ["", f"Command: `{doc['command']}`. × bare = against the mean of the bare runs; CPU s = user+system "
              "time of the case's process (all threads), steadier than wall time on a shared machine.",
              f"Target (every selector ≤ {t['ratio_vs_bare']}× bare, peak RSS ≤ {t['peak_rss_gb']} GB): wall "
              f"{'met' if met['wall'] else 'NOT met'}, CPU {'met' if met['cpu'] else 'NOT met'}, "
              f"peak RSS {'met' if met['peak_rss'] else 'NOT met'}."]
    lines += [f"Warning ({r['case']}): {w}" for r in doc["cases"] for w in r["warnings"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    a = parse(argv)
    if a.worker:
        print(json.dumps(measure(a.worker, a.store, a.budget)))
        return 0
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in CASES]
    if bad:
        raise SystemExit(f"error: unknown case(s) {bad}; choose from {CASES}")
    art = ensure_store(a)
    results = []
    for case in cases:
        results.append(run_case(case, art, a))
        print(f"{case}: {results[-1]['seconds']:.1f}s, peak {results[-1]['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    doc, table = summarize(results, a, argv)
    if a.agreement_n:
        from bench.select_agreement import agreement
        from bench.select_agreement import markdown as agreement_md

        doc["agreement"] = agreement(a.agreement_n, a.agreement_m, a.agreement_dim, a.seed)
        table += "\n".join(agreement_md(doc["agreement"])) + "\n"
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "select.json").write_text(json.dumps(doc, indent=1) + "\n")
    (a.out / "select.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
