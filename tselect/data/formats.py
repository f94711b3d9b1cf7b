"""Reading user data: JSONL in three row shapes, and HF `save_to_disk` directories.

Row shapes (auto-detected per file from the first row, or forced with `fmt`):
- chat:   {"messages": [{"role": ..., "content": ...}, ...]}   (tulu / OpenAI style)
- alpaca: {"instruction": ..., "input": ..., "output": ...}
- prompt: {"prompt": ..., "completion": ...}
Any other keys are kept as example meta (e.g. `source_task`, `subtask`, `license`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tselect.data.types import Dataset, Example
from tselect.errors import UserError
from tselect.files import atomic_path

FORMATS = ("chat", "alpaca", "prompt")
ROLES = {"system", "user", "assistant"}
FIX = "each line must be a JSON object with `messages`, `instruction`/`output`, or `prompt`/`completion`"


def load_dataset(spec: str, fmt: str | None = None) -> Dataset:
    """A dataset from a builtin name, a JSONL file, or an HF save_to_disk directory."""
    if fmt is not None and fmt not in FORMATS:
        raise UserError(f"unknown --format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if spec.startswith("builtin:"):
        from tselect.data.builtin import load_builtin

        return load_builtin(spec)
    path = Path(spec)
    if path.is_dir():
        return _finish(path, [_row_to_example(r, fmt, path, i + 1) for i, r in enumerate(_read_hf_dir(path))])
    if not path.is_file():
        raise UserError(f"data file {spec} does not exist; pass a JSONL file, an HF save_to_disk directory, or builtin:pool")
    return _finish(path, _read_jsonl(path, fmt))


def _finish(path: Path, examples: list[Example]) -> Dataset:
    if not examples:
        raise UserError(f"{path} holds no examples; give a file with at least one row")
    seen: dict[str, int] = {}
    for i, ex in enumerate(examples):
        if ex.id in seen:
            raise UserError(f"{path}: row {i + 1} duplicates row {seen[ex.id] + 1} (same conversation); remove duplicates so every example has a distinct id")
        seen[ex.id] = i
    return Dataset(name=str(path), examples=tuple(examples))


def _read_jsonl(path: Path, fmt: str | None) -> list[Example]:
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
        out.append(_row_to_example(row, fmt, path, lineno))
    return out


def _read_hf_dir(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa

    files = sorted(path.glob("*.arrow")) or sorted(path.glob("*/*.arrow"))
    if not files:
        raise UserError(f"{path} is a directory without .arrow files; pass a JSONL file or a `Dataset.save_to_disk` directory")
    rows: list[dict[str, Any]] = []
    for f in files:
        try:
            rows.extend(_read_arrow(f))
        except (pa.ArrowException, OSError, ValueError, TypeError) as e:
            raise UserError(f"{f} is not a readable Arrow file ({type(e).__name__}: {str(e)[:120]}); "
                            "rewrite the directory with `Dataset.save_to_disk` or pass a JSONL file") from None
    return rows


def _read_arrow(f: Path) -> list[dict[str, Any]]:
    import pyarrow as pa

    with pa.memory_map(str(f)) as src:
        try:
            table = pa.ipc.open_stream(src).read_all()
        except pa.ArrowInvalid:
            table = pa.ipc.open_file(src).read_all()
    return table.to_pylist()


def detect_format(row: dict[str, Any]) -> str | None:
    if "messages" in row:
        return "chat"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "prompt" in row and "completion" in row:
        return "prompt"
    return None


def _row_to_example(row: Any, fmt: str | None, path: Path, lineno: int) -> Example:
    where = f"{path}:{lineno}"
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(row).__name__}; {FIX}")
    kind = fmt or detect_format(row)
    if kind is None:
        keys = ", ".join(sorted(row)[:6]) or "none"
        raise UserError(f"{where}: cannot tell the row format (keys: {keys}); {FIX}, or pass --format")
    messages, used = PARSERS[kind](row, where)
    meta = {k: v for k, v in row.items() if k not in used and k != "id"}
    try:
        json.dumps([messages, meta], ensure_ascii=False).encode("utf-8")  # what ids and hashes are made of
    except UnicodeEncodeError:
        raise UserError(f"{where}: text holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is "
                        "not a character; fix the escape in the row or drop the row") from None
    except (ValueError, RecursionError) as e:  # e.g. circular or absurdly deep meta from an arrow dir
        raise UserError(f"{where}: row cannot be serialized ({e}); simplify the extra fields") from None
    return Example.make(messages, meta)


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


PARSERS = {"chat": _parse_chat, "alpaca": _parse_alpaca, "prompt": _parse_prompt}


def write_jsonl(path: Path, examples: list[Example]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex.to_json(), ensure_ascii=False) + "\n")
