"""The checkpoint path as each benchmarked tool runs it, one fresh process per case, and the
files the peer tool reads. Shared by `bench.peers_bench` (floor, bergson, tselect) and
`bench.less_bench` (floor, tselect).

    python -m bench.ckpt_workers --worker floor|tselect|bergson --data DIR --run-dir DIR ...   # internal

prepare() writes DIR/inputs.json, DIR/rows.jsonl (the rows' token ids and label masks) and the
bergson view of the checkpoint (adapter dir + optimizer.pt holding exp_avg_sq by parameter name).
A worker reads them, does its case and writes its phase timings to RUN_DIR/result.json;
run_case() spawns it and measures the whole process (wall time, peak RSS via os.wait4).
Imports only the standard library at top: the bergson worker runs in the peer venv.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
ADAPTER = "default"


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.ckpt_workers", description=__doc__.splitlines()[0])
    ap.add_argument("--worker", required=True, choices=("floor", "tselect", "bergson", "ckpt"))
    ap.add_argument("--data", type=Path, required=True, help="where prepare() wrote inputs.json")
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dim", type=int, default=8192, help="tselect's projection dim")
    ap.add_argument("--bergson-proj", type=int, default=6, help="bergson --projection_dim (p×p per module)")
    return ap.parse_args(argv)


# ---- pure parts: what the peer reads ----------------------------------

def jsonl_lines(rows) -> str:
    """rows.jsonl: one {"id", "input_ids", "labels"} object per EncodedRow-like row (labels -100 off-loss)."""
    return "".join(json.dumps({"id": r.id, "input_ids": list(r.input_ids), "labels": list(r.labels)}) + "\n"
                   for r in rows)


def peft_key(name: str, adapter: str = ADAPTER) -> str:
    """model.named_parameters() name → the key peft saves it under (the adapter name dropped)."""
    suffix = f".{adapter}.weight"
    if not name.endswith(suffix):
        raise ValueError(f"{name!r} is not a LoRA weight of adapter {adapter!r}")
    return name[: -len(suffix)] + ".weight"


def optimizer_state(exp_avg_sq: dict, adapter: str = ADAPTER) -> dict:
    """A torch optimizer state dict holding only the second moments, each entry naming its
    parameter (bergson prefers a recorded param_name over the positional index)."""
    keys = sorted(exp_avg_sq)
    state = {i: {"exp_avg_sq": exp_avg_sq[k], "param_name": peft_key(k, adapter)} for i, k in enumerate(keys)}
    return {"state": state, "param_groups": [{"params": list(range(len(keys)))}]}


def adapter_config(config: dict, base_path: str) -> dict:
    """The checkpoint's adapter_config.json pointing at the local base model (bergson loads the base from it)."""
    return {**config, "base_model_name_or_path": base_path}


# ---- shared inputs (parent, main venv) --------------------------------------------------

def pool_rows(tok, n: int, max_length: int) -> list:
    """The first n rows of builtin:pool-small that keep a label token, encoded as the product does."""
    from tselect.data import load_dataset
    from tselect.data.tokenize import IGNORE, encode_example

    rows = []
    for ex in load_dataset("builtin:pool-small").examples:
        r = encode_example(ex, tok, max_length)
        if any(t != IGNORE for t in r.labels):
            rows.append((ex.id, r))
        if len(rows) == n:
            return rows
    raise SystemExit(f"error: builtin:pool-small has only {len(rows)} rows with label tokens at --max-length {max_length}")


class _Row:
    def __init__(self, rid, r):
        self.id, self.input_ids, self.labels = rid, r.input_ids, r.labels


