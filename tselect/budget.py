"""Budgets as counts or fractions of the pool: `200`, `0.05`, `5%` (LESS's `--percentage 0.05`)."""

from __future__ import annotations

import math

from tselect.errors import UserError


def parse_budget(text: str | None, percentage: float | None = None, flag: str = "--budget") -> int | float | None:
    """A count (int >= 1) or a fraction of the pool (float in (0, 1]); None when neither is given."""
    if percentage is not None:
        if text is not None:
            raise UserError(f"{flag} and --percentage both given; pass one of them")
        if not 0 < percentage <= 1:
            raise UserError(f"--percentage {percentage} must be a fraction in (0, 1], e.g. 0.05 for 5%")
        return float(percentage)
    if text is None:
        return None
    raw = text.strip()
    try:
        if raw.endswith("%"):
            value: int | float = float(raw[:-1]) / 100
        elif raw.lstrip("-").isdigit():
            return int(raw)  # a count; its range (1..pool size) is checked where the pool is known
        else:
            value = float(raw)
    except ValueError:
        raise UserError(f"{flag} {text!r} must be a count (an integer such as 200), a fraction (0.05) or a percentage (5%)") from None
    if isinstance(value, float) and value.is_integer() and value > 1:
        value = int(value)
    if isinstance(value, int):
        return value
    if not 0 < value <= 1:
        raise UserError(f"{flag} {text} must be a count >= 1 or a fraction in (0, 1]")
    return value


def budget_count(budget: int | float | None, n_pool: int) -> int | None:
    """Fractions become floor(f * n_pool), at least 1 (LESS rounds down the same way)."""
    if budget is None or isinstance(budget, int):
        return budget
    return max(1, math.floor(budget * n_pool + 1e-9))
