"""Scoring on a tiny random Llama: padding invariance, hand-computed masked loss, forced MC."""

import math

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from tselect.metrics import mc_accuracy  # noqa: E402
from tselect.scoring import IGNORE, continuation_loglikes, encode_pair, token_losses  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_dir
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    # add_bos_token: the context gets a BOS, so the test can check none lands mid-sequence.
    return model, AutoTokenizer.from_pretrained(path, add_bos_token=True)


CONTEXTS = [
    "Question: What is the capital of France?\nAnswer:",
    "Which gas do plants absorb from the air? Answer: ",  # trailing space moves to the choice
    "Math: 12 times 12 is",
]
CHOICES = [
    [" Paris", " London", " the quick brown fox jumps"],
    ["carbon dioxide", "oxygen"],
    [" 144", " 56", " 19", " one hundred and forty four"],
]


def test_encode_pair_no_bos_mid_sequence(tiny):
    _, tok = tiny
    ids, n_ctx = encode_pair(tok, "Answer: ", "Paris", max_length=64)
    assert ids[0] == tok.bos_token_id
    assert tok.bos_token_id not in ids[n_ctx:]
    # trailing whitespace of the context is scored as part of the continuation
    assert ids[n_ctx:] == tok(" Paris", add_special_tokens=False)["input_ids"]
    assert ids == encode_pair(tok, "Answer:", " Paris", max_length=64)[0]


def test_encode_pair_truncates_context_from_left(tiny):
    _, tok = tiny
    cont = tok(" Paris", add_special_tokens=False)["input_ids"]
    ids, n_ctx = encode_pair(tok, "The quick brown fox jumps over the lazy dog.", " Paris", max_length=8)
    assert len(ids) == 8 and ids[n_ctx:] == cont and n_ctx == 8 - len(cont)


def test_batched_equals_one_at_a_time(tiny):
    model, tok = tiny
    batched = continuation_loglikes(model, tok, CONTEXTS, CHOICES, batch_size=4)
    single = continuation_loglikes(model, tok, CONTEXTS, CHOICES, batch_size=1)
    assert [len(b) for b in batched] == [len(c) for c in CHOICES]
    for b_row, s_row in zip(batched, single):
        assert b_row == pytest.approx(s_row, abs=1e-5), "right padding changed a score: check the attention mask"


def _rows(tok):
    texts = [("Add 2 and 3.", " 2 + 3 = 5"), ("Hi", " The dog sleeps in the sun today."), ("Q", " ok")]
    rows = []
    for prompt, answer in texts:
        p = tok(prompt)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"]
        rows.append((p + a, [IGNORE] * len(p) + a))
    return rows


def _batch(rows, pad_id):
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), 7)  # junk under the padding must be ignored
    for b, (x, y) in enumerate(rows):
        ids[b, : len(x)], mask[b, : len(x)], labels[b, : len(y)] = torch.tensor(x), 1, torch.tensor(y)
    return ids, mask, labels


def test_token_losses_padding_invariant(tiny):
    model, tok = tiny
    rows = _rows(tok)
    full = token_losses(model, *_batch(rows, tok.pad_token_id))
    for b, row in enumerate(rows):
        one = token_losses(model, *_batch([row], tok.pad_token_id))
        assert float(one.mean_ce[0]) == pytest.approx(float(full.mean_ce[b]), abs=1e-5)
        assert int(one.n_tokens[0]) == int(full.n_tokens[b])


def test_token_losses_hand_computed(tiny):
    model, tok = tiny
    ids, labels = _rows(tok)[0]
    n_prompt = sum(1 for y in labels if y == IGNORE)
    x = torch.tensor([ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=x).logits[0].double(), dim=-1)  # [T, V]
    # token t (a label position, t >= n_prompt) is predicted from position t-1
    picked = [float(logp[t - 1, ids[t]]) for t in range(n_prompt, len(ids))]
    expected = -sum(picked) / len(picked)
    got = token_losses(model, x, torch.ones_like(x), torch.tensor([labels]))
    assert int(got.n_tokens[0]) == len(ids) - n_prompt
    assert float(got.mean_ce[0]) == pytest.approx(expected, abs=1e-5)
    assert float(got.sum_logprob[0]) == pytest.approx(sum(picked), abs=1e-4)


def test_token_losses_no_label_tokens_is_nan(tiny):
    model, tok = tiny
    x = torch.tensor([tok("Hello there")["input_ids"]])
    got = token_losses(model, x, torch.ones_like(x), torch.full_like(x, IGNORE))
    assert math.isnan(float(got.mean_ce[0])) and int(got.n_tokens[0]) == 0


def test_forced_multiple_choice(tiny, tmp_path):
    """An lm_head with zero weights and a bias gives the same next-token distribution at every
    position, so each continuation's log-likelihood is a closed-form sum of log-softmax(bias)."""
    from transformers import AutoModelForCausalLM

    model, tok = tiny
    forced = AutoModelForCausalLM.from_pretrained(model.name_or_path, dtype=torch.float32).eval()
    vocab = forced.lm_head.out_features
    head = torch.nn.Linear(forced.lm_head.in_features, vocab, bias=True)
    torch.nn.init.zeros_(head.weight)
    bias = torch.zeros(vocab)
    gold_ids = {c: tok(c, add_special_tokens=False)["input_ids"] for c in [" Paris", " 144"]}
    for token_ids in gold_ids.values():
        bias[token_ids] = 5.0
    head.bias.data = bias
    forced.lm_head = head
    logp = torch.log_softmax(bias.double(), dim=0)

    contexts, choices = CONTEXTS[::2], [CHOICES[0], CHOICES[2]]
    got = continuation_loglikes(forced, tok, contexts, choices, batch_size=3)
    for row, conts in zip(got, choices):
        expected = [float(logp[tok(c, add_special_tokens=False)["input_ids"]].sum()) for c in conts]
        assert row == pytest.approx(expected, abs=1e-4)
    lengths = [[len(c.strip()) for c in conts] for conts in choices]
    result = mc_accuracy(got, [0, 0], lengths)
    assert (result.acc, result.acc_norm) == (1.0, 1.0), f"gold should win: {got}"
