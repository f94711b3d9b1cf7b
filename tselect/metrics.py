"""Answer metrics: SQuAD-style exact match / token F1, GSM8K-style number extraction, and
multiple-choice accuracy from per-choice log-likelihoods.

Pure Python + numpy: strings and arrays in, floats out. No model, no I/O.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)
# A number as written in model output: digits with optional thousands commas and decimals
# ("1,234.50", ".5"), signed only when the sign does not follow a digit ("10-15" is 10 and 15).
_NUMBER = re.compile(r"(?:(?<!\d)[-+])?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
# Markers after which a GSM8K-style answer is stated; the last marker in the text wins.
_ANSWER_MARKERS = re.compile(r"####|the answer is", re.IGNORECASE)


def normalize_answer(text: str) -> str:
    """SQuAD normalization: lowercase, drop punctuation, drop articles, collapse whitespace.

    The order matters and follows the SQuAD v1.1 script: punctuation is removed before articles,
    so "the." loses both.
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(pred: str, golds: Sequence[str]) -> float:
    """1.0 when the normalized prediction equals any normalized gold answer, else 0.0."""
    p = normalize_answer(pred)
    return float(any(p == normalize_answer(g) for g in golds))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    # An empty side (e.g. a gold that is only an article) only matches another empty side.
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(pred: str, golds: Sequence[str]) -> float:
    """Bag-of-tokens F1 between normalized prediction and gold, maximized over the golds."""
    if not golds:
        return 0.0
    p = normalize_answer(pred).split()
    return max(_f1(p, normalize_answer(g).split()) for g in golds)


def _canonical_number(raw: str) -> str:
    """"1,234.50" → "1234.5", "+7" → "7", "18.00" → "18", "-0" → "0": equal values compare equal."""
    s = raw.replace(",", "").lstrip("+")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    if s in ("", "-", "-0"):
        return "0"
    neg = s.startswith("-")
    digits = s[1:] if neg else s
    digits = digits.lstrip("0") or "0"
    if digits.startswith("."):
        digits = "0" + digits
    return ("-" if neg else "") + digits


def extract_number(text: str) -> str | None:
    """The stated numeric answer of a GSM8K-style response, canonicalized; None if there is none.

    Prefers the first number after the last "####" or "The answer is" (case-insensitive);
    without such a marker (or with no number after it) takes the last number in the text.
    Dollar signs and thousands commas are ignored; trailing zeros after the decimal point
    are dropped so "$1,200.00" and "1200" both give "1200".
    """
    cleaned = text.replace("$", "")
    markers = list(_ANSWER_MARKERS.finditer(cleaned))
    if markers:
        found = _NUMBER.search(cleaned, markers[-1].end())
        if found:
            return _canonical_number(found.group())
    numbers = _NUMBER.findall(cleaned)
    return _canonical_number(numbers[-1]) if numbers else None


@dataclass(frozen=True)
class MCResult:
    acc: float  # mean over items of [argmax loglik == gold]
    acc_norm: float  # mean over items of [argmax loglik / char length == gold]
    pred: list[int]  # per item, raw argmax
    pred_norm: list[int]  # per item, length-normalized argmax


def mc_predict(loglikes: Sequence[float], lengths: Sequence[int]) -> tuple[int, int]:
    """(raw argmax, length-normalized argmax) for one item; ties go to the lower choice index.

    Normalization divides each choice's summed log-likelihood by its character count, as
    lm-eval-harness's acc_norm does (characters, not tokens, so the score does not depend on the
    tokenizer). Callers pass the length of the choice text itself; a zero length counts as 1.
    """
    ll = np.asarray(loglikes, dtype=np.float64)  # [C]
    n = np.maximum(np.asarray(lengths, dtype=np.float64), 1.0)  # [C]
    if ll.shape != n.shape or ll.size == 0:
        raise ValueError(f"mc_predict: {ll.size} log-likelihoods vs {n.size} lengths; need one per choice")
    return int(np.argmax(ll)), int(np.argmax(ll / n))


def mc_accuracy(loglikes: Sequence[Sequence[float]], golds: Sequence[int],
                lengths: Sequence[Sequence[int]]) -> MCResult:
    """acc and acc_norm over items; loglikes[i][c] is the summed log-prob of choice c of item i."""
    if not (len(loglikes) == len(golds) == len(lengths)):
        raise ValueError(f"mc_accuracy: {len(loglikes)} items, {len(golds)} golds, {len(lengths)} length lists")
    preds = [mc_predict(ll, n) for ll, n in zip(loglikes, lengths)]
    raw = [p for p, _ in preds]
    norm = [q for _, q in preds]
    if not preds:
        return MCResult(float("nan"), float("nan"), [], [])
    acc = float(np.mean([p == g for p, g in zip(raw, golds)]))
    acc_norm = float(np.mean([q == g for q, g in zip(norm, golds)]))
    return MCResult(acc, acc_norm, raw, norm)


def binomial_se(p: float | None, n: int) -> float | None:
    """Standard error of an accuracy p measured on n independent items: sqrt(p (1 - p) / n).

    (lm-eval-harness reports the sample version, sqrt(p (1 - p) / (n - 1)); the two differ by
    under 1% from n = 50 on.) None when there is no accuracy or no item."""
    if p is None or n < 1 or p != p:  # p != p: NaN
        return None
    return float(np.sqrt(p * (1.0 - p) / n))
