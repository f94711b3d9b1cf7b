"""Evaluations users can compare: standard errors, few-shot prompts (and their ids), and any peft
adapter on any base model."""

import json
import math

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from tests.evaluate.test_evaluate import EVAL_ROWS, _metrics, files  # noqa: E402,F401
from tests.test_cli_e2e import tselect  # noqa: E402
from tselect.data.types import Example  # noqa: E402
from tselect.errors import UserError  # noqa: E402
from tselect.evaluate import EvaluateConfig, hashed_config, run  # noqa: E402
from tselect.evaluate.fewshot import draw_shots, with_shots_chat, with_shots_plain  # noqa: E402
from tselect.metrics import binomial_se  # noqa: E402


def test_binomial_se_exact():
    assert binomial_se(0.5, 100) == pytest.approx(0.05)
    assert binomial_se(0.2, 25) == pytest.approx(0.08)
    assert binomial_se(1.0, 7) == 0.0
    assert binomial_se(None, 5) is None and binomial_se(0.5, 0) is None and binomial_se(float("nan"), 3) is None


def test_standard_errors_beside_each_accuracy(store, files, tiny_model_dir):  # noqa: F811
    query, ev = files
    art, m = _metrics(store, run(EvaluateConfig(target=query, eval_data=ev, model=str(tiny_model_dir),
                                                max_new_tokens=4), store))
    mc, gen = m["eval"]["mc"], m["eval"]["generation"]
    assert mc["acc_se"] == pytest.approx(math.sqrt(mc["acc"] * (1 - mc["acc"]) / 3))
    assert mc["acc_norm_se"] == pytest.approx(math.sqrt(mc["acc_norm"] * (1 - mc["acc_norm"]) / 3))
    assert gen["em_se"] == pytest.approx(math.sqrt(gen["em"] * (1 - gen["em"]) / 2))
    assert art.record["acc_se"] == mc["acc_se"] and art.record["em_se"] == gen["em_se"]


def _ex(user, answer, system=None, **meta):
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return Example.make(msgs, meta)


def test_few_shot_prompts_exact():
    shots = [_ex("2+2?", "4"), _ex("Sky colour?", " Blue ", system="Be brief.")]
    item = _ex("3+3?", "6", system="You answer.")
    chat = with_shots_chat(item, shots)
    assert [(m["role"], m["content"]) for m in chat.messages] == [
        ("system", "You answer."), ("user", "2+2?"), ("assistant", "4"), ("user", "Sky colour?"),
        ("assistant", " Blue "), ("user", "3+3?"), ("assistant", "6")]
    assert chat.id == item.id  # the item keeps its id (per-example results line up with zero-shot)
    plain = with_shots_plain(_ex("3+3?", "6", context="Q: 3+3"), shots, "\nAnswer:")
    assert plain.meta["context"] == "2+2?\nAnswer: 4\n\nBe brief.\nSky colour?\nAnswer: Blue\n\nQ: 3+3"
    rows = [_ex(f"q{i}", f"a{i}") for i in range(10)]
    assert draw_shots(rows, 3, 0) == draw_shots(rows, 3, 0) and len({e.id for e in draw_shots(rows, 3, 0)}) == 3
    assert draw_shots(rows, 3, 0) != draw_shots(rows, 3, 1)
    with pytest.raises(UserError, match="--shots 11"):
        draw_shots(rows, 11, 0)


def test_few_shot_enters_the_id_and_leaves_the_query_loss(store, files, tiny_model_dir):  # noqa: F811
    query, ev = files
    base = dict(target=query, eval_data=ev, model=str(tiny_model_dir), max_new_tokens=2)
    assert "shots" not in hashed_config(EvaluateConfig(**base))  # zero-shot ids as before --shots existed
    assert hashed_config(EvaluateConfig(**base, shots=2, shot_seed=3))["shot_seed"] == 3
    zero = run(EvaluateConfig(**base), store)
    one = run(EvaluateConfig(**base, shots=1), store)
    other_seed = run(EvaluateConfig(**base, shots=1, shot_seed=5), store)
    assert len({zero, one, other_seed}) == 3
    assert run(EvaluateConfig(**base, shots=1), store) == one
    _, z = _metrics(store, zero)
    _, m = _metrics(store, one)
    query_ids = [r["id"] for r in z["query"]["per_example"]]
    assert len(m["shots"]) == 1 and m["shots"][0] in query_ids
    assert [r["id"] for r in m["query"]["per_example"]] == [i for i in query_ids if i != m["shots"][0]]
    assert m["eval"]["loss"]["loss"] == pytest.approx(z["eval"]["loss"]["loss"], abs=1e-6)  # held-out loss: zero-shot
    changed = [a["loglikes"] != b["loglikes"] for a, b in zip(m["eval"]["mc"]["per_example"], z["eval"]["mc"]["per_example"])]
    assert all(changed)  # every MC prompt now carries the shot


def test_any_peft_adapter_on_any_base(tmp_path, store, files, tiny_model_dir):  # noqa: F811
    from tselect import catalog
    from tselect.finetune import FinetuneConfig
    from tselect.finetune import run as finetune
    from tselect.lineage import trained_path
    from tselect.training import TrainConfig

    query, ev = files
    train = TrainConfig(lr=1e-2, epochs=1, batch_size=2, effective_batch_size=2)
    ft = finetune(FinetuneConfig(selection="full", pool=query, model=str(tiny_model_dir), train=train), store)
    adapter = trained_path(catalog.resolve(store, ft))
    _, via_ft = _metrics(store, run(EvaluateConfig(target=query, eval_data=ev, finetune=ft, max_new_tokens=2), store))
    ext = run(EvaluateConfig(target=query, eval_data=ev, model=str(tiny_model_dir), adapter=str(adapter),
                             max_new_tokens=2), store)
    art, m = _metrics(store, ext)
    assert set(art.inputs) >= {"model", "adapter"} and "finetune" not in art.inputs
    assert m["query"]["loss"] == pytest.approx(via_ft["query"]["loss"], abs=1e-5)
    flat = [x for r in m["eval"]["mc"]["per_example"] for x in r["loglikes"]]
    assert flat == pytest.approx([x for r in via_ft["eval"]["mc"]["per_example"] for x in r["loglikes"]], abs=1e-4)
    # Without --model the adapter's own base_model_name_or_path is used: the same model, the same id.
    assert run(EvaluateConfig(target=query, eval_data=ev, adapter=str(adapter), max_new_tokens=2), store) == ext
    with pytest.raises(UserError, match="adapter_config.json"):
        run(EvaluateConfig(target=query, model=str(tiny_model_dir), adapter=str(tmp_path)), store)
    with pytest.raises(UserError, match="pass one of them"):
        run(EvaluateConfig(target=query, finetune=ft, adapter=str(adapter)), store)


def test_evaluate_cli_json_shots_and_se(store, files, tiny_model_dir):  # noqa: F811
    query, ev = files
    proc = tselect("evaluate", "--target", query, "--eval-data", ev, "--model", tiny_model_dir, "--shots", "1",
                   "--max-new-tokens", "2", "--json", store=store)
    out = json.loads(proc.stdout)
    assert out["stage"] == "evaluate" and out["config"]["shots"] == 1 and out["record"]["shots"] == 1
    rec = out["record"]
    assert rec["acc_se"] == pytest.approx(math.sqrt(rec["acc"] * (1 - rec["acc"]) / 3))
    assert f"acc {rec['acc']:.3f} ± {rec['acc_se']:.3f}" in proc.stderr
