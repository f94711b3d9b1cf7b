"""Score strategies: exact values on hand-made inputs, padding invariance, and one in-process
run per registered strategy on the tiny model + toy JSONL, asserting on artifact contents."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tselect import catalog as C  # noqa: E402
from tselect import store as S  # noqa: E402
from tselect.data import load_dataset  # noqa: E402
from tselect.data.tokenize import IGNORE, EncodedRow  # noqa: E402
from tselect.errors import UserError  # noqa: E402
from tselect.scores import STRATEGIES, ScoreConfig, ifd, judge, length, miwv, run  # noqa: E402
from tselect.scores.common import align, answer_row, clip, label_losses, mean_losses  # noqa: E402
from tests.scores import make_features  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tests share 2 cores; one intra-op thread keeps them predictable


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from tselect.models import load_model, resolve_model

    return load_model(resolve_model(str(tiny_model_dir)), device="cpu")


# ---- exact values on hand-made inputs --------------------------------------------------------

def test_length_counts_answer_tokens_plus_end_of_turn(tiny, toy_data):
    _, tok = tiny
    for ex in load_dataset(str(toy_data[0])).examples[:6]:
        expected = len(tok(ex.response, add_special_tokens=False)["input_ids"]) + 1  # + the closing </s>
        assert length.token_counts(ex, tok)[0] == expected, ex.response


def test_ifd_ratio_drops_at_or_above_one():
    got = ifd.ifd_ratio([1.0, 2.0, 3.0, np.nan, 1.0, 0.5], [2.0, 2.0, 2.0, 1.0, 0.0, np.nan])
    np.testing.assert_array_equal(got, [0.5, np.nan, np.nan, np.nan, np.nan, np.nan])


def test_ifd_score_is_ratio_of_the_two_losses(monkeypatch, tiny, toy_data):
    _, tok = tiny
    pool = load_dataset(str(toy_data[0]))
    n = len(pool)
    cond = np.linspace(1.0, 3.0, n)
    alone = np.full(n, 2.0)
    calls = []

    def fake_losses(model, tokenizer, rows, batch_size, label):
        calls.append(rows)
        return cond if "L(A|Q)" in label else alone

    monkeypatch.setattr(ifd, "load", lambda ref: (None, tok))
    monkeypatch.setattr(ifd, "mean_losses", fake_losses)
    out = ifd.score(ScoreConfig(strategy="ifd"), pool, None, None)
    expected = np.where(cond / 2.0 < 1, cond / 2.0, np.nan)
    np.testing.assert_allclose(out.scores, expected, equal_nan=True)
    assert np.isnan(out.scores[-1]) and out.scores[0] == pytest.approx(0.5)
    # Both renderings score the same answer tokens; the alone one carries no instruction text.
    for a, b in zip(*calls):
        assert [t for t in a.labels if t != IGNORE] == [t for t in b.labels if t != IGNORE]
        assert len(b.input_ids) < len(a.input_ids)


def test_answer_row_labels_only_the_final_turn(tiny):
    _, tok = tiny
    msgs = [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"},
            {"role": "user", "content": "And 7 times 8?"}, {"role": "assistant", "content": "56"}]
    row = answer_row(tok, msgs, 256)
    assert tok.decode([t for t in row.labels if t != IGNORE]) == "56</s>"
    cut = answer_row(tok, msgs, len(answer_row(tok, msgs[:2], 256).input_ids))  # ends after turn 1
    assert all(t == IGNORE for t in cut.labels), "a truncated-away final turn must leave no labels"


def test_clip_and_align_keep_a_common_answer_prefix():
    a = EncodedRow([1, 2, 3, 4, 5, 6], [IGNORE, IGNORE, 3, 4, 5, 6])
    b = EncodedRow([9, 3, 4], [IGNORE, 3, 4])
    ca, cb, n = align(a, b)
    assert n == 2 and ca == EncodedRow([1, 2, 3, 4], [IGNORE, IGNORE, 3, 4]) and cb == b
    assert clip(a, 0) == EncodedRow(a.input_ids, [IGNORE] * 6)


def test_nearest_neighbour_excludes_self_and_breaks_ties_low():
    rows = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])
    for chunk in (1, 2, 3, 100):  # the answer must not depend on the streaming block size
        nbr, sim = miwv.nearest_neighbours([rows], [1.0], chunk_rows=chunk)
        assert nbr.tolist() == [1, 3, 3, 1], chunk
        np.testing.assert_allclose(sim, [0.8, 0.96, 0.8, 0.96], rtol=1e-6)
    same = np.ones((3, 2)) / math.sqrt(2)
    for chunk in (1, 2, 100):
        assert miwv.nearest_neighbours([same], [1.0], chunk_rows=chunk)[0].tolist() == [1, 0, 0]
    lone, lone_sim = miwv.nearest_neighbours([rows[:1]], [1.0])
    assert lone.tolist() == [-1] and np.isnan(lone_sim[0])


def test_nearest_neighbour_uses_checkpoint_weights():
    a = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # checkpoint 1: row 0 ~ row 1
    b = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # checkpoint 2: row 0 ~ row 2
    assert miwv.nearest_neighbours([a, b], [0.7, 0.3])[0][0] == 1
    assert miwv.nearest_neighbours([a, b], [0.3, 0.7])[0][0] == 2


def test_one_shot_puts_the_demonstration_after_the_system_turn():
    x = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    y = [{"role": "system", "content": "T"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert [m["content"] for m in miwv.one_shot(x, y)] == ["S", "q", "a", "Q", "A"]
    assert [m["content"] for m in miwv.one_shot(x[1:], y[1:])] == ["q", "a", "Q", "A"]


def test_expected_rating_from_hand_made_logits():
    logits = np.zeros((1, 10))
    p = np.array([0.1, 0.2, 0.3, 0.2, 0.2])
    logits[0, [3, 4, 5, 6, 7]] = np.log(p)  # the digit mass is Σp / (Σp + 5 · e^0) = 1/6
    expected, probs, mass = judge.expected_rating(logits, [3, 4, 5, 6, 7])
    assert expected[0] == pytest.approx(1 * .1 + 2 * .2 + 3 * .3 + 4 * .2 + 5 * .2)
    np.testing.assert_allclose(probs[0], p)
    assert mass[0] == pytest.approx(1 / 6)


def test_judge_reads_distinct_digit_tokens_at_the_generation_position(tiny):
    _, tok = tiny
    digits = judge.digit_ids(tok)
    assert [tok.decode([d]) for d in digits] == ["1", "2", "3", "4", "5"]
    assert tok.decode(judge.prompt_ids(tok, "Rate it.")).endswith("<|assistant|>\n")


def test_judge_prompt_without_a_chat_template_ends_at_the_tulu_assistant_header(tmp_path):
    from tests.tiny_model import build_tiny_model_no_template
    from tselect.models import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model(str(build_tiny_model_no_template(tmp_path / "plain"))))
    ids = judge.prompt_ids(tok, "Rate it.")
    assert tok.decode(ids).endswith("<|user|>\nRate it.\n<|assistant|>\n")
    assert [tok.decode([d]) for d in judge.digit_ids(tok)] == ["1", "2", "3", "4", "5"]


# ---- padding invariance on the tiny model ----------------------------------------------------

def test_batched_losses_equal_one_at_a_time(tiny, toy_data):
    model, tok = tiny
    pool = load_dataset(str(toy_data[0])).examples[:9]
    rows = [answer_row(tok, ex.messages, 64) for ex in pool]
    batched = mean_losses(model, tok, rows, 4, "test")
    single = mean_losses(model, tok, rows, 1, "test")
    np.testing.assert_allclose(batched, single, atol=1e-5, err_msg="right padding changed a loss: check the mask")


class IgnoresLogitsToKeep(torch.nn.Module):
    """A causal LM that accepts but ignores `logits_to_keep` (as older transformers do)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, **ignored):
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


