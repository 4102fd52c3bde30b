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

Explained (``explain``, the feedback of refinement): a program passes when every test passes;
otherwise the feedback names the first failing test (``test_list``) or the test code's failure,
with the end of the program's error output, truncated to ``feedback_chars`` characters.

Programs run in threads (``asyncio.to_thread``), at most ``concurrency`` at a time: each run
is a separate sandboxed process tree with its own CPU, memory and process limits.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from ..tasks import get_task
from ..tasks.code import problem_tests, program_with_prompt, run_problem_tests
from ..errors import ConfigError
from ..types import Problem
from .base import Scorer, Verdict, prob_to_logscore

FEEDBACK_CHARS = 600

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

    def explain_code(self, problem: Problem, code: str | None) -> Verdict:
        """The verdict on one extracted program, with the failing test and its output (blocking)."""
        if code is None:
            return Verdict(-math.inf, False, "There is no code to run: put the complete program in one ```python "
                                             "fenced block.")
        from ..sandbox import run_test_list, run_tests  # noqa: PLC0415

        meta = problem.metadata or {}
        tests, test_list = problem_tests(problem)
        timeout = float(meta.get("timeout", self.timeout))
        if test_list is not None and (self.fraction or tests is None):
            res, outcomes = run_test_list(code, test_list, setup_code=meta.get("test_setup") or "",
                                          timeout=timeout, **self.limits)
            passed = sum(outcomes) / len(outcomes)
            score = prob_to_logscore(passed if self.fraction else float(all(outcomes)))
            if all(outcomes):
                return Verdict(score, True, "")
            first = outcomes.index(False)
            return Verdict(score, False, _truncate(
                f"{len(outcomes) - sum(outcomes)} of {len(outcomes)} tests fail; the first failing test is "
                f"`{test_list[first]}`.\nOutput ({res.status}):\n{res.stderr or res.stdout}"))
        entry = meta.get("entry_point")
        res = run_tests(program_with_prompt(code, meta.get("prompt"), entry), tests, entry, timeout=timeout,
                        **self.limits)
        if res.passed:
            return Verdict(0.0, True, "")
        return Verdict(-math.inf, False, _truncate(
            f"The tests fail ({res.status}). Tests:\n{tests}\nOutput:\n{res.stderr or res.stdout}"))

    async def explain(self, problem, texts, meter=None):
        problem_tests(problem)
        limit = asyncio.Semaphore(self.concurrency)

        async def one(text: str) -> Verdict:
            code = self._task.extract(text)
            if code is None:
                return self.explain_code(problem, None)
            async with limit:
                return await asyncio.to_thread(self.explain_code, problem, code)

        return list(await asyncio.gather(*(one(t) for t in texts)))


def _truncate(text: str, limit: int = FEEDBACK_CHARS) -> str:
    """The head and the tail of a long text (the tail holds the traceback's last line)."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + "\n[...]\n" + text[-half:]
