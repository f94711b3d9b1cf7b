"""Budgets as counts, fractions and percentages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tselect.budget import budget_count, parse_budget
from tselect.errors import UserError


@pytest.mark.parametrize("text, pct, want", [
    ("200", None, 200), ("0.05", None, 0.05), ("5%", None, 0.05), ("100%", None, 1.0), ("1", None, 1),
    ("1.0", None, 1.0), ("300.0", None, 300), (None, 0.25, 0.25), (None, None, None), ("0", None, 0),
])
def test_parse(text, pct, want):
    got = parse_budget(text, pct)
    assert got == pytest.approx(want) if want is not None else got is None
    assert type(got) is type(want)


@pytest.mark.parametrize("text, pct, match", [
    ("ten", None, "integer"), ("1.5", None, r"fraction in \(0, 1\]"), ("-0.5", None, "fraction"),
    ("150%", None, "fraction"), ("5", 0.1, "both given"), (None, 0.0, "--percentage 0.0"), (None, 2.0, "--percentage"),
])
def test_parse_errors(text, pct, match):
    with pytest.raises(UserError, match=match):
        parse_budget(text, pct)


def test_count():
    assert budget_count(0.05, 2396) == 119  # floor, as LESS rounds
    assert budget_count(0.25, 20) == 5 and budget_count(0.001, 20) == 1 and budget_count(1.0, 7) == 7
    assert budget_count(12, 7) == 12 and budget_count(None, 7) is None  # counts pass through (range checked later)


@given(st.integers(1, 10**6), st.floats(1e-6, 1.0))
def test_fraction_is_within_the_pool(n, f):
    k = budget_count(f, n)
    assert 1 <= k <= n and k <= max(1, f * n + 1e-6)
