"""The ``math`` task: numbers and LaTeX expressions.

Prompt: one short computation per line and a last line ``Answer: X`` (two worked examples), so
that a step of step-level search is a line and the answer is easy to extract.

Extraction (:meth:`MathTask.extract`), first rule that matches wins:

1. the last ``\\boxed{...}`` (nested braces allowed), ``\\boxed 5`` or ``\\fbox{...}``;
2. an answer statement: the last "Answer:" line (the one rule of :mod:`.base`), else the last
   GSM8K ``#### X`` line, else what follows the last "answer is" / "answer:" phrase (up to the
   end of its sentence). The statement is read by :func:`statement_answer`; when it holds no
   clear number or expression the task **abstains** (``None``) rather than fall through to
   later rules, so a stated answer is never replaced by some other number of the text;
3. without any answer statement: the last number in the text.

Reading a statement (:func:`statement_answer`), first rule that applies:

a. one delimited math segment (``$...$``, ``\\(...\\)``, ``\\[...\\]``) among words: read the
   segment ("the area is $12\\pi$" -> ``12\\pi``); two or more that differ: abstain;
b. a number, possibly with units or a trailing clause ("18", "$1,234.00", "18 dollars",
   "50%", "42, which is the total") -> the number;
c. an equation: the right-hand side of its last ``=``, read by rules b, d and e
   ("17 + 2 = 20" -> ``20``, "x = 5 apples" -> ``5``);
d. no words (no run of two or more letters outside LaTeX commands): the expression itself
   ("\\frac{3}{4}", "2\\sqrt{3}", "x^2 + 1");
e. words without LaTeX and exactly one number, in a phrase of at most
   :data:`SHORT_PHRASE_WORDS` words: that number ("Ben has 24" -> ``24``);
f. anything else abstains: two numbers among words ("the sum of 24 different from 134"),
   no number ("twenty"), a long sentence, words mixed with undelimited LaTeX.

Every result goes through :func:`canonicalize_math`.

Equivalence: equal canonical strings; two plain numbers within 1e-6 relative tolerance;
otherwise math-verify (symbolic/numeric equality of parsed LaTeX). Math-verify guards its own
work with ``signal.alarm``, which only works in the main thread; infscale calls equivalence from
worker threads and executors, so math-verify is always called with its timeouts disabled and our
own bound is an input-length cap plus a daemon thread that is abandoned (the comparison then
counts as "not equal") when it runs past a deadline. The deadline covers the comparison only:
math-verify is imported and warmed up once per process before the first deadline starts.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from numbers import Integral, Real
from typing import Any

from .base import AnswerTask, answer_phrases, extract_boxed, last_answer_line

__all__ = ["MathTask", "canonicalize_math", "statement_answer", "as_number", "SHORT_PHRASE_WORDS"]

#: The longest phrase (in words) from which a lone number is taken as the answer.
SHORT_PHRASE_WORDS = 12

_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|[-+]?\.\d+"
#: A number anywhere in a text; a sign only counts when it does not follow a word ("3-4").
_NUMBER_IN_TEXT = re.compile(rf"(?<![\w.])(?:{_NUM})")
#: A whole string that is a plain number ("1,234", "-0.50", "+5", "5.").
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|[-+]?\.\d+")
#: A number followed by a unit-like tail: "18 dollars", "50%", "42, which is the total".
_NUMBER_WITH_UNITS = re.compile(
    rf"({_NUM})(?:\s*\\?%|\s+[A-Za-z]{{2,}}[A-Za-z.'’/-]*(?:\s+[A-Za-z][A-Za-z.'’/-]*)*"
    r"|,\s+[A-Za-z].*)"
)
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mbox|mathrm)\s*\{([^{}]*)\}")
_HASH_LINE = re.compile(r"^[ \t]*+####[ \t]*+((?:.*[^ \t\n])?)[ \t]*$", re.MULTILINE)  # linear, as ANSWER_LINE
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
#: Delimited math: $...$ (not $$), \(...\), \[...\].
_MATH_SEGMENT = re.compile(r"(?<![\\$])\$(?!\$)([^$]+?)(?<!\\)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{2,}")

MATH_SYSTEM = (
    "Solve the math problem. Write one short computation per line, like 3 * 4 = 12. "
    "End with a last line of the form 'Answer: X' where X is the final number."
)
MATH_SHOTS = (
    (
        "Tom has 3 boxes with 4 apples each. He eats 2 apples. How many apples are left?",
        "3 * 4 = 12\n12 - 2 = 10\nAnswer: 10",
    ),
    (
        "A pen costs 5 dollars. Anna buys 6 pens and pays with 50 dollars. How much change does she get?",
        "6 * 5 = 30\n50 - 30 = 20\nAnswer: 20",
    ),
)


# ---------------------------------------------------------------------------------------------
# Canonical forms.


def _format_number(s: str) -> str:
    """Canonical decimal form of a plain number: no commas or "+", no trailing zeros, no -0."""
    d = Decimal(s.replace(",", ""))
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


# Unwrapping passes are bounded: a model can write wrappers nested thousands deep, and one pass
# per level over the whole string would cost quadratic time.
_MAX_WRAPPER_PASSES = 16


def _strip_math_wrappers(s: str) -> str:
    """Remove ``\\text{}``-style wrappers, math delimiters, LaTeX spacing and trailing periods.

    Delimiters: ``$`` anywhere; ``\\(..\\)``, ``\\[..\\]`` or ``**..**`` around the whole string.
    """
    previous = None
    for _ in range(_MAX_WRAPPER_PASSES):  # each pass unwraps one level; real answers nest one or two
        if s == previous:
            break
        previous = s
        s = _TEXT_WRAPPER.sub(lambda m: m.group(1), s)
    s = s.replace("\\$", "").replace("$", "").replace("{,}", ",")
    s = s.replace("\\!", "").replace("\\,", "")
    for space in ("\\;", "\\:", "\\ ", "\\quad", "\\qquad"):
        s = s.replace(space, " ")
    previous = None
    for _ in range(_MAX_WRAPPER_PASSES):
        if s == previous:
            break
        previous = s
        s = s.strip().rstrip(".").strip()
        for left, right in (("**", "**"), ("\\(", "\\)"), ("\\[", "\\]")):
            if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right):
                s = s[len(left) : -len(right)]
    return s


def canonicalize_math(s: str) -> str:
    """Canonical form of a math answer string.

    Wrappers (``\\text{}``, ``$``, trailing periods) are removed. A plain number, possibly
    followed by units ("18 dollars", "50%"), becomes its canonical decimal ("1,234.50" ->
    "1234.5", "-0" -> "0", "+5" -> "5"). Anything else (fractions, LaTeX) is returned trimmed.
    """
    s = _strip_math_wrappers(s)
    m = _NUMBER_WITH_UNITS.fullmatch(s)
    if m:
        s = m.group(1)
    if _PLAIN_NUMBER.fullmatch(s):
        try:
            return _format_number(s)
        except (InvalidOperation, ValueError):  # ValueError: more digits than int() converts
            return s
    return s


def as_number(answer: str | None) -> float | None:
    """The value of an answer that is a plain number ("18", "1,234.5", "$18"), else ``None``."""
    if answer is None:
        return None
    s = canonicalize_math(answer)
    if not _PLAIN_NUMBER.fullmatch(s):
        return None
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# Reading an answer statement.


def _has_words(s: str) -> bool:
    """Whether ``s`` holds a run of two or more letters outside LaTeX commands."""
    return bool(_WORD.search(_LATEX_COMMAND.sub(" ", s)))


def _number(s: str) -> str | None:
    """Rule b: ``s`` is a number, possibly with units or a trailing clause."""
    c = canonicalize_math(s)
    return c if _PLAIN_NUMBER.fullmatch(c) else None


def _value(s: str) -> str | None:
    """Rules b, d and e on a statement without an equation."""
    number = _number(s)
    if number is not None:
        return number
    bare = _strip_math_wrappers(s)
    if not bare:
        return None
    if not _has_words(bare):
        return canonicalize_math(bare)
    if "\\" in bare:
        return None  # words mixed with undelimited LaTeX: no telling where the answer is
    numbers = _NUMBER_IN_TEXT.findall(bare)
    if len(numbers) == 1 and len(bare.split()) <= SHORT_PHRASE_WORDS:
        return canonicalize_math(numbers[0])
    return None


def statement_answer(statement: str) -> str | None:
    """The number or expression an answer statement gives, or ``None`` (abstain).

    The rules are listed in the module docstring: a lone delimited math segment, a number with
    units, an equation's right-hand side, a word-free expression, a lone number in a short
    phrase; free text otherwise abstains.
    """
    s = statement.strip().strip("*_").strip()
    if not s:
        return None
    segments = [next(g for g in m.groups() if g is not None).strip() for m in _MATH_SEGMENT.finditer(s)]
    segments = [g for g in segments if g and not _has_words(_TEXT_WRAPPER.sub("", g))]
    if segments and _has_words(_MATH_SEGMENT.sub(" ", s)):  # rule a: math among words
        answers = {statement_answer(g) for g in segments}
        return answers.pop() if len(answers) == 1 else None
    number = _number(s)
    if number is not None:
        return number
    bare = _strip_math_wrappers(s)
    if "=" in bare:  # rule c: the right-hand side of the last "="
        return _value(bare.rsplit("=", 1)[1])
    return _value(bare)


# ---------------------------------------------------------------------------------------------
# Equivalence.


def _run_with_deadline(fn: Callable[[], bool], seconds: float) -> bool:
    """Run ``fn`` in a daemon thread; ``False`` if it raises or is still running at the deadline.

    A late thread is abandoned, not killed (Python cannot kill threads); it ends on its own.
    Any exception counts as ``False``, including math-verify's ``TimeoutException``, which
    derives from ``BaseException``.
    """
    outcome: list[bool] = []

    def run() -> None:
        try:
            outcome.append(bool(fn()))
        except BaseException:  # noqa: BLE001 - a failed comparison is "not equal"
            outcome.append(False)

    worker = threading.Thread(target=run, name="infscale-math-verify", daemon=True)
    worker.start()
    worker.join(seconds)
    return bool(outcome and outcome[0])


_math_verify_lock = threading.Lock()
_math_verify: tuple[Callable[..., Any], Callable[..., Any]] | None = None


def _load_math_verify() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """math-verify's ``parse`` and ``verify``, imported and warmed up once per process.

    The import pulls in sympy (seconds on a loaded machine) and the first parse builds the LaTeX
    grammar; both happen here, before any comparison's deadline starts, so that a deadline
    bounds only the comparison and an answer's equivalence does not depend on machine load."""
    global _math_verify
    with _math_verify_lock:
        if _math_verify is None:
            from math_verify import parse, verify  # imported lazily: pulls in sympy

            # we disable math-verify's signal timeouts on purpose (our own deadline bounds it), so
            # its warning that they are disabled would only be noise on every call
            logging.getLogger("math_verify").setLevel(logging.ERROR)
            verify(parse("$\\frac{1}{2}$", parsing_timeout=None), parse("$0.5$", parsing_timeout=None),
                   timeout_seconds=None)
            _math_verify = (parse, verify)
        return _math_verify


