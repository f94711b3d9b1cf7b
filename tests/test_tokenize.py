"""Chat rendering and label masks: loss only on assistant tokens."""

from __future__ import annotations

from tselect.data import Example
from tselect.data.tokenize import IGNORE, batches, encode, encode_example

CONV = Example.make([{"role": "user", "content": "Name a color."}, {"role": "assistant", "content": "Blue"}])


def label_text(tok, row):
    return tok.decode([t for t, lab in zip(row.input_ids, row.labels) if lab != IGNORE])


def test_template_free_masking_is_exact(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    row = encode_example(CONV, tok, 256)
    assert label_text(tok, row) == "Blue" + tok.eos_token
    prefix = tok.decode(row.input_ids[: row.labels.index(next(t for t in row.labels if t != IGNORE))])
    assert prefix.endswith("<|assistant|>\n") and "Name a color." in prefix


def test_chat_template_masking_covers_only_the_answer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.chat_template, "the tiny model ships a chat template"
    row = encode_example(CONV, tok, 256)
    assert label_text(tok, row).strip().startswith("Blue")
    assert "Name a color" not in label_text(tok, row)


def test_multi_turn_masks_every_assistant_turn(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ex = Example.make([{"role": "user", "content": "A?"}, {"role": "assistant", "content": "one"},
                       {"role": "user", "content": "B?"}, {"role": "assistant", "content": "two"}])
    text = label_text(tok, encode_example(ex, tok, 256))
    assert "one" in text and "two" in text and "A?" not in text and "B?" not in text


def test_truncation_skips_rows_without_labels_and_reports_them(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    long = Example.make([{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "end"}])
    enc = encode([CONV, long], tok, max_length=32)
    assert enc.kept == [0]
    assert enc.skipped == [(1, "no response tokens within max_length=32")]
    assert all(len(r.input_ids) <= 32 for r in enc.rows)


def test_batches_right_pad(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    short = Example.make([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}])
    enc = encode([CONV, short], tok, 256)
    idx, ids, mask, labels = next(batches(enc.rows, 2, pad_id=tok.pad_token_id))
    n0, n1 = (len(r.input_ids) for r in enc.rows)
    assert ids.shape == (2, max(n0, n1))
    assert mask.sum(1).tolist() == [n0, n1]
    shorter = 0 if n0 < n1 else 1
    assert (labels[shorter, min(n0, n1):] == IGNORE).all()
