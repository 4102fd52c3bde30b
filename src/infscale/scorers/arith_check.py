"""An exact, rule-based checker of arithmetic: every ``a op b = c`` in a solution is evaluated.

It never sees the reference answer: it checks the solution's own computations (``+ - * / x ×
÷`` and parentheses over integers and decimals, ``=`` followed by a number) and that a final
``Answer: X`` line agrees with the last computed value. It is cheap, deterministic and right
about arithmetic, and it is blind to a wrong plan — an imperfect verifier with a low false-negative
rate on arithmetic slips and a real false-positive rate on reasoning errors.

* As an **outcome** scorer (``score``): a solution whose checks all pass scores ``0`` (log 1),
  one with nothing to check ``log 0.5``, and each failed check adds ``log(eps)`` (default
  eps = 0.05). Extra correct computations earn nothing, so padding a wrong solution with
  irrelevant right arithmetic does not outrank a short right one.
* As a **process** scorer (``score_steps``): the latest step scores ``0`` when all its checks
  pass or it has none, and ``log(eps)`` per failed check: a strong penalty that still leaves the
  particle a chance (never ``-inf``).
* Explained (``explain``, the feedback of refinement): a solution passes when it has at least one
  check and all pass; the feedback names each wrong computation and its right value (``3 * 4 =
  13 is wrong: 3 * 4 = 12.``), an answer line that disagrees with the last computed value, or
  asks for computations written out when there is nothing to check.
"""

from __future__ import annotations

import ast
import math
import operator
import re

from ..tasks.base import answer_lines
from ..tasks.math import as_number, statement_answer
from .base import Scorer, Verdict

__all__ = ["ArithCheckScorer", "check_text", "explain_text", "evaluate"]

_NUM = r"-?\d+(?:,\d{3})*(?:\.\d+)?"
# An equation is an expression -- numbers, operators, parentheses, spaces, at least one
# operator -- then '=' and a number. It is found in time linear in the text (see _equations):
# the quantifiers are possessive, so no pattern retries a chain's tokens another way, and a
# chain that ends without '=' is skipped whole instead of being re-read from each position in it.
_OPERAND = re.compile(r"[\(\s]*+" + _NUM + r"\)?")
_MORE = re.compile(r"(?:\s*+[-+*/x×÷][\(\s]*+" + _NUM + r"\)?)*+")
_TAIL = re.compile(r"(?P<close>\s*+\)?)\s*+=\s*+\$?(?P<rhs>" + _NUM + r")")
_DIGIT = re.compile(r"\d")
_OPENING = re.compile(r"[\(\s]*")
_MAX_EXPRESSION = 1000  # characters; a longer chain is not arithmetic a solution shows, and is not evaluated
_UNCHECKED = math.log(0.5)
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _equations(text: str):
    """``(lhs, rhs)`` of each ``expression = number`` in ``text``, left to right, as a regular
    expression's ``finditer`` would find them (leftmost start, no overlaps), in linear time."""
    pos, n = 0, len(text)
    while pos < n:
        d = _DIGIT.search(text, pos)
        if d is None:
            return
        start = d.start()  # the earliest start of this operand: its sign, then '(' and spaces
        if start > pos and text[start - 1] == "-":
            start -= 1
        start -= _OPENING.match(text[pos:start][::-1]).end()  # each character is read back once
        first = _OPERAND.match(text, start)
        if first is None:  # a lone '-' before the digit was not a sign here: start at the digit
            start = d.start()
            first = _OPERAND.match(text, start)
        chain_end = _MORE.match(text, first.end()).end()
        tail = _TAIL.match(text, chain_end) if chain_end > first.end() else None
        if tail is None:
            # No equation starts anywhere in this chain: from any later position in it the same
            # tokens follow to the same end, where '=' is missing.
            pos = max(chain_end, d.end())
            continue
        yield text[start:chain_end] + tail.group("close"), tail.group("rhs")
        pos = tail.end()


def evaluate(expr: str) -> float | None:
    """Value of an arithmetic expression, or None if it is not one (no names, no calls)."""
    expr = expr.replace(",", "").replace("×", "*").replace("÷", "/")
    expr = re.sub(r"(?<=[\d\)\s])x(?=[\s\d\(])", "*", expr)
    if len(expr) > _MAX_EXPRESSION:
        return None
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Div) and b == 0:
                raise ZeroDivisionError
            return _OPS[type(node.op)](a, b)
        raise ValueError("not arithmetic")

    try:
        return ev(tree)
    except (ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6) or (abs(b) >= 0.005 and abs(round(a, 2) - b) < 1e-9)


