"""The evaluate stage on a tiny model: MC / generation / query loss, base vs fine-tuned."""

import json
import math

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from tselect import catalog  # noqa: E402
from tselect.errors import UserError  # noqa: E402
from tselect.evaluate import EvaluateConfig, eval_spec, run  # noqa: E402
from tselect.finetune import FinetuneConfig  # noqa: E402
from tselect.finetune import run as finetune  # noqa: E402
from tselect.training import TrainConfig  # noqa: E402

EVAL_ROWS = [
    {"prompt": "Which gas do plants absorb?", "completion": "carbon dioxide",
     "context": "Question: Which gas do plants absorb?", "choices": ["oxygen", "carbon dioxide", "helium"], "gold": 1},
    {"prompt": "What is 12 times 12?", "completion": "144",
     "context": "Question: What is 12 times 12?", "choices": ["144", "56"], "gold": 0},
    {"prompt": "What sport uses a shuttlecock?", "completion": "Badminton.", "choices": ["Tennis", "Badminton"], "gold": 1},
    {"prompt": "Add 2 and 3.", "completion": "5", "answers": ["5", "five"]},
    {"prompt": "Capital of France?", "completion": "Paris", "answers": ["Paris"]},
    {"prompt": "Say something.", "completion": "Hello."},  # no choices/answers: counted, unscored
]


@pytest.fixture
def files(tmp_path, toy_data):
    _, query = toy_data
    ev = tmp_path / "eval.jsonl"
    ev.write_text("".join(json.dumps(r) + "\n" for r in EVAL_ROWS))
    return str(query), str(ev)


def _metrics(store, aid):
    art = catalog.resolve(store, aid, stage="evaluate")
    return art, json.loads((art.path / "metrics.json").read_text())


@pytest.mark.parametrize("prompt_format", ["plain", "chat"])
def test_base_model_metrics(store, files, tiny_model_dir, prompt_format):
    query, ev = files
    cfg = EvaluateConfig(target=query, eval_data=ev, model=str(tiny_model_dir), prompt_format=prompt_format,
                         max_new_tokens=4, batch_size=2)
    art, m = _metrics(store, run(cfg, store))
    mc, gen = m["eval"]["mc"], m["eval"]["generation"]
    assert (m["eval"]["n"], mc["n"], gen["n"], m["eval"]["n_unscored"]) == (6, 3, 2, 1)
    # The held-out loss covers every eval row, separately from the query split's loss.
    ev_loss = m["eval"]["loss"]
    assert ev_loss["n"] == 6 and ev_loss["loss"] == pytest.approx(sum(r["loss"] for r in ev_loss["per_example"]) / 6)
    assert art.record["eval_loss"] == pytest.approx(ev_loss["loss"]) and art.record["query_loss"] == m["query"]["loss"]
    preds = [r["pred"] == r["gold"] for r in mc["per_example"]]
    assert mc["acc"] == pytest.approx(sum(preds) / 3)
    assert all(len(r["loglikes"]) == len(row["choices"]) and all(x < 0 for x in r["loglikes"])
               for r, row in zip(mc["per_example"], EVAL_ROWS))
    assert all(0.0 <= r["f1"] <= 1.0 and r["num_em"] in (None, 0.0, 1.0) for r in gen["per_example"])
    q = m["query"]
    assert q["n"] == 2 and q["loss"] == pytest.approx(sum(r["loss"] for r in q["per_example"]) / 2)
    assert art.record["query_loss"] == q["loss"] and art.record["acc"] == mc["acc"]


def test_query_loss_matches_one_at_a_time(store, files, tiny_model_dir):
    """The stage's batched query loss equals a direct token-mean CE per example, averaged."""
    from tselect.data import load_dataset
    from tselect.data.tokenize import encode
    from tselect.models import load_model, resolve_model
    from tselect.scoring import token_losses

    query, _ = files
    _, m = _metrics(store, run(EvaluateConfig(target=query, model=str(tiny_model_dir), max_length=64), store))
    model, tok = load_model(resolve_model(str(tiny_model_dir)))
    rows = encode(load_dataset(query).examples, tok, 64).rows
    direct = []
    for r in rows:
        x = torch.tensor([r.input_ids])
        direct.append(float(token_losses(model, x, torch.ones_like(x), torch.tensor([r.labels])).mean_ce[0]))
    assert m["eval"]["n"] == 0  # a file target has no eval split unless one is given
    assert m["query"]["loss"] == pytest.approx(sum(direct) / len(direct), abs=1e-5)


def test_limit(store, files, tiny_model_dir):
    query, ev = files
    _, m = _metrics(store, run(EvaluateConfig(target=query, eval_data=ev, model=str(tiny_model_dir), limit=1), store))
    assert m["eval"]["n"] == 1 and m["eval"]["mc"]["n"] == 1 and m["query"]["n"] == 1


