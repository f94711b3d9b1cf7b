"""`tselect featurize --dry-run` for a Llama-2-7B config: a plan that fits 80 GB, from config.json alone."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from .test_plan import LLAMA2_7B


def test_dry_run_plans_llama2_7b_on_h100_from_config_only(tmp_path):
    model = tmp_path / "llama-2-7b"
    model.mkdir()  # config.json only: no weights, no tokenizer
    (model / "config.json").write_text(json.dumps({**LLAMA2_7B, "architectures": ["LlamaForCausalLM"]}))
    proc = subprocess.run([sys.executable, "-m", "tselect", "featurize", "--rep", "less", "--dry-run",
                           "--plan-device", "h100", "--model", str(model), "--pool", "builtin:pool-small",
                           "--query", "builtin:sciq", "--max-length", "2048", "--batch-size", "8",
                           "--param", "warmup=less", "--store", str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "134,217,728 params" in out and "H100 80GB" in out and "every row assumed 2048 tokens" in out
    peak, usable = map(float, re.search(r"predicted peak ([\d.]+) GiB per device \(of ([\d.]+) GiB", out).groups())
    assert peak <= usable <= 80e9 / 2**30
    assert int(re.search(r"token budget ([\d,]+)", out).group(1).replace(",", "")) % 2048 == 0
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.zarr")), "a dry run writes nothing"


def test_dry_run_refuses_dense_rademacher_at_7b(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({**LLAMA2_7B, "architectures": ["LlamaForCausalLM"]}))
    proc = subprocess.run([sys.executable, "-m", "tselect", "featurize", "--rep", "less", "--dry-run",
                           "--plan-device", "h100", "--model", str(model), "--pool", "builtin:pool-small",
                           "--query", "builtin:sciq", "--param", "warmup=less", "--param", "projection=rademacher"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: projection=rademacher needs a 134,217,728x8192")


def test_warmup_dry_run_plans_llama2_7b_on_one_h100(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({**LLAMA2_7B, "architectures": ["LlamaForCausalLM"]}))
    proc = subprocess.run([sys.executable, "-m", "tselect", "warmup", "--dry-run", "--plan-device", "h100",
                           "--model", str(model), "--pool", "builtin:pool-small", "--preset", "less",
                           "--store", str(tmp_path / "store")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "fp32 adapters, dropout 0.1" in out and "x 4 checkpoints" in out and "  fits" in out
    per_token = float(re.search(r"([\d.]+) MiB saved per token", out).group(1))
    # train mode keeps dropout masks and peft's fp32 LoRA-input copies: more than featurize's 4.3 MiB
    assert 6 < per_token < 10, per_token
    assert not (tmp_path / "store" / "warmup").exists(), "a dry run trains nothing"
