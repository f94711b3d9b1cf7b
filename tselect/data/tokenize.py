"""Chat rendering and label masking: loss falls on assistant tokens only.

With a chat template the conversation is rendered by the tokenizer's own template; the
assistant spans are located by rendering each prefix (everything before an assistant turn,
with the generation prompt) and taking the token boundary. Without a template a tulu-style
`<|user|>\\n…\\n<|assistant|>\\n…</s>` rendering is used. Sequences are truncated on the right
to `max_length`; a row left with no label tokens is skipped and reported, never silently.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from tselect.data.types import Example
from tselect.tokens import IGNORE, right_pad

# The one --max-length default of every stage (featurize, score, finetune, evaluate): the same
# rows are truncated the same way wherever they are read.
MAX_LENGTH = 512


@dataclass(frozen=True)
class EncodedRow:
    input_ids: list[int]
    labels: list[int]  # IGNORE outside assistant tokens


@dataclass
class Encoded:
    rows: list[EncodedRow]  # one per kept example, in order
    kept: list[int]  # index into the input examples for each row
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (example index, reason)

    @property
    def n_tokens(self) -> int:
        return sum(len(r.input_ids) for r in self.rows)


def _has_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _render_tulu(messages: Sequence[dict[str, str]], eos: str) -> list[tuple[str, bool]]:
    """[(text, is_label)] pieces of a template-free rendering."""
    pieces = []
    for m in messages:
        if m["role"] == "assistant":
            pieces.append(("<|assistant|>\n", False))
            pieces.append((m["content"].strip() + eos, True))
            pieces.append(("\n", False))
        else:
            pieces.append((f"<|{m['role']}|>\n{m['content'].strip()}\n", False))
    return pieces


def _template_ids(tokenizer, messages, add_generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(list(messages), tokenize=True, add_generation_prompt=add_generation_prompt)
    if isinstance(out, dict) or hasattr(out, "keys"):  # some versions return a BatchEncoding
        out = out["input_ids"]
    return list(out)


def encode_example(ex: Example, tokenizer, max_length: int) -> EncodedRow:
    """Token ids and labels for one conversation (before truncation checks)."""
    if _has_template(tokenizer):
        return _encode_templated(ex.messages, tokenizer, max_length)
    ids: list[int] = []
    labels: list[int] = []
    if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", True):
        ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE)
    for text, is_label in _render_tulu(ex.messages, tokenizer.eos_token or ""):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        labels.extend(piece if is_label else [IGNORE] * len(piece))
    return EncodedRow(ids[:max_length], labels[:max_length])


def _encode_templated(messages, tokenizer, max_length: int) -> EncodedRow:
    full = _template_ids(tokenizer, messages, add_generation_prompt=False)
    labels = [IGNORE] * len(full)
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(_template_ids(tokenizer, messages[:k], add_generation_prompt=True)) if k else 0
        end = len(_template_ids(tokenizer, messages[: k + 1], add_generation_prompt=False))
        for t in range(start, min(end, len(full))):
            labels[t] = full[t]
        # The template's trailing newline after the end-of-turn token is not part of the answer.
        while end - 1 > start and tokenizer.decode([full[end - 1]]).strip() == "":
            labels[end - 1] = IGNORE
            end -= 1
    return EncodedRow(full[:max_length], labels[:max_length])


def encode(examples: Sequence[Example], tokenizer, max_length: int) -> Encoded:
    enc = Encoded(rows=[], kept=[])
    for i, ex in enumerate(examples):
        row = encode_example(ex, tokenizer, max_length)
        if all(label == IGNORE for label in row.labels):
            enc.skipped.append((i, f"no response tokens within max_length={max_length}"))
            continue
        enc.rows.append(row)
        enc.kept.append(i)
    return enc


def batches(rows: Sequence[EncodedRow], batch_size: int, pad_id: int,
            order: Sequence[int] | None = None) -> Iterator[tuple[list[int], "object", "object", "object"]]:
    """Right-padded batches: (row indices, input_ids [B,T], attention_mask [B,T], labels [B,T])."""
    order = list(range(len(rows))) if order is None else list(order)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        yield (idx, *right_pad([(rows[i].input_ids, rows[i].labels) for i in idx], pad_id))


def length_sorted(rows: Sequence[EncodedRow]) -> list[int]:
    """Indices ordered by length (stable), so batches pad little; results are scattered back by index."""
    return sorted(range(len(rows)), key=lambda i: (len(rows[i].input_ids), i))
