"""The peer bench's pure parts: the files bergson reads, and the medians/ratios it reports (nothing timed)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from bench import ckpt_workers as cw
from bench import peers_bench as pb

from .conftest import tiny_lora_model


def test_jsonl_lines_keep_ids_and_label_masks_exactly():
    rows = [SimpleNamespace(id="a", input_ids=[5, 6, 7], labels=[-100, 6, 7]),
            SimpleNamespace(id="b", input_ids=[9], labels=[-100])]
    lines = cw.jsonl_lines(rows).splitlines()
    assert [json.loads(x) for x in lines] == [{"id": "a", "input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                                              {"id": "b", "input_ids": [9], "labels": [-100]}]


def test_optimizer_state_names_every_lora_weight_as_peft_saves_it(tmp_path):
    from peft import get_peft_model_state_dict

    model = tiny_lora_model()
    sq = {n: torch.full(p.shape, float(i)) for i, (n, p) in enumerate(model.named_parameters()) if "lora_" in n}
    path = tmp_path / "optimizer.pt"
    torch.save(cw.optimizer_state(sq), path)
    state = torch.load(path, weights_only=False)  # as the peer loads it
    saved = get_peft_model_state_dict(model)
    entries = list(state["state"].values())
    assert sorted(e["param_name"] for e in entries) == sorted(saved)  # every adapter weight, nothing else
    assert state["param_groups"] == [{"params": list(range(len(sq)))}]
    by_key = {cw.peft_key(n): t for n, t in sq.items()}
    for e in entries:  # the second moment travels with its own parameter, shape included
        assert torch.equal(e["exp_avg_sq"], by_key[e["param_name"]])
        assert tuple(e["exp_avg_sq"].shape) == tuple(saved[e["param_name"]].shape)
        # the peer's module for the entry: the key without ".weight", base_model. prefix, plus ".<adapter>"
        module = e["param_name"].removesuffix(".weight").removeprefix("base_model.") + ".default"
        assert isinstance(model.get_submodule(module), torch.nn.Linear)


def test_peft_key_refuses_names_outside_the_adapter():
    assert cw.peft_key("m.q_proj.lora_A.default.weight") == "m.q_proj.lora_A.weight"
    with pytest.raises(ValueError, match="not a LoRA weight"):
        cw.peft_key("m.q_proj.base_layer.weight")


def test_adapter_config_points_at_the_local_base_only():
    cfg = {"r": 8, "base_model_name_or_path": None, "target_modules": ["k_proj", "q_proj"]}
    assert cw.adapter_config(cfg, "/models/smol") == {**cfg, "base_model_name_or_path": "/models/smol"}
    assert cfg["base_model_name_or_path"] is None  # the checkpoint's own config is not modified


def _r(case, ex, loop, rss):
    return {"case": case, "ex_per_s": ex, "loop_ex_per_s": loop, "peak_rss_mb": rss}


def test_summary_ratios_are_ratios_of_medians():
    results = [_r("floor", 0.2, 0.25, 5000), _r("bergson", 0.2, 0.3, 7000), _r("tselect", 0.3, 0.4, 5200),
               _r("floor", 0.4, 0.5, 5100), _r("bergson", 0.1, 0.1, 7100), _r("tselect", 0.1, 0.1, 5300),
               _r("floor", 0.3, 0.35, 5050), _r("bergson", 0.3, 0.2, 6900), _r("tselect", 0.2, 0.3, 5250)]
    s = pb.summarize(results)
    assert s["medians"]["tselect"] == {"ex_per_s": 0.2, "loop_ex_per_s": 0.3, "peak_rss_mb": 5250}
    assert s["ratios"]["tselect_over_bergson"] == 1.0  # 0.2 / 0.2
    assert s["ratios"]["tselect_over_floor"] == round(0.2 / 0.3, 3)
    assert s["ratios"]["tselect_over_bergson_loop"] == 1.5  # 0.3 / 0.2
    assert s["targets_met"] == {"tselect_over_bergson": False, "tselect_over_floor": False, "rss": True}


def test_summary_without_a_case_reports_no_ratio():
    s = pb.summarize([_r("floor", 0.2, 0.25, 5000), _r("tselect", 0.2, 0.25, 5000)])
    assert s["ratios"]["tselect_over_bergson"] is None and "tselect_over_bergson" not in s["targets_met"]
    assert s["targets_met"]["tselect_over_floor"] is True


def test_every_repetition_rotates_the_case_order():
    cases = list(pb.CASES)
    orders = [pb.rotated(cases, r) for r in range(3)]
    assert all(sorted(o) == sorted(cases) for o in orders)
    assert [o[0] for o in orders] == cases  # each case goes first once


def test_missing_peer_venv_skips_with_one_line(tmp_path, capsys):
    assert pb.main(["--venv", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("skipping peers:")
    assert not (tmp_path / "out").exists()
