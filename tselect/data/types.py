"""The one data currency every stage reads: a list of chat examples with stable ids."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def example_id(messages: list[dict[str, str]]) -> str:
    """Content hash of the conversation (roles + contents): the same text gets the same id anywhere."""
    payload = [{"role": m["role"], "content": m["content"]} for m in messages]
    return hashlib.sha256(_canonical(payload)).hexdigest()[:16]


@dataclass(frozen=True)
class Example:
    """One conversation. The loss falls on assistant turns only.

    messages: [{"role": "system"|"user"|"assistant", "content": str}, ...], at least one
        assistant turn. Query and pool examples alike end with the assistant answer.
    meta: free-form, JSON-serializable: `source_task`, `license`, `subtask`, and for
        evaluation rows `choices` (list[str]) and `gold` (int index) or `answers` (list[str]).
    """

    id: str
    messages: tuple[dict[str, str], ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    row: dict[str, Any] | None = field(default=None, compare=False, hash=False, repr=False)
    """The user's row as read (original layout and fields, their `id` included), for export;
    None for built-in data. Not part of the id or any hash."""

    @staticmethod
    def make(messages: list[dict[str, str]], meta: dict[str, Any] | None = None,
             row: dict[str, Any] | None = None) -> "Example":
        msgs = tuple({"role": m["role"], "content": m["content"]} for m in messages)
        return Example(id=example_id(list(msgs)), messages=msgs, meta=dict(meta or {}), row=row)

    @property
    def prompt(self) -> str:
        """All text before the final assistant turn, joined (for embedders and scorers)."""
        return "\n".join(m["content"] for m in self.messages[:-1])

    @property
    def response(self) -> str:
        return self.messages[-1]["content"]

    @property
    def text(self) -> str:
        return "\n".join(m["content"] for m in self.messages)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "messages": list(self.messages), **self.meta}

    def original(self) -> dict[str, Any]:
        """The row in the user's own layout and fields; tselect's chat form for built-in data."""
        return dict(self.row) if self.row is not None else self.to_json()


@dataclass(frozen=True)
class Dataset:
    """A named, ordered list of examples. `content_hash` covers every id in order and the meta."""

    name: str
    examples: tuple[Example, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def content_hash(self) -> str:
        h = hashlib.sha256()
        for ex in self.examples:
            h.update(ex.id.encode())
            h.update(_canonical(ex.meta))
        return h.hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.examples)
