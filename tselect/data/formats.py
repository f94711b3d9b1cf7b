"""Reading user data: row layouts, column mapping, splits and duplicates.

Row layouts (auto-detected per file from the first row, or forced with `fmt`):
- chat:     {"messages": [{"role": ..., "content": ...}, ...]}   (tulu / OpenAI style)
- sharegpt: {"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}
- alpaca:   {"instruction": ..., "input": ..., "output": ...}
- prompt:   {"prompt": ..., "completion": ...}
- text:     {"text": ...}   (plain text; the whole text is the response the loss falls on)
Any other keys are kept as example meta (e.g. `source_task`, `subtask`, `license`), and the
row itself, user `id` included, is kept on the example (`Example.row`) so export can write it
back unchanged. JSONL is read here (bad rows name their line); every other container
(parquet, CSV, JSON, save_to_disk dirs, hub ids) through the `datasets` library (`readers`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tselect.data.types import Dataset, Example
from tselect.errors import UserError
from tselect.files import atomic_path

FORMATS = ("chat", "sharegpt", "alpaca", "prompt", "text")
ROLES = {"system", "user", "assistant"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "model": "assistant", "system": "system"}
# Field names a --columns mapping may target (`response` is an alias of `completion`).
FIELDS = ("messages", "conversations", "instruction", "input", "output", "prompt", "completion", "text")
FIX = ("each row must hold `messages`, `conversations`, `instruction`/`output`, `prompt`/`completion` or `text`"
       " (map other names with --columns)")


def load_dataset(spec: str, fmt: str | None = None, *, split: str | None = None,
                 columns: tuple[tuple[str, str], ...] = (), dedup: bool = False, flag: str = "--pool") -> Dataset:
    """A dataset from a builtin name, a JSONL/parquet/CSV/JSON file, a save_to_disk dir or a hub id.

    columns: (field, source column) pairs renaming the user's columns to a layout's fields.
    dedup: drop rows whose conversation repeats an earlier one (the first is kept) instead of failing.
    """
    if fmt is not None and fmt not in FORMATS:
        raise UserError(f"unknown --format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if spec.startswith("builtin:"):
        from tselect.data.builtin import load_builtin

        return load_builtin(spec)
    mapping = column_mapping(columns)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() in (".jsonl", ".ndjson", ""):
        if split not in (None, "train"):
            raise UserError(f"{flag} {spec} is one file, a single split; drop --split {split}")
        examples, origin = _read_jsonl(path, fmt, mapping), {"kind": "jsonl", "split": split}
    else:
        from tselect.data.readers import read_rows

        rows, origin = read_rows(spec, split, flag)
        examples = [_row_to_example(r, fmt, spec, i + 1, mapping) for i, r in enumerate(rows)]
    return _finish(spec, examples, dedup, origin)


def column_mapping(columns) -> dict[str, str]:
    """(field, source) pairs -> {source column: field}; fields must be layout fields."""
    out: dict[str, str] = {}
    for field_name, source in columns:
        target = "completion" if field_name == "response" else field_name
        if target not in FIELDS:
            raise UserError(f"--columns {field_name}={source}: {field_name!r} is not a field tselect reads; "
                            f"map to one of {', '.join(FIELDS)} (or response)")
        out[source] = target
    return out


def parse_columns(text: str | None) -> tuple[tuple[str, str], ...]:
    """`prompt=question,response=answer` -> (("prompt", "question"), ("response", "answer"))."""
    pairs = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise UserError(f"--columns '{item}' must look like FIELD=COLUMN, e.g. --columns prompt=question,response=answer")
        k, v = item.split("=", 1)
        pairs.append((k.strip(), v.strip()))
    return tuple(sorted(pairs))


def _finish(spec: str, examples: list[Example], dedup: bool, origin: dict) -> Dataset:
    if not examples:
        raise UserError(f"{spec} holds no examples; give a file with at least one row")
    seen: dict[str, int] = {}
    kept = []
    for i, ex in enumerate(examples):
        if ex.id in seen:
            if dedup:
                continue
            raise UserError(f"{spec}: row {i + 1} duplicates row {seen[ex.id] + 1} (same conversation); pass --dedup "
                            "to keep the first of each, or remove duplicates so every example has a distinct id")
        seen[ex.id] = i
        kept.append(ex)
    if len(kept) < len(examples):
        from tselect.progress import note

        note(f"{spec}: --dedup dropped {len(examples) - len(kept)} duplicate rows (kept the first of each); "
             f"{len(kept)} of {len(examples)} remain")
    origin = {**origin, "rows_read": len(examples), "duplicates_dropped": len(examples) - len(kept)}
    return Dataset(name=str(spec), examples=tuple(kept), meta={"origin": origin})


def _read_jsonl(path: Path, fmt: str | None, mapping: dict[str, str]) -> list[Example]:
    out = []
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a leading byte-order mark (Windows editors) is not data
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not valid UTF-8; re-encode the file as UTF-8") from None
    # Only "\n" ends a JSONL record: str.splitlines() would also split on U+2028, U+0085, \x0b, ...
    # which JSON strings may hold raw (write_jsonl writes them so).
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: bad JSON ({e.msg} at column {e.colno}); {FIX}") from None
        except RecursionError:
            raise UserError(f"{path}:{lineno}: JSON nested too deeply to read; {FIX}") from None
        except ValueError as e:  # e.g. an integer of more than 4,300 digits
            raise UserError(f"{path}:{lineno}: unreadable JSON value ({str(e)[:90]}); {FIX}") from None
        out.append(_row_to_example(row, fmt, path, lineno, mapping))
    return out


def detect_format(row: dict[str, Any]) -> str | None:
    if "messages" in row:
        return "chat"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "prompt" in row and "completion" in row:
        return "prompt"
    if "text" in row:
        return "text"
    return None


def _row_to_example(raw: Any, fmt: str | None, path, lineno: int, mapping: dict[str, str] | None = None) -> Example:
    where = f"{path}:{lineno}"
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(raw).__name__}; {FIX}")
    row = _renamed(raw, mapping, where) if mapping else raw
    kind = fmt or detect_format(row)
    if kind is None:
        keys = ", ".join(sorted(row)[:6]) or "none"
        raise UserError(f"{where}: cannot tell the row format (keys: {keys}); {FIX}, or pass --format")
    messages, used = PARSERS[kind](row, where)
    meta = {k: v for k, v in row.items() if k not in used and k != "id"}  # ids and hashes ignore the user `id`
    try:
        json.dumps([messages, meta], ensure_ascii=False).encode("utf-8")  # what ids and hashes are made of
    except UnicodeEncodeError:
        raise UserError(f"{where}: text holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is "
                        "not a character; fix the escape in the row or drop the row") from None
    except (ValueError, RecursionError) as e:  # e.g. circular or absurdly deep meta from an arrow dir
        raise UserError(f"{where}: row cannot be serialized ({e}); simplify the extra fields") from None
    return Example.make(messages, meta, row=raw)


def _renamed(row: dict, mapping: dict[str, str], where: str) -> dict:
    """The row with mapped source columns renamed to their fields (a missing source is an error)."""
    missing = [src for src in mapping if src not in row]
    if missing:
        keys = ", ".join(sorted(row)[:8])
        raise UserError(f"{where}: --columns names column {missing[0]!r}, which the row lacks (keys: {keys}); fix the mapping")
    # A column already named like a mapped field (a `prompt` next to `prompt=question`) gives way to the mapping.
    return {mapping.get(k, k): v for k, v in row.items() if not (k not in mapping and k in mapping.values())}


def _text(row: dict, key: str, where: str, required: bool = True) -> str:
    value = row.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise UserError(f"{where}: field `{key}` must be a string, got {type(value).__name__}; fix the row or drop it")
    return value


def _parse_chat(row: dict, where: str) -> tuple[list[dict[str, str]], set[str]]:
    msgs = row.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise UserError(f"{where}: `messages` must be a non-empty list of {{role, content}} objects")
    out = []
    for k, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise UserError(f"{where}: message {k} needs `role` in system/user/assistant and a string `content`")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in out):
        raise UserError(f"{where}: no assistant message, so there is no response to learn; add one or drop the row")
    return out, {"messages"}


def _parse_alpaca(row: dict, where: str) -> tuple[list[dict[str, str]], set[str]]:
    instruction = _text(row, "instruction", where)
    extra = _text(row, "input", where, required=False)
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": _text(row, "output", where)}], {"instruction", "input", "output"}


def _parse_prompt(row: dict, where: str) -> tuple[list[dict[str, str]], set[str]]:
    return ([{"role": "user", "content": _text(row, "prompt", where)},
             {"role": "assistant", "content": _text(row, "completion", where)}], {"prompt", "completion"})


def _parse_sharegpt(row: dict, where: str) -> tuple[list[dict[str, str]], set[str]]:
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise UserError(f"{where}: `conversations` must be a non-empty list of {{from, value}} objects")
    out = []
    for k, t in enumerate(turns):
        role = SHAREGPT_ROLES.get(t.get("from")) if isinstance(t, dict) else None
        if role is None or not isinstance(t.get("value"), str):
            raise UserError(f"{where}: turn {k} needs `from` in {'/'.join(SHAREGPT_ROLES)} and a string `value`")
        out.append({"role": role, "content": t["value"]})
    if not any(m["role"] == "assistant" for m in out):
        raise UserError(f"{where}: no gpt turn, so there is no response to learn; add one or drop the row")
    return out, {"conversations"}


def _parse_text(row: dict, where: str) -> tuple[list[dict[str, str]], set[str]]:
    text = _text(row, "text", where)
    if not text.strip():
        raise UserError(f"{where}: `text` is empty, so there is nothing to learn; drop the row")
    return [{"role": "assistant", "content": text}], {"text"}


PARSERS = {"chat": _parse_chat, "sharegpt": _parse_sharegpt, "alpaca": _parse_alpaca, "prompt": _parse_prompt,
           "text": _parse_text}


def write_jsonl(path: Path, examples: list[Example]) -> None:
    write_rows(path, [ex.to_json() for ex in examples])


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows to `path` by its suffix: JSONL (default), .json (one list), .parquet or .csv; atomic."""
    kind = path.suffix.lower().lstrip(".")
    with atomic_path(path) as tmp:
        if kind in ("parquet", "csv"):
            from tselect.data.readers import write_table

            write_table(tmp, rows, kind)
            return
        with open(tmp, "w", encoding="utf-8") as f:
            if kind == "json":
                json.dump(rows, f, ensure_ascii=False, indent=1, default=str)
                f.write("\n")
            else:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
