"""Code tests: run each candidate program against the problem's tests in the sandbox.

The candidate's program is the last fenced code block of its text (the ``code`` task's
extraction). It is run by :mod:`infscale.sandbox` together with the problem's tests, taken
from ``problem.metadata``:

- ``tests``: test code (HumanEval's ``check`` function, or plain asserts), with an optional
  ``entry_point`` (the function passed to ``check``);
- ``test_list``: MBPP-style ``assert`` strings, with an optional ``test_setup`` code string;
- ``timeout``: seconds per candidate (default: the scorer's);
- ``prompt``: HumanEval's prompt (imports, helper functions, the signature and docstring). It is
  put before the candidate: a candidate that does not define ``entry_point`` is the function's
  body (as when a model continues the prompt); one that does redefines the docstring-only stub
  and still gets the prompt's imports and helpers, which models often leave out.

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
import re
from typing import Any

from ..answers import get_task
from ..errors import ConfigError
from ..types import Problem
from .base import Scorer, prob_to_logscore

__all__ = ["CodeTestsScorer"]


class CodeTestsScorer(Scorer):
    """Outcome scorer: 0.0 when a candidate's code passes the problem's tests, else ``-inf``."""

    name = "code-tests"
    kind = "outcome"
    needs_model = False

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

    @staticmethod
    def _tests(problem: Problem) -> tuple[str | None, list[str] | None]:
        meta = problem.metadata or {}
        tests, test_list = meta.get("tests"), meta.get("test_list")
        if tests is not None and not isinstance(tests, str):
            raise ConfigError("problem.metadata['tests']", f"must be test code, got {type(tests).__name__}", "str")
        if test_list is not None and not (
            isinstance(test_list, (list, tuple)) and all(isinstance(t, str) for t in test_list)
        ):
            raise ConfigError("problem.metadata['test_list']", "must be a list of assert strings")
        if not tests and not test_list:
            raise ConfigError(
                "problem.metadata",
                f"problem {problem.id!r} has no tests for the code-tests scorer",
                "'tests' (test code, optional 'entry_point') or 'test_list' (assert strings)",
            )
        return tests or None, list(test_list) if test_list else None

    def score_code(self, problem: Problem, code: str) -> float:
        """The log-score of one extracted program (blocking: runs the sandbox)."""
        from ..sandbox import run_test_list, run_tests

        meta = problem.metadata or {}
        tests, test_list = self._tests(problem)
        timeout = float(meta.get("timeout", self.timeout))
        if test_list is not None and (self.fraction or tests is None):
            setup = meta.get("test_setup") or ""
            _, outcomes = run_test_list(code, test_list, setup_code=setup, timeout=timeout, **self.limits)
            if self.fraction:
                return prob_to_logscore(sum(outcomes) / len(outcomes))
            return 0.0 if all(outcomes) else -math.inf
        entry = meta.get("entry_point")
        code = _with_prompt(code, meta.get("prompt"), entry)
        result = run_tests(code, tests, entry, timeout=timeout, **self.limits)
        return 0.0 if result.passed else -math.inf

    async def score(self, problem, texts, ctx=None):
        self._tests(problem)  # a problem without tests is the caller's error, raised once
        limit = asyncio.Semaphore(self.concurrency)

        async def one(text: str) -> float:
            code = self._task.extract(text)
            if code is None:
                return -math.inf
            async with limit:
                return await asyncio.to_thread(self.score_code, problem, code)

        return list(await asyncio.gather(*(one(t) for t in texts)))


def _with_prompt(code: str, prompt: Any, entry: Any) -> str:
    """The program to run: the problem's ``prompt``, then ``code``."""
    if not isinstance(prompt, str) or not prompt.strip() or not isinstance(entry, str):
        return code
    prompt = prompt if prompt.endswith("\n") else prompt + "\n"
    if not re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry)}\s*\(", code, re.M):
        return prompt + code  # a body: the continuation of the prompt
    return prompt + "\n" + code  # a whole function: it replaces the stub
