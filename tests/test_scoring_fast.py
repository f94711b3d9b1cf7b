"""Cheap scoring equals the full-logits path: packed MC choices and head-at-label-positions losses."""

import math

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from tselect.data.tokenize import batches, encode  # noqa: E402
from tselect.scoring import fit_pair, loglikes_from_ids, token_losses  # noqa: E402
from tselect.scoring_fast import _packed_mask, choice_loglikes, pack_choices, row_losses  # noqa: E402

CONTEXTS = ["Question: What is the capital of France?\nAnswer:", "Which gas do plants absorb? Answer:",
            "Math: 12 times 12 is", "Say"]
CHOICES = [[" Paris", " London", " the quick brown fox jumps"], [" carbon dioxide", " oxygen"],
           [" 144", " 56", " 19", " one hundred and forty four"], [" hi"]]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir, add_bos_token=True)


def _ids(tok, text, special=True):
    return list(tok(text, add_special_tokens=special)["input_ids"])


def _both(model, tok, max_length=64, batch_size=3):
    """(packed scores, one pair per choice scores through the full-logits path)."""
    items, pairs = [], []
    for ctx, conts in zip(CONTEXTS, CHOICES):
        c_ids, k_ids = _ids(tok, ctx), [_ids(tok, k, special=False) for k in conts]
        items.append(pack_choices(tok, c_ids, k_ids, max_length))
        pairs.append([fit_pair(tok, c_ids, k, max_length) for k in k_ids])
    fast = choice_loglikes(model, items, tok.pad_token_id, batch_size)
    flat = loglikes_from_ids(model, [p for ps in pairs for p in ps], tok.pad_token_id, batch_size)
    slow, k = [], 0
    for ps in pairs:
        slow.append(flat[k : k + len(ps)])
        k += len(ps)
    return fast, slow


def test_pack_layout(tiny):
    _, tok = tiny
    it = pack_choices(tok, [1, 10, 11], [[20], [30, 31]], max_length=16)
    assert it.ids == [1, 10, 11, 20, 30, 31] and it.n_ctx == 3
    assert it.positions == [0, 1, 2, 3, 3, 4] and it.segments == [-1, -1, -1, 0, 1, 1]


def test_pack_cuts_context_so_longest_choice_fits(tiny):
    _, tok = tiny
    it = pack_choices(tok, list(range(100, 110)), [[1], [2, 3, 4]], max_length=8)
    assert it.n_ctx == 5 and it.ids[:5] == list(range(105, 110))  # 8 - 3 tokens of context, from the left


def test_packed_mask_exact():
    seg = torch.tensor([[-1, -1, 0, 1, 1, -2]])
    allowed = _packed_mask(seg, torch.float32)[0, 0] == 0
    expect = torch.tensor([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0],
                           [1, 1, 0, 1, 0, 0], [1, 1, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(allowed, expect)


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_packed_choices_equal_one_pair_at_a_time(tiny, batch_size):
    model, tok = tiny
    fast, slow = _both(model, tok, batch_size=batch_size)
    assert [len(f) for f in fast] == [len(c) for c in CHOICES]
    for f, s in zip(fast, slow):
        assert f == pytest.approx(s, rel=1e-5, abs=1e-5)


def test_packed_choices_through_a_lora_adapter(tiny):
    """get_base_model() path: a PeftModel with non-zero LoRA weights scores like its full forward."""
    from peft import LoraConfig, get_peft_model

    model, tok = tiny
    torch.manual_seed(0)
    peft = get_peft_model(type(model)(model.config).eval(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft.base_model.model.load_state_dict(model.state_dict(), strict=False)
    for n, p in peft.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.5)  # B = 0 at init would make the adapter a no-op
    fast, slow = _both(peft.eval(), tok)
    for f, s in zip(fast, slow):
        assert f == pytest.approx(s, rel=1e-5, abs=1e-5)


def test_row_losses_equal_full_logits_path(tiny):
    from tselect.data.types import Example

    model, tok = tiny
    texts = [("What gas do plants absorb?", "Carbon dioxide."), ("Add 2 and 3.", "5"),
             ("Give three tips for staying healthy.", "Eat well, sleep well, move daily.")]
    exs = [Example.make([{"role": "user", "content": q}, {"role": "assistant", "content": a}]) for q, a in texts]
    enc = encode(exs, tok, 64)
    for idx, ids, mask, labels in batches(enc.rows, 2, tok.pad_token_id):
        mean, n = row_losses(model, ids, mask, labels)
        ref = token_losses(model, ids, mask, labels)
        assert torch.equal(n, ref.n_tokens)
        assert mean.tolist() == pytest.approx(ref.mean_ce.tolist(), rel=1e-5)


def test_row_losses_nan_without_labels(tiny):
    model, tok = tiny
    ids = torch.tensor([[1, 5, 6, 7]])
    mean, n = row_losses(model, ids, torch.ones_like(ids), torch.full_like(ids, -100))
    assert n.tolist() == [0] and math.isnan(mean[0])


@pytest.mark.slow
def test_real_model_real_eval_rows_score_identically():
    """SmolLM2 on a few SciQ and ARC-Easy eval rows: packed MC and label-position losses match
    the full-logits path to float tolerance, through tselect.evaluate's own prompts."""
    from tselect.data import load_dataset
    from tselect.evaluate import PROMPTS
    from tselect.models import load_model, resolve_model

    torch.manual_seed(0)
    model, tok = load_model(resolve_model(None))
    for target in ("builtin:sciq:eval", "builtin:arc_easy:eval"):
        rows = load_dataset(target).examples[:4]
        items, pairs = [], []
        for ex in rows:
            prompt, sep = PROMPTS["chat"](tok, ex)
            conts = [_ids(tok, sep + c, special=False) for c in ex.meta["choices"]]
            items.append(pack_choices(tok, prompt, conts, 512))
            pairs += [fit_pair(tok, prompt, k, 512) for k in conts]
        fast = [v for vs in choice_loglikes(model, items, tok.pad_token_id, 4) for v in vs]
        assert fast == pytest.approx(loglikes_from_ids(model, pairs, tok.pad_token_id, 4), rel=1e-4, abs=1e-3)
        enc = encode(rows, tok, 512)
        for _, ids, mask, labels in batches(enc.rows, 4, tok.pad_token_id):
            mean, _ = row_losses(model, ids, mask, labels)
            assert mean.tolist() == pytest.approx(token_losses(model, ids, mask, labels).mean_ce.tolist(), rel=1e-4)
        # the held-out loss read from the MC packs (every SmolLM2 chat row's answer rides in its pack)
        from tselect.evaluate import EvaluateConfig, eval_loss_and_mc
        from tselect.scoring_fast import answer_segment

        assert all(answer_segment(r.input_ids, r.labels, PROMPTS["chat"](tok, rows[k])[0]) is not None
                   for r, k in zip(enc.rows, enc.kept))
        loss, _ = eval_loss_and_mc(model, tok, rows, rows, EvaluateConfig(batch_size=4, max_length=512))
        full = [float(token_losses(model, ids, mask, labels).mean_ce[0])
                for _, ids, mask, labels in batches(enc.rows, 1, tok.pad_token_id)]
        assert [r["loss"] for r in loss["per_example"]] == pytest.approx(full, rel=1e-4)

