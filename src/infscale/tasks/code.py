"""The ``code`` task: Python programs, graded by running the problem's tests in the sandbox.

Prompt: write a Python solution in one fenced block.

Extraction: the last fenced code block (```` ```python ... ``` ```` or ```` ``` ... ``` ````; an
unclosed final fence runs to the end of the text), else the whole text when it looks like code
(contains ``def `` or ``return``). Lines lose trailing whitespace and leading/trailing blank
lines are dropped. Equivalence is exact match of that normalised text (a vote over programs
counts identical programs together).

Grading (:meth:`CodeTask.grade`, :func:`run_problem_tests`) runs the program with the problem's
tests in :mod:`infscale.sandbox`, taken from ``problem.metadata``:

- ``tests``: test code (HumanEval's ``check`` function, or plain asserts), with an optional
  ``entry_point`` (the function passed to ``check``);
- ``test_list``: MBPP-style ``assert`` strings, with an optional ``test_setup`` code string;
- ``timeout``: seconds per program (default 10);
- ``prompt``: HumanEval's prompt (imports, helper functions, the signature and docstring). It is
  put before the program: a program that does not define ``entry_point`` is the function's
  body (as when a model continues the prompt); one that does redefines the docstring-only stub
  and still gets the prompt's imports and helpers, which models often leave out.

A program is correct when every test passes. The ``code-tests`` scorer scores with the same
function.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .base import AnswerTask

if TYPE_CHECKING:
    from ..types import Problem

__all__ = ["CodeTask", "problem_tests", "program_with_prompt", "run_problem_tests"]

CODE_SYSTEM = "Write a Python solution. Put the complete code in one ```python fenced block."
DEFAULT_TIMEOUT = 10.0

_LANG_TAG = re.compile(r"[\w+#.-]*")
_LOOKS_LIKE_CODE = re.compile(r"\bdef |\breturn\b")


def problem_tests(problem: Problem) -> tuple[str | None, list[str] | None]:
    """``(tests, test_list)`` of a code problem's metadata; a one-line ConfigError when it has
    none or they have the wrong type."""
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
            f"problem {problem.id!r} has no tests for the code task",
            "'tests' (test code, optional 'entry_point') or 'test_list' (assert strings)",
        )
    return tests or None, list(test_list) if test_list else None


def program_with_prompt(code: str, prompt: Any, entry: Any) -> str:
    """The program to run: the problem's ``prompt``, then ``code`` (see the module docstring)."""
    if not isinstance(prompt, str) or not prompt.strip() or not isinstance(entry, str):
        return code
    prompt = prompt if prompt.endswith("\n") else prompt + "\n"
    if not re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry)}\s*\(", code, re.M):
        return prompt + code  # a body: the continuation of the prompt
    return prompt + "\n" + code  # a whole function: it replaces the stub


def run_problem_tests(code: str, problem: Problem, *, fraction: bool = False,
                      timeout: float = DEFAULT_TIMEOUT, **limits: Any) -> float:
    """Run ``code`` against ``problem``'s tests in the sandbox (blocking).

    Returns 1.0 when every test passes and 0.0 otherwise; with ``fraction=True`` and a
    ``test_list``, the fraction of the listed tests that pass. ``metadata['timeout']``
    overrides ``timeout``; ``limits`` (``memory_mb``, ``cpu_seconds``, ...) go to the sandbox.
    """
    from ..sandbox import run_test_list, run_tests  # the sandbox is only needed to grade code

    meta = problem.metadata or {}
    tests, test_list = problem_tests(problem)
    timeout = float(meta.get("timeout", timeout))
    if test_list is not None and (fraction or tests is None):
        _, outcomes = run_test_list(code, test_list, setup_code=meta.get("test_setup") or "",
                                    timeout=timeout, **limits)
        if fraction:
            return sum(outcomes) / len(outcomes)
        return 1.0 if all(outcomes) else 0.0
    entry = meta.get("entry_point")
    result = run_tests(program_with_prompt(code, meta.get("prompt"), entry), tests, entry, timeout=timeout, **limits)
    return 1.0 if result.passed else 0.0


class CodeTask(AnswerTask):
    """Program text (rules in the module docstring)."""

    name = "code"
    system = CODE_SYSTEM

    def extract(self, text: str) -> str | None:
        """The last fenced block, else the whole text if it looks like code; ``None`` if empty."""
        block = self._last_block(text)
        if block is None and _LOOKS_LIKE_CODE.search(text):
            block = text
        if block is None:
            return None
        return self.canonical(block) or None

    @staticmethod
    def _last_block(text: str) -> str | None:
        """Body of the last fenced block, without its language tag."""
        parts = text.split("```")
        if len(parts) < 2:
            return None
        # Odd indices are inside fences; an even number of parts means the last fence is open.
        block = parts[-1] if len(parts) % 2 == 0 else parts[-2]
        first, newline, rest = block.partition("\n")
        if newline and _LANG_TAG.fullmatch(first.strip()):
            return rest
        return block

    def canonical(self, answer: str) -> str:
        """Trailing whitespace removed from each line; outer blank lines removed."""
        lines = [line.rstrip() for line in answer.splitlines()]
        return "\n".join(lines).strip("\n")

    def is_correct(self, answer: str | None, reference: Any) -> bool:
        """Not defined for code: a program is correct when it passes the problem's tests, not
        when it matches a reference program. Raises :class:`~infscale.errors.ConfigError`."""
        raise ConfigError("task", "code answers are graded by running the problem's tests, not by comparing "
                          "them with a reference", "CodeTask.grade(answer, problem)")

    def grade(self, answer: str | None, problem: Problem) -> bool:
        """Whether the program passes every test of ``problem`` in the sandbox (blocking)."""
        if answer is None:
            return False
        return run_problem_tests(answer, problem) == 1.0