def ensure_checkpoint(ckpt_data: Path, threads: int) -> Path:
    """A real warmup checkpoint dir (save_checkpoint layout) after one AdamW step; made once, cached."""
    ckpt = ckpt_data / "ckpt-1"
    if (ckpt / "state.json").exists():
        return ckpt
    t0 = time.perf_counter()
    ckpt_data.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="ckpt-1.", dir=ckpt_data))
    proc = subprocess.run([sys.executable, "-m", "bench.ckpt_workers", "--worker", "ckpt", "--threads", str(threads),
                           "--data", str(ckpt_data), "--run-dir", str(run_dir)], capture_output=True, text=True,
                          cwd=ROOT, env=child_env(argparse.Namespace(threads=threads), run_dir))
    if proc.returncode != 0:
        raise SystemExit(f"error: making the warmup checkpoint failed:\n{proc.stderr[-3000:]}")
    print(f"made warmup checkpoint {ckpt} in {time.perf_counter() - t0:.0f}s (cached)", file=sys.stderr, flush=True)
    return ckpt


def worker_ckpt(a: argparse.Namespace) -> None:
    """One optimizer step of the cpu warmup recipe on 4 pool-small rows, saved by the warmup's own
    per-epoch hook (`train_warmup`), moved to a.data/ckpt-1. A full warmup (4 epochs) costs far more
    than any benchmark here; costs per row do not depend on how far the adapter was trained."""
    import dataclasses
    import shutil

    from tselect.models import load_model, resolve_model
    from tselect.warmup import WARMUP_PRESETS, train_warmup

    _set_threads(a.threads)
    cfg = WARMUP_PRESETS["cpu"]
    one_step = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1, batch_size=2,
                                                                  effective_batch_size=4))
    base, tok = load_model(resolve_model(None))
    rows = [r for _, r in pool_rows(tok, 4, 64)]
    train_warmup(base, rows, tok.pad_token_id, one_step, a.run_dir)  # writes run_dir/ckpt-1
    shutil.rmtree(a.data / "ckpt-1", ignore_errors=True)
    os.replace(a.run_dir / "ckpt-1", a.data / "ckpt-1")
    shutil.rmtree(a.run_dir, ignore_errors=True)


def prepare(data: Path, n_rows: int, max_length: int, threads: int, ckpt_data: Path) -> dict:
    """data/rows.jsonl, the bergson view of the checkpoint (adapter + optimizer.pt) and data/inputs.json
    (paths and sizes for the workers); the warmup checkpoint is made once and cached in ckpt_data."""
    import shutil

    import torch

    from tselect.models import load_tokenizer, resolve_model
    from tselect.warmup import load_moments

    ckpt = ensure_checkpoint(ckpt_data, threads)
    model_path = str(resolve_model(None).path)
    tok = load_tokenizer(resolve_model(None))
    rows = [_Row(rid, r) for rid, r in pool_rows(tok, n_rows, max_length)]
    data.mkdir(parents=True, exist_ok=True)
    (data / "rows.jsonl").write_text(jsonl_lines(rows))
    view = data / "bergson-adapter"
    view.mkdir(exist_ok=True)
    shutil.copyfile(ckpt / "adapter_model.safetensors", view / "adapter_model.safetensors")
    config = json.loads((ckpt / "adapter_config.json").read_text())
    (view / "adapter_config.json").write_text(json.dumps(adapter_config(config, model_path), indent=2))
    _, exp_avg_sq, _ = load_moments(ckpt)
    torch.save(optimizer_state(exp_avg_sq), view / "optimizer.pt")
    inputs = {"ckpt": str(ckpt), "model": model_path, "adapter": str(view), "jsonl": str(data / "rows.jsonl"),
              "rows": len(rows), "tokens": sum(len(r.input_ids) for r in rows),
              "longest": max(len(r.input_ids) for r in rows),
              "label_tokens": sum(sum(t != -100 for t in r.labels) for r in rows)}
    (data / "inputs.json").write_text(json.dumps(inputs))
    return inputs


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# ---- workers (each its own process) ------------------------------------------------------