def test_label_losses_match_the_full_logits_reference(tiny, toy_data):
    from tselect.data.tokenize import batches
    from tselect.scoring import token_losses

    model, tok = tiny
    rows = [answer_row(tok, ex.messages, 64) for ex in load_dataset(str(toy_data[0])).examples[:5]]
    rows.append(EncodedRow(rows[0].input_ids, [IGNORE] * len(rows[0].input_ids)))  # no label: NaN
    _, ids, mask, labels = next(batches(rows, len(rows), tok.pad_token_id))
    want = token_losses(model, ids, mask, labels).mean_ce.double()
    for m in (model, IgnoresLogitsToKeep(model)):
        torch.testing.assert_close(label_losses(m, ids, mask, labels), want, atol=1e-5, rtol=1e-5, equal_nan=True)
    assert torch.isnan(want[-1])


def test_last_logits_equal_unpadded_last_position(tiny):
    from tselect.data.tokenize import batches

    model, tok = tiny
    prompts = [judge.prompt_ids(tok, t) for t in ("Rate it.", "Rate this much longer answer, please.", "Go")]
    rows = [EncodedRow(p, [IGNORE] * len(p)) for p in prompts]
    _, ids, mask, _ = next(batches(rows, 3, tok.pad_token_id))
    got = judge.last_logits(model, ids, mask)  # [3, V]
    for b, p in enumerate(prompts):
        with torch.no_grad():
            want = model(input_ids=torch.tensor([p])).logits[0, -1]
        torch.testing.assert_close(got[b], want, atol=1e-5, rtol=1e-5)


