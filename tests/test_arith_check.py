"""The rule-based arithmetic checker: what it parses, what it checks, how it scores outcomes and steps."""

from __future__ import annotations

import asyncio
import math

import pytest

from infscale import ConfigError, Problem
from infscale.scorers.arith_check import ArithCheckScorer, check_text, evaluate

PROBLEM = Problem(id="p", question="Tom has 3 boxes with 4 apples each and eats 2. How many are left?", reference="10")
LOG_EPS = math.log(0.05)


@pytest.mark.parametrize(("expr", "value"), [
    ("3 + 4", 7.0), ("12 - 2 * 3", 6.0), ("(2 + 3) x 4", 20.0), ("6 × 7", 42.0), ("9 ÷ 3", 3.0),
    ("1,200 / 4", 300.0), ("2.5 * 4", 10.0), ("-3 + 5", 2.0),
])
def test_evaluate_arithmetic(expr, value):
    assert evaluate(expr) == pytest.approx(value)


@pytest.mark.parametrize("expr", ["__import__('os')", "abs(3)", "3 ** 1000000", "x + 1", "1 / 0", "3 +"])
def test_evaluate_refuses_what_is_not_plain_arithmetic(expr):
    assert evaluate(expr) is None


def test_check_text_counts_each_computation_and_the_answer_line():
    text = "3 * 4 = 12 apples.\n12 - 2 = 10 left.\nAnswer: 10"
    assert check_text(text) == (3, 3, 10.0)
    wrong = "3 * 4 = 12\n12 - 2 = 9\nAnswer: 9"
    assert check_text(wrong) == (2, 3, 9.0)          # the slip fails, the answer agrees with it
    mismatch = "3 * 4 = 12\nAnswer: 13"
    assert check_text(mismatch) == (1, 2, 12.0)      # the answer line disagrees with the last value
    assert check_text("I think it is ten.") == (0, 0, None)
    assert check_text("1,000 + 200 = 1,200") == (1, 1, 1200.0)
    assert check_text("10 / 4 = 2.5 and 10 / 3 = 3.33") == (2, 2, 3.33)  # rounded to cents is accepted


def test_outcome_scores_ignore_padding_and_punish_each_failed_check():
    scorer = ArithCheckScorer()
    texts = [
        "3 * 4 = 12\n12 - 2 = 10\nAnswer: 10",                      # right
        "1 + 1 = 2\n2 + 2 = 4\n4 + 4 = 8\n8 + 8 = 16\nAnswer: 16",  # padded with irrelevant right sums
        "It is 10.",                                                 # nothing to check
        "3 * 4 = 12\n12 - 2 = 9\nAnswer: 9",                        # one slip
        "3 * 4 = 13\n13 - 2 = 10\nAnswer: 12",                      # two slips + a bad answer line
    ]
    s = asyncio.run(scorer.score(PROBLEM, texts, None))
    assert s[0] == 0 and s[1] == 0                 # right arithmetic is right; extra sums earn nothing
    assert s[2] == pytest.approx(math.log(0.5))    # unchecked sits between right and wrong
    assert s[3] == pytest.approx(LOG_EPS)
    assert s[4] == pytest.approx(3 * LOG_EPS)
    assert s[0] > s[2] > s[3] > s[4] > -math.inf


def test_step_scores_use_the_prefix_for_the_answer_check():
    scorer = ArithCheckScorer(eps=0.1)
    prefixes = ["", "3 * 4 = 12\n", "3 * 4 = 12\n12 - 2 = 10\n", "3 * 4 = 12\n12 - 2 = 10\n"]
    steps = ["3 * 4 = 12\n", "12 - 2 = 11\n", "Answer: 10", "Answer: 7"]
    s = asyncio.run(scorer.score_steps(PROBLEM, prefixes, steps, None))
    assert s == pytest.approx([0.0, math.log(0.1), 0.0, math.log(0.1)])


@pytest.mark.parametrize("eps", [0, -0.1, 0.6, 1])
def test_bad_eps_is_a_config_error(eps):
    # above 0.5 a failed check would outrank a solution with nothing to check
    with pytest.raises(ConfigError, match="eps"):
        ArithCheckScorer(eps=eps)
