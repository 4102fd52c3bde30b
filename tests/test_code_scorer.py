"""The ``code-tests`` scorer: candidates' code run against the problem's tests in the sandbox."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest

import infscale
from infscale import ConfigError, Problem
from infscale import sandbox
from infscale.scorers import SCORERS, get_scorer
from infscale.scorers.code_exec import CodeTestsScorer
from infscale.testing import FakeGenerator

HUMANEVAL_TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(0, 0) == 0\n"
MBPP_TESTS = ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(2, 2) == 5"]


def fenced(code: str) -> str:
    return f"Here is my solution:\n```python\n{code}\n```\nIt adds the numbers."


RIGHT = fenced("def add(a, b):\n    return a + b")
WRONG = fenced("def add(a, b):\n    return a - b")


def humaneval(**extra) -> Problem:
    meta = {"tests": HUMANEVAL_TESTS, "entry_point": "add", **extra}
    return Problem(id="he/0", question="Write add(a, b).", task="code", metadata=meta)


def mbpp(**extra) -> Problem:
    meta = {"test_list": MBPP_TESTS, **extra}
    return Problem(id="mbpp/0", question="Write add(a, b).", task="code", metadata=meta)


def test_registered_by_name():
    assert "code-tests" in SCORERS
    scorer = get_scorer("code-tests")
    assert isinstance(scorer, CodeTestsScorer)
    assert (scorer.name, scorer.kind, scorer.requires) == ("code-tests", "outcome", ())


async def test_all_or_nothing_scores_in_order():
    texts = [
        RIGHT,
        WRONG,
        "I don't know how to do this.",  # no code at all
        fenced("import sys\ndef add(a, b):\n    return 0\nsys.exit(0)"),  # exits before the tests
        fenced("def add(a, b):\n    while True:\n        pass"),  # hangs
        fenced("def add(a, b):\n    return a +"),  # does not parse
        "```python\ndef add(a, b):\n    return b + a\n```",
    ]
    scores = await CodeTestsScorer(timeout=2).score(humaneval(), texts, None)
    assert scores == [0.0, -math.inf, -math.inf, -math.inf, -math.inf, -math.inf, 0.0]


async def test_test_list_all_or_nothing_and_fraction():
    texts = [RIGHT, WRONG, fenced("def add(a, b):\n    return 3")]
    # add(2, 2) == 5 is a wrong test: nobody passes all three.
    assert await CodeTestsScorer().score(mbpp(), texts, None) == [-math.inf] * 3
    scores = await CodeTestsScorer(fraction=True).score(mbpp(), texts, None)
    assert scores == pytest.approx([math.log(2 / 3), math.log(1 / 3), math.log(1 / 3)])
    none_pass = fenced("def add(a, b):\n    return None")
    assert await CodeTestsScorer(fraction=True).score(mbpp(), [none_pass], None) == [-math.inf]


async def test_test_setup_and_per_problem_timeout():
    problem = mbpp(test_list=["assert add(K, 1) == 11"], test_setup="K = 10", timeout=1)
    start = time.monotonic()
    sleepy = fenced("import time\ndef add(a, b):\n    time.sleep(60)")
    scores = await CodeTestsScorer().score(problem, [RIGHT, sleepy], None)
    assert scores == [0.0, -math.inf]
    assert time.monotonic() - start < 10


async def test_a_problem_without_tests_is_a_config_error():
    problem = Problem(id="x", question="q", task="code")
    with pytest.raises(ConfigError, match="no tests"):
        await CodeTestsScorer().score(problem, [RIGHT], None)
    with pytest.raises(ConfigError, match="test_list"):
        not_a_list = Problem(id="x", task="code", metadata={"test_list": "assert x"})
        await CodeTestsScorer().score(not_a_list, [RIGHT], None)
    with pytest.raises(ConfigError, match="concurrency"):
        CodeTestsScorer(concurrency=0)


async def test_runs_are_concurrent_but_bounded(monkeypatch):
    """At most ``concurrency`` sandboxes at once, and scores stay in input order."""
    running, peak, lock = 0, 0, threading.Lock()

    def fake_run_tests(code, tests, entry_point=None, **kwargs):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        ok = "a + b" in code
        return sandbox.SandboxResult("ok" if ok else "error", 0 if ok else 1, "", "", 0.05, "fake")

    monkeypatch.setattr(sandbox, "run_tests", fake_run_tests)
    texts = [RIGHT, WRONG] * 4
    scores = await CodeTestsScorer(concurrency=2).score(humaneval(), texts, None)
    assert scores == [0.0, -math.inf] * 4
    assert peak == 2


async def test_the_event_loop_stays_responsive_while_code_runs():
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    task = asyncio.create_task(ticker())
    await CodeTestsScorer(timeout=1).score(humaneval(), [fenced("def add(a, b):\n    while True: pass")], None)
    task.cancel()
    assert ticks >= 10  # about 1 s of ticks while the sandbox ran


async def test_best_of_n_picks_the_candidate_that_passes():
    """End to end: a strategy weighs fake candidates with the sandboxed tests."""
    replies = [WRONG, RIGHT, fenced("def add(a, b):\n    return 0")]

    def reply(req, rng):
        return replies[int(req.key.rsplit("/", 1)[-1]) % len(replies)]

    gen = FakeGenerator(reply)
    result = await infscale.run(humaneval(), gen, "best-of-n", n=3, scorer="code-tests", seed=0)
    assert result.answer == "def add(a, b):\n    return a + b"


PROMPT = ('from typing import List\n\n\ndef _add(a: int, b: int) -> int:\n    return a + b\n\n\n'
          'def total(xs: List[int]) -> int:\n    """Sum of xs."""')  # no final newline


@pytest.mark.parametrize(("code", "score"), [
    ("    return sum(xs)", 0.0),                                    # the body only: the prompt completes it
    ("def total(xs: List[int]) -> int:\n    return sum(xs)", 0.0),  # whole function, import left out
    ("def total(xs: List[int]) -> int:\n    t = 0\n    for x in xs:\n        t = _add(t, x)\n    return t", 0.0),
    ("    return max(xs)", -math.inf),
])
async def test_humaneval_prompt_completes_a_body_and_supplies_imports(code, score):
    tests = "def check(candidate):\n    assert candidate([1, 2, 3]) == 6\n"
    p = Problem(id="he/1", question=PROMPT, task="code",
                metadata={"tests": tests, "entry_point": "total", "prompt": PROMPT})
    assert await CodeTestsScorer().score(p, [fenced(code)]) == [score]
