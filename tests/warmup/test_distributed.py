"""`torchrun --nproc_per_node 2` warmup on CPU (gloo) against one process, through the CLI.

tests/warmup/launch.py is `python -m tselect` plus the dropout-free "exact" preset. Two ranks of
micro-batch 4 make the same 8-row optimizer steps as one process with micro-batch 4 and 2
accumulation steps over the same data order, so the checkpoints (adapter and Adam moments)
agree up to float summation order, and both runs publish the same warmup id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

LAUNCH = str(Path(__file__).with_name("launch.py"))


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TSELECT_THREADS": "1", "TSELECT_PROGRESS": "0",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def _tselect(args: list, nproc: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] \
        if nproc > 1 else [sys.executable]
    proc = subprocess.run([*launch, LAUNCH, *map(str, args)], capture_output=True, text=True, env=_env(), timeout=300)
    if check:
        assert proc.returncode == 0, "\n".join(line for line in proc.stderr.splitlines() if "Warn" not in line)[-4000:]
    return proc


@pytest.fixture
def pool(tmp_path):
    from tests.conftest import toy_rows

    p = tmp_path / "pool.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in toy_rows()))
    q = tmp_path / "query.jsonl"
    q.write_text("".join(json.dumps(r) + "\n" for r in toy_rows(1)[:3]))
    return p, q


def _close(a: dict, b: dict, what: str, rel: float = 1e-4) -> None:
    """Every tensor of a within rel (relative L2) of b's: the two runs differ only in float order."""
    assert a.keys() == b.keys() and a, what
    for k in a:
        err = float((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-30))
        assert err < rel, f"{what} {k}: relative error {err:.2e}; the ranks did not train the rows one process does"


@pytest.mark.slow
def test_two_rank_warmup_matches_one_process(tmp_path, pool, tiny_model_dir):
    from safetensors.torch import load_file

    args = ["warmup", "--preset", "exact", "--pool", pool[0], "--model", tiny_model_dir]
    ddp = _tselect([*args, "--store", tmp_path / "two"], nproc=2)
    one = _tselect([*args, "--store", tmp_path / "one"])
    ids = ddp.stdout.split()
    assert len(ids) == 1, ddp.stdout  # only rank 0 prints the id
    assert ids == one.stdout.split()  # the launch is not part of the recipe
    two_dir, one_dir = tmp_path / "two" / "warmup" / ids[0], tmp_path / "one" / "warmup" / ids[0]
    assert [p.name for p in (tmp_path / "two" / "warmup").iterdir() if not p.name.endswith(".lock")] == ids
    record = json.loads((two_dir / "manifest.json").read_text())["record"]
    assert (record["world_size"], record["micro_batch"], record["sharding"]) == (2, 4, "ddp")
    ckpts = json.loads((two_dir / "checkpoints.json").read_text())
    assert [c["name"] for c in ckpts] == ["ckpt-2", "ckpt-4"]  # 12 rows, 8 per step: 2 steps per epoch
    ref = json.loads((one_dir / "checkpoints.json").read_text())
    assert [c["mean_lr"] for c in ckpts] == pytest.approx([c["mean_lr"] for c in ref], rel=1e-12)
    for c in ckpts:
        for name in ("adapter_model", "exp_avg", "exp_avg_sq"):
            _close(load_file(str(two_dir / c["name"] / f"{name}.safetensors")),
                   load_file(str(one_dir / c["name"] / f"{name}.safetensors")), f"{c['name']}/{name}")
    moved = load_file(str(one_dir / "ckpt-4" / "exp_avg_sq.safetensors"))
    assert all(float(v.abs().max()) > 0 for k, v in moved.items() if "lora_B" in k)  # it trained

    from transformers import AutoModelForCausalLM

    from tselect.warmup import load_checkpoint

    model, exp_avg, _, state = load_checkpoint(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                               two_dir / "ckpt-4")
    assert state["step"] == 4 and exp_avg
    # finished: a second 2-rank launch is a no-op on every rank (no collective mismatch, no training)
    again = _tselect([*args, "--store", tmp_path / "two"], nproc=2)
    assert again.stdout.split() == ids
    assert json.loads((two_dir / "manifest.json").read_text())["record"] == record


@pytest.mark.slow
def test_a_failure_on_rank_zero_reaches_the_other_rank(tmp_path, pool, tiny_model_dir):
    """max_length 2 leaves no response token in any row: rank 0 refuses before training and
    rank 1, waiting for its job, gets the same one-line error instead of hanging."""
    bad = tmp_path / "bad.py"
    bad.write_text(Path(LAUNCH).read_text().replace("max_length=64", "max_length=2"))
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(bad)]
    proc = subprocess.run([*launch, "warmup", "--preset", "exact", "--pool", str(pool[0]), "--model",
                           str(tiny_model_dir), "--store", str(tmp_path / "s")],
                          capture_output=True, text=True, env=_env(), timeout=240)
    assert proc.returncode != 0 and proc.stdout == ""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: none of the")]
    assert len(errors) == 2, proc.stderr[-3000:]  # rank 0's own error and the one it sent rank 1
    assert not [p for p in (tmp_path / "s" / "warmup").iterdir() if not p.name.endswith(".lock")]