# ---- the stage, once per registered strategy -------------------------------------------------

CHECKS = {  # what every score of a strategy must satisfy on the toy pool
    "length": lambda s: np.all(s >= 2) and np.all(s == np.round(s)),
    "ifd": lambda s: np.all(np.isnan(s) | ((s > 0) & (s < 1))),
    "miwv": lambda s: np.all(np.isfinite(s)),
    "judge": lambda s: np.all((s >= 1) & (s <= 5)),
}


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_writes_scores_details_and_costs(name, store, toy_data, tiny_model_dir):
    pool_path = toy_data[0]
    pool = load_dataset(str(pool_path))
    features = make_features(store, pool_path, toy_data[1], len(pool)) if STRATEGIES[name].needs_features else None
    cfg = ScoreConfig(strategy=name, pool=str(pool_path), model=str(tiny_model_dir), features=features,
                      max_length=64, batch_size=5)
    aid = run(cfg, store)
    art = C.resolve(store, aid, stage="scores")
    scores = S.read_array(C.checked_path(art, "scores.npy"))
    assert scores.dtype == np.float64 and scores.shape == (len(pool),)
    assert CHECKS[name](scores), scores
    details = json.loads(C.checked_path(art, "details.json").read_text())
    assert details["ids"] == [ex.id for ex in pool.examples]
    assert details["columns"] and all(len(c) == len(pool) for c in details["columns"].values())
    assert art.inputs["pool"] == pool.content_hash and len(art.inputs["model"]) == 64
    assert {"wall_s", "n", "tokens"} <= set(art.record) and art.record["n"] == len(pool) and art.record["tokens"] > 0
    assert run(cfg, store) == aid  # a rerun finds the artifact


def test_ifd_details_hold_both_losses(store, toy_data, tiny_model_dir):
    aid = run(ScoreConfig(strategy="ifd", pool=str(toy_data[0]), model=str(tiny_model_dir), max_length=64), store)
    art = C.resolve(store, aid)
    cols = json.loads((art.path / "details.json").read_text())["columns"]
    scores = S.read_array(art.path / "scores.npy")
    raw = np.array(cols["loss_answer_given_instruction"]) / np.array(cols["loss_answer_alone"])
    np.testing.assert_allclose(np.where(raw < 1, raw, np.nan), scores, equal_nan=True)


def test_unknown_strategy_and_foreign_features_are_user_errors(store, toy_data, tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match="unknown strategy 'nope'.*length, ifd, miwv, judge"):
        run(ScoreConfig(strategy="nope", pool=str(toy_data[0])), store)
    other = tmp_path / "other" / "pool.jsonl"
    other.parent.mkdir()
    other.write_text(toy_data[0].read_text().splitlines()[0] + "\n")
    features = make_features(store, other, toy_data[1], 1)
    with pytest.raises(UserError, match="computed on another pool"):
        run(ScoreConfig(strategy="miwv", pool=str(toy_data[0]), model=str(tiny_model_dir), features=features), store)


def test_model_dir_that_is_not_a_causal_lm_is_a_user_error(store, toy_data, tmp_path):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    with pytest.raises(UserError, match="not a causal LM"):
        run(ScoreConfig(strategy="ifd", pool=str(toy_data[0]), model=str(bert)), store)


def test_config_requires_features_for_miwv_only():
    with pytest.raises(ValueError, match="miwv needs --features"):
        ScoreConfig(strategy="miwv")
    with pytest.raises(ValueError, match="only by --strategy miwv"):
        ScoreConfig(strategy="ifd", features="featurize-0")
