"""Parsing model output costs time linear in its length: no regular expression (or loop) over
generated text backtracks exponentially or rescans quadratically, so one pathological sample
cannot stall a server. Each input here took seconds to hours before (arith-check's equation
pattern doubled its time with every operator of a chain without "="; an "Answer:" line with a
long run of blanks, unclosed \\boxed{ groups and deeply nested \\text{} were quadratic), and a
number longer than Python's int-conversion limit raised from ``extract``.

Bounds are generous (a loaded 2-core machine): linear code takes milliseconds here, the old
code took seconds at a tenth of these sizes.
"""

from __future__ import annotations

import time

import pytest

from infscale.scorers.arith_check import ArithCheckScorer, check_text
from infscale.tasks import get_task

N = 50_000  # characters of hostile output
BOUND = 2.5  # seconds


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def test_a_long_operator_chain_without_equals_is_linear():
    """The issue's case: "69 - 14 - 14 ..." with 16 operators took 2.6 s and doubled per operator."""
    for ops in (16, 40, 10_000):
        text = "69" + " - 14" * ops + " and so on"
        result, seconds = timed(check_text, text)
        assert result == (0, 0, None)
        assert seconds < BOUND, (ops, seconds)


def test_long_chains_that_do_end_in_equals_are_still_checked():
    text = "69" + " - 14" * 4 + " = 13\nAnswer: 13"
    assert check_text(text) == (2, 2, 13.0)
    assert check_text("(3 + 4) x 2 = 14\n" + "1 + " * 30 + "1 = 31") == (2, 2, 31.0)
    assert check_text("((1 + 2)) = 3") == (1, 1, 3.0)
    assert check_text("a chain 1 - 2 - 3 then words, then 4 * 5 = 20") == (1, 1, 20.0)
    assert check_text("x" * 10 + "5 x 3 = 15") == (1, 1, 15.0)  # 'x' as a multiplication sign
    # A chain longer than any shown arithmetic is not evaluated (and costs linear time to skip).
    huge = "1" + " + 1" * 5_000 + " = 5001"
    result, seconds = timed(check_text, huge)
    assert result == (0, 0, None) and seconds < BOUND


HOSTILE = {
    "blank run in an answer line": "Answer: 5" + " " * N + "x",
    "blank run before an answer": " " * N + "answer: 5",
    "hash line with blanks": "#### 5" + " \t" * (N // 2) + "x",
    "unclosed boxes": "\\boxed{" * (N // 7),
    "boxes without braces": "\\boxed 5 " * (N // 9),
    "nested text wrappers": "Answer: " + "\\text{" * (N // 12) + "5" + "}" * (N // 12),
    "nested boxes": "\\boxed{" * (N // 8) + "5" + "}" * (N // 8),
    "emphasis pairs": "Answer: " + "**" * (N // 4) + "5" + "**" * (N // 4),
    "math segments": "\\(" * (N // 2),
    "dollars": "$x" * (N // 2),
    "commas": "1," * (N // 2),
    "dots": "1." * (N // 2),
    "operators and blanks": "1 -" + " " * N + "- 2",
    "parentheses": "(" * N + "1 + 2 = 3",
    "a very long number": "Answer: " + "7" * N,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_every_parser_of_model_output_is_linear(name):
    text = HOSTILE[name]
    parsers = {f"{t}.extract": get_task(t).extract for t in ("math", "mcq", "text", "code")}
    parsers["math.ends_answer"] = get_task("math").ends_answer
    parsers["arith-check"] = check_text
    for parser, fn in parsers.items():
        _, seconds = timed(fn, text)  # returns (whatever it finds) and never raises
        assert seconds < BOUND, (name, parser, seconds)


def test_a_number_beyond_the_int_conversion_limit_is_an_answer_not_an_exception():
    answer = get_task("math").extract("Answer: " + "7" * 5_000)
    assert answer is not None and answer.startswith("7777")


async def test_the_scorer_keeps_the_event_loop_free_for_long_texts():
    """Long texts are checked in a worker thread: a timer on the loop keeps ticking meanwhile."""
    import asyncio

    from infscale.types import Problem

    scorer = ArithCheckScorer()
    texts = ["(1 + 2) * 3 = 9\n" * 4_000] * 2
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    scores = await scorer.score(Problem(question="q", id="p"), texts, None)
    task.cancel()
    assert scores == [0.0, 0.0]
    assert ticks >= 2, ticks