def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def worker_floor(a: argparse.Namespace, inputs: dict) -> dict:
    """Plain batched forward+backward of tselect's batches through the checkpoint's model."""
    from tselect.data.tokenize import batches
    from tselect.featurize.batching import row_groups
    from tselect.featurize.grads import per_example_loss
    from tselect.models import load_model, resolve_model
    from tselect.warmup import load_checkpoint

    _set_threads(a.threads)
    t0 = time.perf_counter()
    base, tok = load_model(resolve_model(None))
    model = load_checkpoint(base, Path(inputs["ckpt"]))[0]
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)  # a training step's trainable set: the adapter
    rows = [_Row(d["id"], argparse.Namespace(**d)) for d in _read_jsonl(Path(inputs["jsonl"]))]
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for idx in row_groups([len(r.input_ids) for r in rows], a.batch_size, None):
        _, ids, mask, labels = next(batches(rows, len(idx), tok.pad_token_id, order=idx))
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        per_example_loss(logits, labels).sum().backward()
        model.zero_grad(set_to_none=True)
    return {"loop_seconds": time.perf_counter() - t0, "setup_seconds": setup}


def worker_tselect(a: argparse.Namespace, inputs: dict) -> dict:
    """The featurize stage's LESS path for one checkpoint, pool rows only (bergson builds no queries)."""
    import numpy as np
    import zarr

    from tselect import store
    from tselect.data import load_dataset
    from tselect.data.tokenize import encode_example
    from tselect.featurize import less, project, write_checkpoint
    from tselect.featurize.config import FeaturizeConfig
    from tselect.models import load_tokenizer, resolve_model

    _set_threads(a.threads)
    timer = {"loop": 0.0, "tables": 0.0}
    loop, table = less.gradient_rows, project.SparseJL._table

    def timed_loop(*args, **kwargs):
        t = time.perf_counter()
        try:
            return loop(*args, **kwargs)
        finally:
            timer["loop"] += time.perf_counter() - t

    def timed_table(self, name, numel, device):
        t, fresh = time.perf_counter(), (name, numel, device) not in self._tables
        out = table(self, name, numel, device)
        timer["tables"] += (time.perf_counter() - t) if fresh else 0.0
        return out

    less.gradient_rows, project.SparseJL._table = timed_loop, timed_table
    t0 = time.perf_counter()
    want = _read_jsonl(Path(inputs["jsonl"]))
    cfg = FeaturizeConfig(rep="less", pool="builtin:pool-small", query="builtin:sciq", max_length=a.max_length,
                          batch_size=a.batch_size, params=(("dim", str(a.dim)),))
    lc = less.less_config(cfg)
    by_id = {ex.id: ex for ex in load_dataset(cfg.pool).examples}
    tok = load_tokenizer(resolve_model(cfg.model))
    rows = [encode_example(by_id[d["id"]], tok, cfg.max_length) for d in want]
    if any(list(r.input_ids) != d["input_ids"] or list(r.labels) != d["labels"] for r, d in zip(rows, want)):
        raise SystemExit("error: tselect's encoding differs from rows.jsonl; rerun without a stale --data dir")
    t_data = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="peers-tselect-", dir=a.run_dir) as tmp:
        group = Path(tmp) / store.FEATURES
        store.open_group(group)
        t0 = time.perf_counter()
        loaded = less._Checkpoint(cfg.model, Path(inputs["ckpt"]))
        loaded.get()  # what the first row asks for: base + adapter + moments by name
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        ck = less.checkpoint_rows(cfg, lc, loaded, {"query": [], "pool": rows}, "ckpt-1")
        write_checkpoint(group, ck, (0, len(rows)), cfg.dtype, "less ckpt-1")
        t_rows = time.perf_counter() - t0
        pool = np.asarray(zarr.open_group(str(group / "ckpt-1"), mode="r")["pool"][:], dtype=np.float32)
    return {"loop_seconds": timer["loop"], "sjlt_tables_seconds": timer["tables"], "data_seconds": t_data,
            "model_load_seconds": t_load, "write_seconds": t_rows - timer["loop"],
            "stored": {"shape": list(pool.shape), "dtype": cfg.dtype, "finite": bool(np.isfinite(pool).all())}}


