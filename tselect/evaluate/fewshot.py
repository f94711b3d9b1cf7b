"""Few-shot prompts: K solved examples from the target's query split put before each eval item.

The K shots are drawn once per evaluation with a fixed seed (numpy's default_rng), so the same
seed gives the same shots; they are left out of the query loss. Chat prompts get each shot as a
user/assistant exchange before the item's own turns; plain prompts get "context\\nAnswer: answer"
blocks separated by blank lines. The held-out loss stays zero-shot (the shots' answers would
otherwise enter it); only task metrics (accuracy, EM/F1) see the shots.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from tselect.data.types import Example
from tselect.errors import UserError


def draw_shots(examples: list[Example], k: int, seed: int) -> list[Example]:
    """k distinct examples in a seeded random order."""
    if k > len(examples):
        raise UserError(f"--shots {k} needs at least {k} query rows in the target; it has {len(examples)}")
    picks = np.random.default_rng(seed).permutation(len(examples))[:k]
    return [examples[int(i)] for i in picks]


def with_shots_chat(ex: Example, shots: list[Example]) -> Example:
    """The item's conversation with every shot's non-system turns before its own (its system turn first)."""
    system = [m for m in ex.messages[:1] if m["role"] == "system"]
    turns = [m for s in shots for m in s.messages if m["role"] != "system"]
    return replace(ex, messages=tuple(system + turns + list(ex.messages[len(system):])))


def with_shots_plain(ex: Example, shots: list[Example], cue: str) -> Example:
    """The item's plain context behind 'context<cue> answer' blocks of the shots."""
    blocks = [f"{s.meta.get('context') or s.prompt}{cue} {s.messages[-1]['content'].strip()}" for s in shots]
    context = ex.meta.get("context") or ex.prompt
    return replace(ex, meta={**ex.meta, "context": "\n\n".join([*blocks, context])})
