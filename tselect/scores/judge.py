"""`judge`: Alpagasus-style LM rating, score = expected rating Σ_r r·p(r), highest first.

The scoring model sees RATING_PROMPT (instruction and response filled in) as a user turn of
its chat template (the tulu rendering without one), followed by the assistant header, so the
next token is its answer. p(r) is the softmax of the next-token logits of the tokens "1".."5",
renormalized over those five: an expectation instead of a sampled digit makes the score
continuous and deterministic, and small models that spread mass still rank sensibly.
The digit tokens are read off the tokenizer's own rendering of an answer "r" (the first
answer token), so SentencePiece "▁1"-style and plain "1"-style vocabularies both work.

Instruction and response are each clipped to max_length // 2 tokens, so the prompt holds
at most max_length tokens plus the fixed rating text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tselect import progress
from tselect.data.tokenize import EncodedRow, batches, encode_example, length_sorted
from tselect.data.types import Dataset, Example
from tselect.errors import UserError
from tselect.tokens import IGNORE, logits_at
from tselect.scores.common import UNTRUNCATED, Result, last_answer, load, n_tokens

RATINGS = (1, 2, 3, 4, 5)
RATING_PROMPT = (
    "You are checking examples before they are used to teach an AI assistant. Read the task and the "
    "answer that was given to it.\n\n"
    "[Task]\n{instruction}\n\n"
    "[Answer]\n{response}\n\n"
    "How good is this answer? Judge whether it is correct, whether it does what the task asks, and "
    "whether it is clear and complete. Give a grade from 1 to 5: 1 = wrong or useless, 2 = poor, "
    "3 = acceptable, 4 = good, 5 = excellent. Reply with the grade only, a single digit."
)


def expected_rating(logits: np.ndarray, digit_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From next-token logits [B, V]: (expected rating [B], p(r) [B, 5], digit mass [B]).

    p(r) is renormalized over the five digit tokens; the digit mass (their share of the full
    softmax) says how much the model actually meant to answer with a digit.
    """
    logits = np.asarray(logits, dtype=np.float64)
    digits = logits[:, list(digit_ids)]  # [B, 5]
    top = digits.max(axis=1, keepdims=True)
    p = np.exp(digits - top)
    p /= p.sum(axis=1, keepdims=True)  # [B, 5]
    expected = p @ np.asarray(RATINGS, dtype=np.float64)  # [B]
    mass = np.exp(_logsumexp(digits) - _logsumexp(logits))
    return expected, p, mass


def _logsumexp(x: np.ndarray) -> np.ndarray:
    """[B, K] → [B], stable."""
    top = x.max(axis=1)
    return top + np.log(np.exp(x - top[:, None]).sum(axis=1))


def _clip(text: str, tokenizer, budget: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= budget else tokenizer.decode(ids[:budget]) + " [...]"


def _instruction(messages: Sequence[dict[str, str]]) -> str:
    """The turns before the final answer: the text alone for one turn, role-labelled otherwise."""
    before = list(messages[: last_answer(messages)])
    if len(before) == 1:
        return before[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in before)


def rating_prompt(example: Example, tokenizer, max_length: int) -> str:
    k = last_answer(example.messages)
    budget = max(1, max_length // 2)
    return RATING_PROMPT.format(instruction=_clip(_instruction(example.messages), tokenizer, budget),
                                response=_clip(example.messages[k]["content"], tokenizer, budget))


def _answer_start(tokenizer, prompt: str, answer: str) -> tuple[list[int], int]:
    """(ids of prompt-as-user-turn + answer, index of the answer's first token)."""
    row = encode_example(Example.make([{"role": "user", "content": prompt},
                                       {"role": "assistant", "content": answer}]), tokenizer, UNTRUNCATED)
    return row.input_ids, next(t for t, lab in enumerate(row.labels) if lab != IGNORE)


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids up to the generation position (the assistant header included)."""
    ids, start = _answer_start(tokenizer, prompt, "1")
    return ids[:start]


def digit_ids(tokenizer) -> list[int]:
    """The first answer token of the answers "1".."5" (distinct, else the model cannot judge)."""
    ids = []
    for r in RATINGS:
        row, start = _answer_start(tokenizer, "Grade it.", str(r))
        ids.append(row[start])
    if len(set(ids)) != len(RATINGS):
        raise UserError("the scoring model's tokenizer does not give the ratings 1..5 distinct first tokens, "
                        "so --strategy judge cannot read a rating; use another --model")
    return ids


def last_logits(model, ids, mask):
    """float32 [B, V]: logits at each right-padded row's last real token (the next-token slot).

    Only the distinct last positions are projected onto the vocabulary (`logits_to_keep`),
    instead of [B, T, V] logits for every position.
    """
    import torch

    last = mask.sum(dim=1) - 1  # [B]
    keep, where = torch.unique(last, return_inverse=True)  # [k] sorted positions, [B] into them
    with torch.inference_mode():
        logits = logits_at(model, ids, mask, keep)  # [B, k, V]
        return logits[torch.arange(ids.shape[0], device=ids.device), where].float()


def score(cfg, pool: Dataset, ref, features) -> Result:
    model, tok = load(ref)
    device = next(model.parameters()).device
    digits = digit_ids(tok)
    rows = [EncodedRow(p, [IGNORE] * len(p)) for p in
            (prompt_ids(tok, rating_prompt(ex, tok, cfg.max_length)) for ex in pool.examples)]
    picked = np.zeros((len(rows), len(RATINGS)))  # [N, 5] digit logits
    full_lse = np.zeros(len(rows))  # [N] logsumexp over the whole vocabulary
    n_batches = -(-len(rows) // cfg.batch_size)
    for idx, ids, mask, _ in progress.track(batches(rows, cfg.batch_size, tok.pad_token_id, length_sorted(rows)),
                                            n_batches, "judge"):
        logits = last_logits(model, ids.to(device), mask.to(device))  # [B, V]
        picked[idx] = logits[:, digits].double().cpu().numpy()
        full_lse[idx] = logits.double().logsumexp(dim=1).cpu().numpy()
    expected, p, _ = expected_rating(picked, range(len(RATINGS)))
    mass = np.exp(_logsumexp(picked) - full_lse)
    columns = {f"p{r}": p[:, k] for k, r in enumerate(RATINGS)}
    columns["digit_mass"] = mass
    return Result(scores=expected, columns=columns, tokens=n_tokens(rows))
