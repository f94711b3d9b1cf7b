"""Exact values for the answer metrics (pure functions, no model)."""

import math

import pytest

from tselect.metrics import (
    exact_match,
    extract_number,
    mc_accuracy,
    mc_predict,
    normalize_answer,
    token_f1,
)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("  Paris.  ", "paris"),
        ("an apple a day", "apple day"),
        ("A", ""),
        ("the.", ""),  # punctuation goes first, then the bare article
        ("Theatre", "theatre"),  # "the" only as a whole word
        ("anAnnex", "anannex"),
        ("Hello,\tworld!\n", "hello world"),
        ("U.S.A.", "usa"),
        ("rock 'n' roll", "rock n roll"),
        ("", ""),
        ("  ", ""),
        ("ÉCOLE", "école"),
        ("3.14", "314"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_exact_match_any_gold():
    assert exact_match("The Paris", ["London", "paris!"]) == 1.0
    assert exact_match("Paris, France", ["Paris"]) == 0.0
    assert exact_match("", ["the"]) == 1.0  # both normalize to empty
    assert exact_match("x", []) == 0.0


def test_token_f1_values():
    # pred tokens {paris, france}, gold {paris}: p=1/2, r=1 → f1=2/3
    assert token_f1("Paris, France", ["Paris"]) == pytest.approx(2 / 3)
    # max over golds: the second gold matches exactly
    assert token_f1("Paris, France", ["Lyon", "the Paris France"]) == 1.0
    assert token_f1("blue whale", ["red fox"]) == 0.0
    # repeated tokens count with multiplicity: pred [a1,a1,b], gold [a1,b,b] → common 2, p=r=2/3
    assert token_f1("a1 a1 b", ["a1 b b"]) == pytest.approx(2 / 3)
    assert token_f1("", ["an"]) == 1.0
    assert token_f1("something", ["the"]) == 0.0
    assert token_f1("x", []) == 0.0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Natalia sold 48 clips in April and 24 in May.\n#### 72", "72"),
        ("#### 1,234", "1234"),
        ("The answer is $18.00.", "18"),
        ("So she earns 3 + 4 = 7 dollars. The answer is 7", "7"),
        ("the ANSWER IS: -5 degrees, not 10", "-5"),
        ("He had 5 apples and ate 2, leaving 3.", "3"),  # no marker: last number
        ("Total: $1,200", "1200"),
        ("from 10-15 people", "15"),  # a dash between digits is not a minus sign
        ("It is 0.50 of the total", "0.5"),
        ("about .5 of it", "0.5"),
        ("#### 007", "7"),
        ("#### +4", "4"),
        ("#### -0", "0"),
        ("The answer is unknown, but 12 is close", "12"),  # marker then the first number after it
        ("The answer is 3. #### 4", "4"),  # the last marker wins
        ("no digits here", None),
        ("", None),
    ],
)
def test_extract_number(text, expected):
    assert extract_number(text) == expected


def test_mc_predict_norm_differs_from_raw():
    # raw: -4 > -6 → choice 0; per char: -4/2 = -2.0 vs -6/6 = -1.0 → choice 1
    assert mc_predict([-4.0, -6.0], [2, 6]) == (0, 1)


def test_mc_predict_ties_and_zero_length():
    assert mc_predict([-1.0, -1.0, -2.0], [3, 3, 1]) == (0, 0)  # tie → lower index
    assert mc_predict([-3.0, -2.0], [0, 4]) == (1, 1)  # length 0 counts as 1: -3 vs -0.5


def test_mc_predict_rejects_mismatch():
    with pytest.raises(ValueError, match="one per choice"):
        mc_predict([-1.0, -2.0], [1])


def test_mc_accuracy_exact():
    lls = [[-4.0, -6.0], [-1.0, -3.0, -2.0], [-9.0, -8.0]]
    lengths = [[2, 6], [1, 1, 1], [3, 3]]
    golds = [1, 0, 0]
    r = mc_accuracy(lls, golds, lengths)
    assert r.pred == [0, 0, 1]
    assert r.pred_norm == [1, 0, 1]
    assert r.acc == pytest.approx(1 / 3)
    assert r.acc_norm == pytest.approx(2 / 3)


def test_mc_accuracy_empty_is_nan():
    r = mc_accuracy([], [], [])
    assert math.isnan(r.acc) and math.isnan(r.acc_norm)
