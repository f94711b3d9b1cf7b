"""`torchrun --nproc_per_node 2 -m tselect finetune` on CPU (gloo) against one process.

Two ranks of micro-batch 1 make an optimizer step of 2 rows, as one process with micro-batch 1
and 2 accumulation steps does, over the same data order: the adapters agree up to float
summation order, and both runs publish the same artifact id (the launch is not part of it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

# lora_dropout 0: dropout masks are drawn per rank, so they would differ from one process's
TRAIN = ["finetune", "--selection", "full", "--budget", "16", "--batch-size", "1", "--effective-batch-size", "2",
         "--epochs", "1", "--lr", "1e-2", "--warmup-ratio", "0", "--max-length", "64", "--lora-dropout", "0"]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TSELECT_THREADS": "1", "TSELECT_PROGRESS": "0",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def _tselect(args: list[str], nproc: int = 1) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] \
        if nproc > 1 else [sys.executable]
    proc = subprocess.run([*launch, "-m", "tselect", *args], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, "\n".join(line for line in proc.stderr.splitlines() if "Warn" not in line)[-4000:]
    return proc


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture
def pool(tmp_path):
    from tests.conftest import toy_rows

    p = tmp_path / "pool.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in toy_rows()))
    return p


@pytest.mark.slow
def test_lora_ddp_matches_one_process(tmp_path, pool, tiny_model_dir):
    common = [*TRAIN, "--pool", str(pool), "--model", str(tiny_model_dir)]
    ddp = _tselect([*common, "--store", str(tmp_path / "ddp")], nproc=2)
    one = _tselect([*common, "--store", str(tmp_path / "one")])
    ids = ddp.stdout.split()
    assert len(ids) == 1, ddp.stdout  # only rank 0 prints the id
    assert ids == one.stdout.split()
    art = tmp_path / "ddp" / "finetune" / ids[0]
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["record"]["cost"]["world_size"] == 2
    assert manifest["record"]["schedule"]["optimizer_steps"] == 8
    assert not list((tmp_path / "ddp" / "finetune").glob("*.part"))  # published, nothing left half-written
    a = _weights(art / "adapter" / "adapter_model.safetensors")
    b = _weights(tmp_path / "one" / "finetune" / ids[0] / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    moved = max(float(t.abs().max()) for k, t in b.items() if "lora_B" in k)
    assert moved > 1e-3  # the runs trained (lora_B starts at zero)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    curve_a = json.loads((art / "train_curve.json").read_text())
    curve_b = json.loads((tmp_path / "one" / "finetune" / ids[0] / "train_curve.json").read_text())
    assert curve_a["lr"] == pytest.approx(curve_b["lr"])

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(art / "adapter"))
    # a second launch finds the artifact: every rank returns at once, rank 0 prints the same id
    assert _tselect([*common, "--store", str(tmp_path / "ddp")], nproc=2).stdout.split() == ids


@pytest.mark.slow
def test_fsdp_full_finetune_on_two_cpu_ranks_matches_one_process(tmp_path, pool, tiny_model_dir):
    """--method full under torchrun is FSDP full shard (the GPU code: accelerate's FSDP2 plugin,
    here over gloo): each rank holds about half of the weights, rank 0 writes the whole model, and
    it equals a one-process run with the same effective batch."""
    common = [*TRAIN, "--method", "full", "--pool", str(pool), "--model", str(tiny_model_dir)]
    two = _tselect([*common, "--store", str(tmp_path / "two")], nproc=2)
    one = _tselect([*common, "--store", str(tmp_path / "one")])
    (aid,) = two.stdout.split()
    assert [aid] == one.stdout.split()
    art = tmp_path / "two" / "finetune" / aid
    cost = json.loads((art / "manifest.json").read_text())["record"]["cost"]
    assert (cost["world_size"], cost["sharding"], cost["gradient_checkpointing"]) == (2, "fsdp", True)
    total = cost["trainable_params"]
    assert sum(cost["params_held"]) == total and all(n < 0.6 * total for n in cost["params_held"])  # sharded
    a, b = _weights(art / "model" / "model.safetensors"), _weights(tmp_path / "one" / "finetune" / aid / "model" / "model.safetensors")
    base = _weights(next(Path(tiny_model_dir).glob("*.safetensors")))
    assert a.keys() == b.keys() == base.keys()  # the whole model, not a shard
    assert max(float((b[k] - base[k]).abs().max()) for k in base) > 1e-3  # it trained
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(art / "model")
    assert not list((tmp_path / "two" / "finetune").glob("*.part"))


@pytest.mark.slow
def test_full_finetune_with_ddp_on_two_cpu_ranks(tmp_path, pool, tiny_model_dir):
    """--sharding ddp keeps a whole copy of the model per rank; same weights as FSDP would give."""
    common = [*TRAIN, "--method", "full", "--sharding", "ddp", "--pool", str(pool), "--model", str(tiny_model_dir)]
    (aid,) = _tselect([*common, "--store", str(tmp_path / "two")], nproc=2).stdout.split()
    cost = json.loads((tmp_path / "two" / "finetune" / aid / "manifest.json").read_text())["record"]["cost"]
    assert (cost["sharding"], cost["params_held"]) == ("ddp", [cost["trainable_params"]] * 2)


@pytest.mark.slow
def test_a_launcher_runs_a_stage_config_on_two_ranks(tmp_path, pool, tiny_model_dir, monkeypatch):
    """`tselect run --launcher`: a cell's finetune config runs under torchrun in a subprocess and
    its id comes back; the in-process stage then finds the same artifact (same id, no training)."""
    from tselect import distributed
    from tselect.finetune import FinetuneConfig, run
    from tselect.training import TrainConfig

    for k, v in _env().items():
        monkeypatch.setenv(k, v)
    cfg = FinetuneConfig(selection="full", pool=str(pool), budget=16, model=str(tiny_model_dir),
                         train=TrainConfig(lr=1e-2, epochs=1, batch_size=1, effective_batch_size=2, max_length=64))
    launcher = f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node 2"
    aid = distributed.launch(launcher, cfg, str(tmp_path / "s"))
    record = json.loads((tmp_path / "s" / "finetune" / aid / "manifest.json").read_text())["record"]
    assert record["cost"]["world_size"] == 2
    assert run(cfg, tmp_path / "s") == aid


@pytest.mark.slow
def test_accelerate_launch_runs_a_stage_on_two_ranks(tmp_path, pool, tiny_model_dir, monkeypatch):
    """`accelerate launch` instead of torchrun, as a --launcher (its `-m` runs tselect as a module).
    On CPU it needs --multi_gpu to start several processes (on GPUs it turns that on itself); the
    full fine-tune is FSDP-sharded as under torchrun, and rank 0 alone prints the id."""
    from tselect import distributed
    from tselect.finetune import FinetuneConfig
    from tselect.training import TrainConfig

    for k, v in {**_env(), "HF_HOME": str(tmp_path / "hf")}.items():  # no user accelerate config
        monkeypatch.setenv(k, v)
    cfg = FinetuneConfig(selection="full", pool=str(pool), budget=16, model=str(tiny_model_dir),
                         train=TrainConfig(method="full", lr=1e-2, epochs=1, batch_size=1, effective_batch_size=2,
                                           max_length=64))
    launcher = f"{sys.executable} -m accelerate.commands.launch --multi_gpu --num_processes 2 --main_process_port 0"
    aid = distributed.launch(launcher, cfg, str(tmp_path / "s"))
    art = tmp_path / "s" / "finetune" / aid
    cost = json.loads((art / "manifest.json").read_text())["record"]["cost"]
    assert (cost["world_size"], cost["sharding"]) == (2, "fsdp") and len(cost["params_held"]) == 2
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(art / "model")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "full"])
def test_an_interrupted_two_rank_run_resumes_from_its_checkpoint(tmp_path, pool, tiny_model_dir, method):
    """Kill a 2-rank run once its first Trainer checkpoint is complete; a new 2-rank launch resumes
    from it (every rank from the same checkpoint) and ends where one uninterrupted process ends.
    LoRA checkpoints are DDP's (whole adapter + optimizer); full ones FSDP's (gathered on rank 0)."""
    import signal
    import time

    args = ["finetune", "--selection", "full", "--budget", "24", "--batch-size", "1", "--effective-batch-size", "2",
            "--epochs", "4", "--lr", "1e-2", "--warmup-ratio", "0", "--max-length", "64", "--lora-dropout", "0",
            "--pool", str(pool), "--model", str(tiny_model_dir), "--method", method]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tselect"]
    store = tmp_path / "two"
    proc = subprocess.Popen([*launch, *args, "--store", str(store)], env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list(store.glob("finetune/*.part/checkpoints/checkpoint-*/trainer_state.json")):
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(store.glob("finetune/*.part")) and not list(store.glob("finetune/finetune-*[!kt]"))
    if method == "full":  # the checkpoint is FSDP's: weights and optimizer state gathered from the shards
        (ckpt,) = [p.parent for p in store.glob("finetune/*.part/checkpoints/checkpoint-*/trainer_state.json")]
        assert (ckpt / "pytorch_model_fsdp.bin").is_file() and (ckpt / "optimizer.bin").is_file()
    (aid,) = _tselect([*args, "--store", str(store)], nproc=2).stdout.split()
    assert _tselect([*args, "--store", str(tmp_path / "one")]).stdout.split() == [aid]
    weights = "adapter/adapter_model.safetensors" if method == "lora" else "model/model.safetensors"
    a = _weights(store / "finetune" / aid / weights)
    b = _weights(tmp_path / "one" / "finetune" / aid / weights)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    cost = json.loads((store / "finetune" / aid / "manifest.json").read_text())["record"]["cost"]
    assert cost["sharding"] == {"lora": "ddp", "full": "fsdp"}[method]
    curve = json.loads((store / "finetune" / aid / "train_curve.json").read_text())
    assert len(curve["lr"]) == 48  # the resumed run's log covers every step


def test_rank_helpers_are_the_identity_in_one_process(monkeypatch):
    from tselect import distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    assert distributed.broadcast({"x": 1}) == {"x": 1}
    assert distributed.gather(3) == [3]
    assert list(distributed.shard(5)) == [0, 1, 2, 3, 4]


def test_shards_cover_every_item_once_in_order(monkeypatch):
    from tselect import distributed

    for n in (0, 1, 5, 8):
        parts = []
        for r in range(3):
            monkeypatch.setenv("WORLD_SIZE", "3")
            monkeypatch.setenv("RANK", str(r))
            parts += list(distributed.shard(n))
        assert parts == list(range(n))