def test_finetuned_model_lowers_the_loss_it_trained_on(store, files, tiny_model_dir):
    query, _ = files
    base = EvaluateConfig(target=query, model=str(tiny_model_dir))
    _, before = _metrics(store, run(base, store))
    full = TrainConfig(method="full", lr=1e-2, epochs=10, batch_size=2, effective_batch_size=2, warmup_ratio=0.0)
    lora = TrainConfig(lr=1e-2, epochs=1, batch_size=2, effective_batch_size=2)
    for train in (full, lora):
        ft = finetune(FinetuneConfig(selection="full", pool=query, model=str(tiny_model_dir), train=train), store)
        art, after = _metrics(store, run(EvaluateConfig(target=query, finetune=ft), store))
        assert art.inputs["finetune"] == ft and math.isfinite(after["query"]["loss"])
        if train.method == "full":
            assert after["query"]["loss"] < 0.7 * before["query"]["loss"], "training on the query did not lower its loss"
    with pytest.raises(UserError, match="drop --model"):
        run(EvaluateConfig(target=query, finetune=ft, model=str(tiny_model_dir)), store)


def testeval_spec_defaults():
    assert eval_spec(EvaluateConfig(target="builtin:sciq")) == "builtin:sciq:eval"
    assert eval_spec(EvaluateConfig(target="builtin:sciq:eval")) is None
    assert eval_spec(EvaluateConfig(target="q.jsonl")) is None
    assert eval_spec(EvaluateConfig(target="q.jsonl", eval_data="e.jsonl")) == "e.jsonl"
    with pytest.raises(ValueError, match="prompt-format"):
        EvaluateConfig(prompt_format="fewshot")


def test_loss_only_mode_measures_the_same_losses_and_nothing_else(store, files, tiny_model_dir):
    query, ev = files
    common = dict(target=query, eval_data=ev, model=str(tiny_model_dir), max_new_tokens=4, batch_size=2)
    full_id, loss_id = run(EvaluateConfig(**common), store), run(EvaluateConfig(**common, metrics="loss"), store)
    assert full_id != loss_id
    _, full = _metrics(store, full_id)
    art, loss = _metrics(store, loss_id)
    assert "mc" not in loss["eval"] and "generation" not in loss["eval"] and art.record["acc"] is None
    assert loss["query"]["per_example"] == full["query"]["per_example"]
    for a, b in zip(loss["eval"]["loss"]["per_example"], full["eval"]["loss"]["per_example"], strict=True):
        # "all" reads answers from the MC packs: the same numbers up to float summation order
        assert (a["id"], a["n_tokens"]) == (b["id"], b["n_tokens"]) and a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert art.record["metrics_mode"] == "loss" and loss["eval"]["n"] == 6
    with pytest.raises(ValueError, match="--metrics"):
        EvaluateConfig(metrics="accuracy")


@pytest.mark.parametrize("prompt_format", ["plain", "chat"])
def test_answers_riding_in_mc_packs_score_like_separate_rows(files, tiny_model_dir, prompt_format):
    from tselect.data import load_dataset
    from tselect.data.tokenize import encode
    from tselect.evaluate import PROMPTS, eval_loss_and_mc, query_losses, score_mc
    from tselect.models import load_model, resolve_model
    from tselect.scoring_fast import answer_segment

    _, ev = files
    model, tok = load_model(resolve_model(str(tiny_model_dir)))
    rows = list(load_dataset(ev).examples)
    mc_rows = [ex for ex in rows if "choices" in ex.meta]
    cfg = EvaluateConfig(prompt_format=prompt_format, batch_size=2, max_length=64)
    loss, mc = eval_loss_and_mc(model, tok, rows, mc_rows, cfg)
    ref_loss, ref_mc = query_losses(model, tok, rows, 2, 64), score_mc(model, tok, mc_rows, cfg)
    assert [r["id"] for r in loss["per_example"]] == [r["id"] for r in ref_loss["per_example"]]
    for a, b in zip(loss["per_example"], ref_loss["per_example"]):
        assert a["n_tokens"] == b["n_tokens"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    for a, b in zip(mc["per_example"], ref_mc["per_example"]):
        assert a["loglikes"] == pytest.approx(b["loglikes"], rel=1e-5, abs=1e-5) and a["pred"] == b["pred"]
    enc = encode(mc_rows, tok, 64)
    rode = [answer_segment(r.input_ids, r.labels, PROMPTS[prompt_format](tok, mc_rows[k])[0]) is not None
            for r, k in zip(enc.rows, enc.kept)]
    # chat prompts are the training encoding's prefix, so answers ride; plain prompts never are
    assert all(rode) if prompt_format == "chat" else not any(rode)
