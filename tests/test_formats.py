"""Parsing pool/query files: the three row shapes, HF directories, and one-line errors."""

from __future__ import annotations

import json

import pytest

from tselect.data import Example, load_dataset
from tselect.errors import UserError


def write(tmp_path, lines, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return p


def test_three_formats_parse_to_the_same_conversation(tmp_path):
    chat = {"messages": [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"}]}
    alpaca = {"instruction": "Add 2 and 3.", "input": "", "output": "5"}
    prompt = {"prompt": "Add 2 and 3.", "completion": "5"}
    ids = {load_dataset(str(write(tmp_path, [r], f"{i}.jsonl"))).examples[0].id for i, r in enumerate([chat, alpaca, prompt])}
    assert len(ids) == 1


def test_alpaca_input_is_appended_and_meta_kept(tmp_path):
    row = {"instruction": "Translate.", "input": "hola", "output": "hello", "source_task": "mt", "id": "x1"}
    ex = load_dataset(str(write(tmp_path, [row]))).examples[0]
    assert ex.messages[0]["content"] == "Translate.\n\nhola"
    assert ex.meta == {"source_task": "mt"}  # the user's `id` is replaced by the content hash


def test_example_id_is_content_hash():
    a = Example.make([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    b = Example.make([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], {"x": 1})
    assert a.id == b.id and len(a.id) == 16


@pytest.mark.parametrize("lines, match", [
    (['{"prompt": "a", "completion": "b"}', "{not json"], r"d.jsonl:2: bad JSON"),
    ([{"body": "hello"}], r"d.jsonl:1: cannot tell the row format \(keys: body\)"),
    ([{"text": "  "}], r"d.jsonl:1: `text` is empty"),
    ([{"conversations": [{"from": "bot", "value": "q"}]}], r"d.jsonl:1: turn 0 needs `from`"),
    ([{"messages": []}], "non-empty list"),
    ([{"messages": [{"role": "user", "content": "q"}]}], "no assistant message"),
    ([{"messages": [{"role": "bot", "content": "q"}]}], "role"),
    ([{"prompt": 3, "completion": "b"}], "`prompt` must be a string"),
    (["[1, 2]"], "expected a JSON object"),
    ([], "holds no examples"),
    ([{"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": "b"}], "row 2 duplicates row 1"),
])
def test_bad_rows_give_one_line_errors(tmp_path, lines, match):
    with pytest.raises(UserError, match=match) as e:
        load_dataset(str(write(tmp_path, lines)))
    assert "\n" not in str(e.value)


def test_missing_file_and_bad_format(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(str(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="unknown --format"):
        load_dataset(str(write(tmp_path, [{"prompt": "a", "completion": "b"}])), fmt="csv")


def test_non_utf8_names_the_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "\xff", "completion": "b"}\n')
    with pytest.raises(UserError, match=r"d.jsonl:2: not valid UTF-8"):
        load_dataset(str(p))


def test_forced_format_overrides_detection(tmp_path):
    row = {"prompt": "p", "completion": "c", "instruction": "i", "output": "o"}
    ex = load_dataset(str(write(tmp_path, [row])), fmt="prompt").examples[0]
    assert ex.messages[0]["content"] == "p" and ex.meta == {"instruction": "i", "output": "o"}


def test_hf_save_to_disk_directory(tmp_path):
    import pyarrow as pa

    d = tmp_path / "hf"
    d.mkdir()
    table = pa.table({"prompt": ["a", "b"], "completion": ["x", "y"]})
    with pa.OSFile(str(d / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
    ds = load_dataset(str(d))
    assert [e.response for e in ds.examples] == ["x", "y"]
