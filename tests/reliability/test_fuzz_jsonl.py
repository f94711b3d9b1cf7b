"""Fuzz the JSONL reader: any bytes, any lines, any JSON values → a Dataset or a one-line UserError.

Never another exception (no traceback reaches the user), whatever the file holds. Also: what
tselect writes (`export`, data.formats.write_jsonl) reads back as the same examples.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tselect.data.formats import load_dataset, write_jsonl
from tselect.data.types import Example
from tselect.errors import UserError

# The harness (python -m reliability.run) raises the example count through TSELECT_FUZZ_EXAMPLES.
SETTINGS = settings(max_examples=int(os.environ.get("TSELECT_FUZZ_EXAMPLES", "150")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], database=None)
CALLS = [0]  # files read (the harness reports it as cases tried)
FORMATS = st.sampled_from([None, "chat", "alpaca", "prompt"])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
texts = st.text(max_size=30)  # any code points, including U+2028, U+0085, lone surrogates
roles = st.sampled_from(["user", "assistant", "system", "robot", "", None])
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": texts | json_values}), max_size=4)
rowlike = st.one_of(
    st.fixed_dictionaries({"messages": messages}, optional={"source_task": json_values, "id": json_values}),
    st.fixed_dictionaries({"instruction": texts | json_values, "output": texts | json_values},
                          optional={"input": texts | json_values}),
    st.fixed_dictionaries({"prompt": texts | json_values, "completion": texts | json_values}),
    st.dictionaries(st.text(max_size=10), json_values, max_size=4),
    json_values,
)


def load_bytes(data: bytes, fmt: str | None):
    CALLS[0] += 1
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "data.jsonl"
        path.write_bytes(data)
        try:
            ds = load_dataset(str(path), fmt)
        except UserError as e:
            assert "\n" not in str(e) and str(e), repr(str(e))
            return None
        assert len(ds) >= 1 and len({ex.id for ex in ds.examples}) == len(ds)
        ds.content_hash  # the dataset must be hashable into artifact ids, too
        return ds


@SETTINGS
@given(st.binary(max_size=300), FORMATS)
@example(b"\xef\xbb\xbf" + b'{"prompt": "a", "completion": "b"}\n', None)  # UTF-8 BOM
@example(b"[" * 100_000 + b"]" * 100_000 + b"\n", None)  # nesting deeper than the recursion limit
@example(b'{"prompt": "\\ud800", "completion": "b"}\n', None)  # escaped lone surrogate
@example(b'{"prompt": "a", "completion": "b", "meta": "\\udfff"}\n', None)
def test_arbitrary_bytes(data, fmt):
    load_bytes(data, fmt)


@SETTINGS
@given(st.lists(rowlike, min_size=0, max_size=6), FORMATS, st.booleans())
def test_json_rows_of_any_shape(rows, fmt, ascii_only):
    data = "\n".join(json.dumps(r, ensure_ascii=ascii_only) for r in rows).encode("utf-8", "surrogatepass")
    load_bytes(data, fmt)


@SETTINGS
@given(st.lists(st.text(max_size=40) | st.sampled_from(["{", "}", "[]", "null", '"x"', "{}", "\r", "\x85"]),
                max_size=8), FORMATS)
def test_arbitrary_text_lines(lines, fmt):
    load_bytes("\n".join(lines).encode("utf-8", "surrogatepass"), fmt)


safe_text = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=30)


@SETTINGS
@given(st.lists(st.tuples(safe_text, safe_text), min_size=1, max_size=5, unique=True))
def test_written_rows_read_back_identically(pairs):
    examples = [Example.make([{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                             {"source_task": "t"}) for q, a in pairs]
    if len({ex.id for ex in examples}) != len(examples):
        return
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "out.jsonl"
        write_jsonl(path, examples)
        ds = load_dataset(str(path))
    assert [ex.id for ex in ds.examples] == [ex.id for ex in examples]
    assert [ex.messages for ex in ds.examples] == [ex.messages for ex in examples]


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85"])
def test_line_separators_inside_strings_are_text(tmp_path, sep):
    """JSON strings may hold these raw (write_jsonl writes them so); only '\\n' ends a JSONL record."""
    row = {"prompt": f"a{sep}b", "completion": "c"}
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8", newline="")
    assert sep in path.read_text(encoding="utf-8")
    ds = load_dataset(str(path))
    assert ds.examples[0].messages[0]["content"] == f"a{sep}b"


def test_crlf_files_and_bom_read_like_plain_ones(tmp_path):
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}]
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps(r) + "\n" for r in rows))
    crlf = tmp_path / "crlf.jsonl"
    crlf.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\r\n" for r in rows).encode())
    assert load_dataset(str(crlf)).content_hash == load_dataset(str(plain)).content_hash


def test_bad_line_numbers_count_newlines_only(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"prompt": "a\u2028b", "completion": "c"}, ensure_ascii=False) + "\n{oops\n",
                    encoding="utf-8")
    with pytest.raises(UserError, match=r"x.jsonl:2: bad JSON"):
        load_dataset(str(path))