@pytest.mark.slow
def test_a_failure_on_rank_zero_after_training_reaches_the_other_rank(tmp_path, pool, tiny_model_dir):
    """Rank 0 fails writing checkpoints.json, after the ranks trained together: rank 1, back to
    waiting for a message, gets "rank 0 failed" as its one-line error; nothing is published."""
    bad = tmp_path / "bad.py"
    bad.write_text(Path(LAUNCH).read_text().replace('if __name__ == "__main__":', """
import tselect.warmup as W
_write_json = W.store.write_json


def _disk_full(path, obj):
    if path.name == "checkpoints.json":
        raise OSError("disk full")
    _write_json(path, obj)


if __name__ == "__main__":
    W.store.write_json = _disk_full"""))
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(bad)]
    proc = subprocess.run([*launch, "warmup", "--preset", "exact", "--pool", str(pool[0]), "--model",
                           str(tiny_model_dir), "--store", str(tmp_path / "s")],
                          capture_output=True, text=True, env=_env(), timeout=240)
    assert proc.returncode != 0 and proc.stdout == ""
    assert "error: rank 0 failed: OSError: disk full" in proc.stderr, proc.stderr[-3000:]
    assert not [p for p in (tmp_path / "s" / "warmup").iterdir() if not p.name.endswith((".lock", ".part"))]


@pytest.mark.slow
def test_two_rank_featurize_less_trains_the_missing_warmup_and_matches_one_process(tmp_path, pool, tiny_model_dir):
    from tselect import catalog, store

    args = ["featurize", "--rep", "less", "--pool", pool[0], "--query", pool[1], "--model", tiny_model_dir,
            "--param", "warmup=exact", "--param", "dim=64", "--dtype", "float32", "--batch-size", "4"]
    ddp = _tselect([*args, "--store", tmp_path / "two"], nproc=2)
    one = _tselect([*args, "--store", tmp_path / "one"])
    ids = ddp.stdout.split()
    assert len(ids) == 1 and ids == one.stdout.split(), (ddp.stdout, one.stdout)
    (wid,) = [p.name for p in (tmp_path / "two" / "warmup").iterdir() if not p.name.endswith((".lock", ".part"))]
    assert json.loads((tmp_path / "two" / "warmup" / wid / "manifest.json").read_text())["record"]["world_size"] == 2
    a = store.open_features(catalog.resolve(tmp_path / "two", ids[0]).path)
    b = store.open_features(catalog.resolve(tmp_path / "one", ids[0]).path)
    assert a.checkpoints == b.checkpoints and len(a.checkpoints) == 2
    for k in range(len(a.checkpoints)):
        for x, y in ((a.pools[k][:], b.pools[k][:]), (a.queries[k], b.queries[k])):
            x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
            cos = torch.nn.functional.cosine_similarity(x, y, dim=1)
            assert float(cos.min()) > 0.9999, f"checkpoint {k}: min row cosine {float(cos.min()):.6f}"


@pytest.mark.parametrize(("batch", "eff", "world", "micro"), [(8, 16, 1, 8), (8, 16, 2, 8), (8, 16, 8, 2), (8, 16, 16, 1),
                                                             (1, 128, 8, 1), (4, 12, 2, 3), (4, 8, 2, 4)])
def test_rank_share_keeps_the_rows_of_an_optimizer_step(batch, eff, world, micro):
    from tselect.training import TrainConfig, local_grad_accum
    from tselect.warmup import rank_share

    cfg = TrainConfig(batch_size=batch, effective_batch_size=eff)
    used = rank_share(cfg, world)
    assert used.batch_size == micro
    assert used.batch_size * world * local_grad_accum(used, world) == eff  # rows per step over all ranks
    assert used == cfg.__class__(**{**cfg.__dict__, "batch_size": micro})  # nothing else changes


def test_rank_share_refuses_an_effective_batch_the_ranks_cannot_split():
    from tselect.errors import UserError
    from tselect.training import TrainConfig
    from tselect.warmup import rank_share

    with pytest.raises(UserError, match="effective batch of 16 rows does not split over 3 processes"):
        rank_share(TrainConfig(batch_size=8, effective_batch_size=16), 3)


def test_ddp_epochs_end_in_label_free_padding_rows_not_repeated_rows():
    import numpy as np

    from tselect.training import _PAD_ROW, _Collator, _epoch_sampler

    plain, padded = _epoch_sampler(12, 0), _epoch_sampler(12, 0, multiple=8)
    plain.set_epoch(1)
    padded.set_epoch(1)
    assert list(plain) == np.random.default_rng((0, 1)).permutation(12).tolist() and len(plain) == 12
    assert list(padded) == list(plain) + [12] * 4 and len(padded) == 16  # index 12 is the padding row
    collate = _Collator(pad_id=0)
    batch = collate([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, _PAD_ROW])
    assert (batch["labels"][1] == -100).all()  # no loss term, no label token counted
    assert collate.tokens_seen == 3


def test_owned_in_one_process_runs_the_job_on_this_rank(monkeypatch):
    from tselect import distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    seen = []

    def lead(handle):
        assert handle.job({"x": 1}, lambda: seen.append("work") or 7) == 7
        return "warmup-abc"

    assert distributed.owned(lead, lambda msg: seen.append("follow")) == "warmup-abc"
    assert seen == ["work"]  # no other rank: follow never runs

    def broken(handle):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        distributed.owned(broken, lambda msg: None)