def check_text(text: str, last_value: float | None = None) -> tuple[int, int, float | None]:
    """``(ok, total, last value)`` over the computations in ``text``. An "Answer:" line (the
    tasks' one rule, ``**Answer:** X`` included) whose statement the math task reads as a number
    X (``Answer: 17 + 2 = 20`` states 20) is one more check: X must equal the last computed value
    (when there is one). A statement without a number is not checked."""
    ok = total = 0
    for passed, _ in _checks(text, last_value):
        total += 1
        ok += passed
    return ok, total, _last_value(text, last_value)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.6g}"


def _checks(text: str, last_value: float | None = None):
    """Each check of ``text`` in order: ``(passed, what a reader should be told when it failed)``."""
    for lhs_text, rhs_text in _equations(text):
        value = evaluate(lhs_text)
        if value is None:
            continue
        rhs = float(rhs_text.replace(",", ""))
        lhs = " ".join(lhs_text.split()).strip()
        yield _close(value, rhs), f"{lhs} = {rhs_text} is wrong: {lhs} = {_fmt(value)}."
        last_value = rhs
    for statement in answer_lines(text):
        x = as_number(statement_answer(statement))
        if last_value is not None and x is not None:
            yield _close(x, last_value), (f"The answer {_fmt(x)} is not the last value computed ({_fmt(last_value)}): "
                                          f"the answer line must state the result of the computations.")


def _last_value(text: str, last_value: float | None) -> float | None:
    for lhs, rhs_text in _equations(text):
        if evaluate(lhs) is not None:
            last_value = float(rhs_text.replace(",", ""))
    return last_value


def explain_text(text: str) -> tuple[int, int, list[str]]:
    """``(ok, total, messages)``: one message per failed check, naming the computation that is
    wrong and what it should be (the feedback :meth:`ArithCheckScorer.explain` gives)."""
    results = list(_checks(text))
    return sum(p for p, _ in results), len(results), [msg for p, msg in results if not p]


NOTHING_TO_CHECK = ("There is no computation to check. Write one computation per line as `a op b = c` "
                    "(for example `3 * 4 = 12`) and end with a line `Answer: X`.")


class ArithCheckScorer(Scorer):
    name = "arith-check"
    kind = "process"
    process_capable = True

    def __init__(self, eps: float = 0.05):
        if not 0 < eps <= 0.5:
            from ..errors import ConfigError  # noqa: PLC0415

            # above 0.5 a failed check would outrank a solution with nothing to check (log 0.5)
            raise ConfigError("eps", f"must be in (0, 0.5], got {eps!r}", "a number in (0, 0.5], e.g. 0.05")
        self.log_eps = math.log(eps)

    def _penalty(self, failed: int) -> float:
        return failed * self.log_eps if failed else 0.0

    async def score(self, problem, texts, meter):
        def run():
            out = []
            for t in texts:
                ok, total, _ = check_text(t)
                out.append(self._penalty(total - ok) if total else _UNCHECKED)
            return out

        return await _off_the_loop(run, sum(map(len, texts)))

    async def score_steps(self, problem, prefixes, steps, meter):
        def run():
            out = []
            for prefix, step in zip(prefixes, steps):
                _, _, last = check_text(prefix)
                ok, total, _ = check_text(step, last)
                out.append(self._penalty(total - ok))
            return out

        return await _off_the_loop(run, sum(map(len, prefixes)) + sum(map(len, steps)))

    async def explain(self, problem, texts, meter):
        out = []
        for t in texts:
            ok, total, wrong = explain_text(t)
            if not total:
                out.append(Verdict(_UNCHECKED, False, NOTHING_TO_CHECK))
            else:
                out.append(Verdict(self._penalty(total - ok), not wrong, "\n".join(wrong)))
        return out


_THREAD_FROM_CHARS = 16_384  # checking is linear (~1-15 ms per 10k characters); beyond this, a thread


async def _off_the_loop(run, chars: int):
    """``run()`` inline for short texts, in a worker thread for long ones: checking many
    equations costs milliseconds, and a server's event loop must not wait for it."""
    if chars < _THREAD_FROM_CHARS:
        return run()
    import asyncio  # noqa: PLC0415

    return await asyncio.to_thread(run)
