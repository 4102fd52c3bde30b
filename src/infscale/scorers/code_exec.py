"""Code tests: run each candidate program against the problem's tests in the sandbox.

The candidate's program is the last fenced code block of its text (the ``code`` task's
extraction), run with the problem's tests (``problem.metadata``: ``tests``/``entry_point``,
``test_list``/``test_setup``, ``timeout``, HumanEval's ``prompt``) by the ``code`` task's
:func:`~infscale.tasks.code.run_problem_tests`, the same function the evaluation harness grades
with.

Scores are log-probabilities of "correct" under an all-or-nothing verifier: ``0.0`` (log 1)
when every test passes and ``-inf`` otherwise (no code, a failing test, an error, a timeout).
With ``fraction=True`` and a ``test_list`` the score is ``log(passed / total)`` instead, which
makes a subset of tests usable as a weak, graded verifier (``-inf`` when none passes).

Programs run in threads (``asyncio.to_thread``), at most ``concurrency`` at a time: each run
is a separate sandboxed process tree with its own CPU, memory and process limits.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from ..tasks import get_task
from ..tasks.code import problem_tests, run_problem_tests
from ..errors import ConfigError
from ..types import Problem
from .base import Scorer, prob_to_logscore

__all__ = ["CodeTestsScorer"]


class CodeTestsScorer(Scorer):
    """Outcome scorer: 0.0 when a candidate's code passes the problem's tests, else ``-inf``."""

    name = "code-tests"
    kind = "outcome"

    def __init__(
        self,
        *,
        fraction: bool = False,
        timeout: float = 10.0,
        concurrency: int = 2,
        memory_mb: int = 512,
        cpu_seconds: int = 10,
    ):
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError("concurrency", f"must be a positive integer, got {concurrency!r}", "integers >= 1")
        if not timeout > 0:
            raise ConfigError("timeout", f"must be positive, got {timeout!r}", "seconds > 0")
        self.fraction = fraction
        self.timeout = float(timeout)
        self.concurrency = concurrency
        self.limits: dict[str, Any] = {"memory_mb": memory_mb, "cpu_seconds": cpu_seconds}
        self._task = get_task("code")

    def score_code(self, problem: Problem, code: str) -> float:
        """The log-score of one extracted program (blocking: runs the sandbox)."""
        passed = run_problem_tests(code, problem, fraction=self.fraction, timeout=self.timeout, **self.limits)
        return prob_to_logscore(passed)

    async def score(self, problem, texts, meter=None):
        problem_tests(problem)  # a problem without tests is the caller's error, raised once
        limit = asyncio.Semaphore(self.concurrency)

        async def one(text: str) -> float:
            code = self._task.extract(text)
            if code is None:
                return -math.inf
            async with limit:
                return await asyncio.to_thread(self.score_code, problem, code)

        return list(await asyncio.gather(*(one(t) for t in texts)))