def worker_bergson(a: argparse.Namespace, inputs: dict) -> dict:
    """`bergson build` through its own CLI entry point; collect_gradients is timed by a wrapper."""
    import bergson.build as bb
    import bergson.utils.load_from_optimizer as lfo
    from bergson.__main__ import main as bergson_main

    _set_threads(a.threads)
    timer, seen = {"loop": 0.0}, {}
    collect, load_normalizers = bb.collect_gradients, lfo.load_from_optimizer

    def counted(*args, **kwargs):  # imported by name inside bergson's create_processor, at call time
        out = load_normalizers(*args, **kwargs)
        seen["adam_normalizers"] = len(out)
        return out

    def timed_collect(*args, **kwargs):
        t = time.perf_counter()
        try:
            return collect(*args, **kwargs)
        finally:
            timer["loop"] += time.perf_counter() - t

    bb.collect_gradients, lfo.load_from_optimizer = timed_collect, counted
    run = Path(a.run_dir) / "bergson-index"
    sys.argv = ["bergson", "build", str(run), "--model", inputs["adapter"], "--tokenizer", inputs["model"],
                "--dataset", inputs["jsonl"], "--optimizer_state", inputs["adapter"],
                "--loss_reduction", "mean", "--projection_dim", str(a.bergson_proj),
                "--token_batch_size", str(a.batch_size * a.max_length), "--max_batch_size", str(a.batch_size),
                "--precision", "fp32", "--nproc_per_node", "1"]
    bergson_main()
    info = json.loads((run / "info.json").read_text())
    stored = {"rows": info["num_grads"], "modules": len(info["grad_sizes"]), "dims": sum(info["grad_sizes"].values()),
              "dtype": info["base_dtype"]}
    return {"loop_seconds": timer["loop"], "stored": stored, **seen, "argv": sys.argv[1:]}


WORKERS = {"floor": worker_floor, "tselect": worker_tselect, "bergson": worker_bergson}


# ---- orchestration (parent) -------------------------------------------------------------

def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def child_env(a: argparse.Namespace, run_dir: Path) -> dict:
    n = str(a.threads)
    return {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "TSELECT_THREADS": n, "TSELECT_PROGRESS": "0",
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled", "HF_DATASETS_CACHE": str(run_dir / "hf")}


def machine_info() -> dict:
    import platform
    from importlib.metadata import version

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "torch": version("torch"),
            "transformers": version("transformers"), "peft": version("peft")}


def run_case(a: argparse.Namespace, case: str, rep: int, inputs: dict, python: Path | None = None) -> dict:
    """One fresh process of `case` on a.data's inputs (python: the interpreter, default this one);
    wall time and peak RSS (os.wait4: that child alone) are measured here."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"run-{case}-", dir=a.data))
    cmd = [str(python or sys.executable), "-m", "bench.ckpt_workers", "--worker", case, "--run-dir", str(run_dir),
           "--data", str(a.data), "--batch-size", str(a.batch_size), "--max-length", str(a.max_length),
           "--threads", str(a.threads), "--dim", str(a.dim), "--bergson-proj", str(getattr(a, "bergson_proj", 6))]
    before = _load()
    with open(run_dir / "stdout", "w") as out, open(run_dir / "stderr", "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(a, run_dir), stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"error: case {case} (rep {rep}) exited {proc.returncode}; its stderr ends:\n"
                         f"{(run_dir / 'stderr').read_text()[-3000:]}")
    import shutil

    r = json.loads((run_dir / "result.json").read_text())
    shutil.rmtree(run_dir, ignore_errors=True)
    loop = r.pop("loop_seconds")
    return {"case": case, "rep": rep, "examples": inputs["rows"], "process_seconds": round(wall, 2),
            "ex_per_s": round(inputs["rows"] / wall, 4), "loop_seconds": round(loop, 2),
            "loop_ex_per_s": round(inputs["rows"] / loop, 4) if loop > 0 else None,
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "load_avg": {"before": before, "after": _load()},
            **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()}}


def main(argv: list[str]) -> int:
    a = parse(argv)
    if a.worker == "ckpt":
        worker_ckpt(a)
        return 0
    inputs = json.loads((a.data / "inputs.json").read_text())
    result = WORKERS[a.worker](a, inputs)
    (a.run_dir / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