def _math_verify_equal(a: str, b: str) -> bool:
    """Symmetric math-verify comparison of two LaTeX answers, with signal timeouts disabled."""
    parse, verify = _load_math_verify()
    pa = parse(f"${a}$", parsing_timeout=None)
    pb = parse(f"${b}$", parsing_timeout=None)
    if not pa or not pb:
        return False
    return verify(pa, pb, timeout_seconds=None) or verify(pb, pa, timeout_seconds=None)


# ---------------------------------------------------------------------------------------------
# The task.


class MathTask(AnswerTask):
    """Numbers and LaTeX expressions (rules in the module docstring).

    Inputs longer than ``max_chars`` are only compared exactly, and a math-verify call running
    past ``timeout`` seconds counts as "not equal".
    """

    name = "math"
    system = MATH_SYSTEM
    shots = MATH_SHOTS

    def __init__(self, *, max_chars: int = 1000, timeout: float = 5.0, rel_tol: float = 1e-6):
        self.max_chars = max_chars
        self.timeout = timeout
        self.rel_tol = rel_tol

    def extract(self, text: str) -> str | None:
        """Boxed, else an answer statement (which may abstain), else the last number."""
        boxed = extract_boxed(text)
        if boxed is not None:
            answer = canonicalize_math(boxed)
            if answer:
                return answer
        statement = self._statement(text)
        if statement is not None:
            return statement_answer(statement)
        numbers = _NUMBER_IN_TEXT.findall(text)
        return canonicalize_math(numbers[-1]) if numbers else None

    @staticmethod
    def _statement(text: str) -> str | None:
        """The last "Answer:" line, else the last ``#### X`` line, else the last "answer is"
        phrase cut at the end of its sentence; ``None`` when the text states no answer."""
        line = last_answer_line(text)
        if line is not None:
            return line
        hashes = [m.group(1) for m in _HASH_LINE.finditer(text) if m.group(1).strip()]
        if hashes:
            return hashes[-1]
        for content in reversed(answer_phrases(text)):
            content = _SENTENCE_END.split(content, maxsplit=1)[0].strip()
            if content:
                return content
        return None

    def canonical(self, answer: str) -> str:
        """:func:`canonicalize_math` of the answer."""
        return canonicalize_math(answer)

    def equivalent(self, a: str, b: str) -> bool:
        """Exact, then numeric, then math-verify equality (see the module docstring)."""
        ca, cb = self.canonical(a), self.canonical(b)
        if not ca or not cb:
            return False
        if ca == cb:
            return True
        fa, fb = as_number(ca), as_number(cb)
        if fa is not None and fb is not None:
            return math.isclose(fa, fb, rel_tol=self.rel_tol, abs_tol=1e-12)
        if len(ca) > self.max_chars or len(cb) > self.max_chars:
            return False
        _load_math_verify()  # once per process, outside the deadline: it bounds the comparison only
        return _run_with_deadline(lambda: _math_verify_equal(ca, cb), self.timeout)

    def reference_answer(self, reference: Any) -> str | None:
        """A number, a GSM8K solution (after the last ``####``), a boxed solution or an answer."""
        if reference is None or isinstance(reference, bool):
            return None
        if isinstance(reference, Integral):
            return str(int(reference))
        if isinstance(reference, Real):
            return canonicalize_math(repr(float(reference)))
        ref = str(reference)
        if "####" in ref:
            return canonicalize_math(ref.rsplit("####", 1)[1])
        boxed = extract_boxed(ref)
        return canonicalize_math(boxed if boxed is not None else ref)
