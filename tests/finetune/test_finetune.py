"""The finetune stage on a tiny model: selection prefix → adapter artifact; whole pool; full FT."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from tselect import catalog  # noqa: E402
from tselect.featurize import FeaturizeConfig  # noqa: E402
from tselect.featurize import run as featurize  # noqa: E402
from tselect.finetune import FinetuneConfig, run  # noqa: E402
from tselect.lineage import trained_path  # noqa: E402
from tselect.select import SelectConfig  # noqa: E402
from tselect.select import run as select  # noqa: E402
from tselect.training import TrainConfig, expected_steps  # noqa: E402

QUICK = TrainConfig(lr=1e-2, epochs=1, batch_size=2, effective_batch_size=2, max_length=64, warmup_ratio=0.0)


@pytest.fixture
def selection(tmp_path, store, toy_data):
    pool, query = toy_data
    rng = np.random.default_rng(0)
    np.save(tmp_path / "p.npy", rng.normal(size=(24, 4)).astype(np.float32))
    np.save(tmp_path / "q.npy", rng.normal(size=(2, 4)).astype(np.float32))
    fid = featurize(FeaturizeConfig(rep="vectors", pool=str(pool), query=str(query),
                                    pool_vectors=str(tmp_path / "p.npy"), query_vectors=str(tmp_path / "q.npy")), store)
    return select(SelectConfig(features=fid, selector="random", budget=10, seed=0), store)


def test_selection_prefix_trains_an_adapter(store, selection, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    aid = run(FinetuneConfig(selection=selection, budget=6, model=str(tiny_model_dir), train=QUICK), store)
    art = catalog.resolve(store, aid, stage="finetune")
    assert art.record["n_train"] == 6 and art.record["n_selected"] == 6 and art.record["output"] == "adapter"
    assert {"wall_seconds", "tokens_seen", "examples_per_second", "device"} <= set(art.record["cost"])
    curve = json.loads((art.path / "train_curve.json").read_text())
    # QUICK asks for 3 steps; fit_schedule lowers the batch so the run takes at least 8, all at lr > 0
    assert expected_steps(6, QUICK) == 3
    assert len(curve["loss"]) == len(curve["lr"]) == art.record["schedule"]["optimizer_steps"] >= 8
    assert min(curve["lr"]) > 0 and art.record["schedule"]["lr_first"] > 0
    assert art.inputs["selection"] == selection and "model" in art.inputs
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(trained_path(art)))
    # same config and inputs → same id, nothing retrained
    assert run(FinetuneConfig(selection=selection, budget=6, model=str(tiny_model_dir), train=QUICK), store) == aid


def test_budget_beyond_selection_is_a_user_error(store, selection, tiny_model_dir):
    from tselect.errors import UserError

    with pytest.raises(UserError, match="--budget 11 is outside 1..10"):
        run(FinetuneConfig(selection=selection, budget=11, model=str(tiny_model_dir), train=QUICK), store)


def test_full_pool_full_finetune(store, toy_data, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pool, _ = toy_data
    cfg = FinetuneConfig(selection="full", pool=str(pool), budget=4, model=str(tiny_model_dir),
                         train=TrainConfig(**{**QUICK.__dict__, "method": "full"}))
    art = catalog.resolve(store, run(cfg, store), stage="finetune")
    assert art.record["n_train"] == 4 and art.record["output"] == "model" and "pool" in art.inputs
    AutoModelForCausalLM.from_pretrained(trained_path(art))
    AutoTokenizer.from_pretrained(trained_path(art))


def test_lora_with_fsdp_is_refused_before_any_artifact(store, toy_data, tiny_model_dir):
    """peft writes an empty adapter from an FSDP-sharded model, so LoRA + --sharding fsdp is a user error."""
    from tselect.errors import UserError
    from tselect.runtime import Runtime

    pool, _ = toy_data
    cfg = FinetuneConfig(selection="full", pool=str(pool), budget=4, model=str(tiny_model_dir), train=QUICK,
                         runtime=Runtime(sharding="fsdp"))
    with pytest.raises(UserError, match="--sharding fsdp is for --method full"):
        run(cfg, store)
    assert not list(store.glob("finetune/finetune-*[!k]"))  # no artifact, no .part (a .lock at most)


def test_full_selection_needs_a_pool():
    with pytest.raises(ValueError, match="--pool"):
        FinetuneConfig(selection="full")


def test_an_interrupted_finetune_resumes_from_its_checkpoint(tmp_path, store, toy_data, tiny_model_dir, monkeypatch):
    from tselect import finetune

    pool, query = toy_data
    rng = np.random.default_rng(0)
    np.save(tmp_path / "p.npy", rng.normal(size=(24, 4)).astype(np.float32))
    np.save(tmp_path / "q.npy", rng.normal(size=(2, 4)).astype(np.float32))
    cfg = FeaturizeConfig(rep="vectors", pool=str(pool), query=str(query), pool_vectors=str(tmp_path / "p.npy"),
                          query_vectors=str(tmp_path / "q.npy"))
    one = TrainConfig(lr=1e-2, epochs=1, batch_size=1, effective_batch_size=1, max_length=64, warmup_ratio=0.0)
    runs = {}
    for name in ("fresh", "resumed"):
        st = tmp_path / name
        sel = select(SelectConfig(features=featurize(cfg, st), selector="random", seed=0), st)
        runs[name] = FinetuneConfig(selection=sel, budget=24, model=str(tiny_model_dir), train=one), st
    fresh = catalog.resolve(runs["fresh"][1], run(*runs["fresh"]), stage="finetune")

    steps = []

    def stop_at_15(total):
        def on_step(step, _total, loss):
            steps.append(step)
            if step == 15:  # checkpoint-10 exists by now; 11..15 are lost work
                raise KeyboardInterrupt
        return on_step

    monkeypatch.setattr(finetune, "_reporter", stop_at_15)
    with pytest.raises(KeyboardInterrupt):
        run(*runs["resumed"])
    part = next((runs["resumed"][1] / "finetune").glob("*.part"))
    assert sorted(p.name for p in (part / "checkpoints").iterdir()) == ["checkpoint-10"]
    steps.clear()
    monkeypatch.setattr(finetune, "_reporter", lambda total: lambda step, _t, loss: steps.append(step))
    resumed = catalog.resolve(runs["resumed"][1], run(*runs["resumed"]), stage="finetune")
    assert steps == list(range(11, 25))  # continued after the checkpoint, did not start over
    assert not (resumed.path / "checkpoints").exists()
    for rel in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json", "train_curve.json"):
        assert (resumed.path / rel).read_bytes() == (fresh.path / rel).read_bytes(), rel
