"""Answer extraction and equivalence, one :class:`AnswerTask` per task kind.

A task turns a model's completion text into a short canonical answer string
(:meth:`AnswerTask.extract`), decides whether two extracted answers mean the same thing
(:meth:`AnswerTask.equivalent`) and grades an answer against a dataset reference
(:meth:`AnswerTask.is_correct`). :func:`group_answers` uses a task to split answers into
equivalence classes for voting.

Tasks: ``math`` (numbers and LaTeX, with math-verify for symbolic equality), ``mcq`` (choice
letters A-J), ``text`` (normalised exact match) and ``code`` (the last code block).

Math-verify guards its own work with ``signal.alarm``, which only works in the main thread.
infscale calls equivalence from worker threads and executors, so math-verify is always called
with its timeouts disabled; our own bound is an input-length cap plus a daemon thread that is
abandoned (the comparison then counts as "not equal") when it runs past a deadline.
"""

from __future__ import annotations

import math
import logging
import re
import threading
import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from numbers import Integral, Real
from typing import Any

from .errors import ConfigError

__all__ = [
    "AnswerTask",
    "MathTask",
    "McqTask",
    "TextTask",
    "CodeTask",
    "get_task",
    "group_answers",
    "extract_boxed",
    "canonicalize_math",
]

# ---------------------------------------------------------------------------------------------
# Compiled patterns (the only module-level state).

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
_BOX_START = re.compile(r"\\(?:boxed|fbox)")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mbox|mathrm)\s*\{([^{}]*)\}")
_ANSWER_LINE = re.compile(
    r"^[ \t>]*[*_#]*[ \t]*(?:final[ \t]+answer|answer)[ \t]*[*_]*[ \t]*[:：][ \t]*(.*?)[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_HASH_LINE = re.compile(r"^[ \t]*####[ \t]*(.*?)[ \t]*$", re.MULTILINE)
_ANSWER_IS = re.compile(r"answer[ \t]+is[ \t]*[:：]?[ \t]*(.*)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")

_MCQ_ANSWER = re.compile(
    r"(?i:answer)\s*(?:(?i:is)\s*)?[:：]?\s*[*_]*\s*(?:(?i:option|choice)\s+)?"
    r"(?:\(([A-J])\)|\[([A-J])\]|(?!(?:A|I)\s+[a-z])([A-J])(?![\w'’]))"
)
_MCQ_LINE = re.compile(r"^[ \t]*[*_]*\(?([A-J])[.)]?[*_]*[ \t]*$", re.MULTILINE)
_MCQ_PAREN = re.compile(r"\(([A-J])\)")
_MCQ_BOXED = re.compile(r"[(\[]?\s*([A-Ja-j])\s*[)\]]?\.?")

_WHITESPACE = re.compile(r"\s+")
_TRAILING_PUNCT = ".,;:!?"
_QUOTES = "\"'`“”‘’*"
_LANG_TAG = re.compile(r"[\w+#.-]*")
_LOOKS_LIKE_CODE = re.compile(r"\bdef |\breturn\b")


# ---------------------------------------------------------------------------------------------
# Shared helpers.


def _last_answer_line(text: str) -> str | None:
    """Content of the last non-empty ``Answer: X`` / ``Final answer: X`` line, or ``None``."""
    for m in reversed(list(_ANSWER_LINE.finditer(text))):
        content = m.group(1).strip().strip("*_").strip()  # "**Answer:** 18" leaves "** 18"
        if content:
            return content
    return None


def _matching_brace(text: str, open_at: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_at``; ``None`` if unbalanced."""
    depth = 0
    for i in range(open_at, len(text)):
        c = text[i]
        if c == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif c == "}" and text[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return i
    return None


def _box_content(text: str, after: int) -> str | None:
    """Argument of a ``\\boxed``/``\\fbox`` whose name ends at ``after``.

    ``\\boxed{...}`` takes the brace group (nested braces allowed); ``\\boxed 5`` takes the
    next token up to whitespace or ``$``.
    """
    i = after
    while i < len(text) and text[i].isspace():
        i += 1
    if i < len(text) and text[i] == "{":
        end = _matching_brace(text, i)
        return None if end is None else text[i + 1 : end]
    if i == after and (i >= len(text) or not text[i].isdigit()):
        return None  # "\boxedx" is another macro name, not a box
    m = re.match(r"[^\s${}]+", text[i:])
    return m.group(0) if m else None


def extract_boxed(text: str) -> str | None:
    """Content of the last well-formed, non-empty ``\\boxed``/``\\fbox`` in ``text``."""
    for m in reversed(list(_BOX_START.finditer(text))):
        content = _box_content(text, m.end())
        if content is not None and content.strip():
            return content.strip()
    return None


def _normalise_text(s: str) -> str:
    """Lowercase, collapse whitespace, drop trailing punctuation and surrounding quotes."""
    s = _WHITESPACE.sub(" ", s.lower()).strip()
    previous = None
    while s != previous:
        previous = s
        s = s.rstrip(_TRAILING_PUNCT).strip()
        if len(s) >= 2 and s[0] in _QUOTES and s[-1] in _QUOTES:
            s = s[1:-1].strip()
        s = s.strip("*").strip()
    return s


# ---------------------------------------------------------------------------------------------
# Math canonicalisation and numeric comparison.


def _format_number(s: str) -> str:
    """Canonical decimal form of a plain number: no commas or "+", no trailing zeros, no -0."""
    d = Decimal(s.replace(",", ""))
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def _strip_math_wrappers(s: str) -> str:
    """Remove ``\\text{}``-style wrappers, math delimiters, LaTeX spacing and trailing periods.

    Delimiters: ``$`` anywhere; ``\\(..\\)``, ``\\[..\\]`` or ``**..**`` around the whole string.
    """
    previous = None
    while s != previous:
        previous = s
        s = _TEXT_WRAPPER.sub(lambda m: m.group(1), s)
    s = s.replace("\\$", "").replace("$", "").replace("{,}", ",")
    s = s.replace("\\!", "").replace("\\,", "")
    for space in ("\\;", "\\:", "\\ ", "\\quad", "\\qquad"):
        s = s.replace(space, " ")
    previous = None
    while s != previous:
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
        except InvalidOperation:
            return s
    return s


def _as_float(s: str) -> float | None:
    """The value of a canonical plain number, else ``None``."""
    if not _PLAIN_NUMBER.fullmatch(s):
        return None
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None


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


def _math_verify_equal(a: str, b: str) -> bool:
    """Symmetric math-verify comparison of two LaTeX answers, with signal timeouts disabled."""
    from math_verify import parse, verify  # imported lazily: pulls in sympy (about 0.7 s)

    # we disable math-verify's signal timeouts on purpose (our own deadline bounds it), so its
    # warning that they are disabled would only be noise on every call
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    pa = parse(f"${a}$", parsing_timeout=None)
    pb = parse(f"${b}$", parsing_timeout=None)
    if not pa or not pb:
        return False
    return verify(pa, pb, timeout_seconds=None) or verify(pb, pa, timeout_seconds=None)


# ---------------------------------------------------------------------------------------------
# Tasks.


class AnswerTask(ABC):
    """Extraction and equivalence rules for one task kind.

    :meth:`canonical` gives the exact-match key :func:`group_answers` uses before it falls back
    to the (possibly expensive) :meth:`equivalent`.
    """

    name: str = ""

    @abstractmethod
    def extract(self, text: str) -> str | None:
        """The canonical answer in a completion ``text``, or ``None`` when it has none."""

    def canonical(self, answer: str) -> str:
        """Exact-match key of an answer; equal keys are always equivalent."""
        return answer.strip()

    def equivalent(self, a: str, b: str) -> bool:
        """Whether two extracted answers are the same answer (default: equal canonical keys)."""
        ka, kb = self.canonical(a), self.canonical(b)
        return bool(ka) and ka == kb

    def reference_answer(self, reference: Any) -> str | None:
        """The answer string a dataset ``reference`` stands for (default: its ``str``)."""
        if reference is None:
            return None
        return str(reference)

    def is_correct(self, answer: str | None, reference: Any) -> bool:
        """Whether ``answer`` matches the dataset ``reference``; ``None`` is never correct."""
        if answer is None:
            return False
        ref = self.reference_answer(reference)
        return ref is not None and self.equivalent(answer, ref)

    def ends_answer(self, step: str) -> bool:
        """Whether a generated step gives the final answer, so the trajectory ends with it.

        The one rule the search core and the process scorers share: a non-empty ``Answer: X`` /
        ``Final answer: X`` line, Markdown emphasis allowed (``**Answer:** 18``).
        """
        return _last_answer_line(step) is not None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MathTask(AnswerTask):
    """Numbers and LaTeX expressions.

    Extraction, first rule that matches wins:

    1. the last ``\\boxed{...}`` (nested braces allowed), ``\\boxed 5`` or ``\\fbox{...}``;
    2. the last ``Answer: X`` / ``Final answer: X`` line, else the last ``#### X`` line (GSM8K);
    3. the last "the answer is X" (case-insensitive, up to the end of the sentence);
    4. the last number in the text.

    The result goes through :func:`canonicalize_math`.

    Equivalence: equal canonical strings; two plain numbers within 1e-6 relative tolerance;
    otherwise math-verify (symbolic/numeric equality of parsed LaTeX). Inputs longer than
    ``max_chars`` are only compared exactly, and a math-verify call running past
    ``timeout`` seconds counts as "not equal".
    """

    name = "math"

    def __init__(self, *, max_chars: int = 1000, timeout: float = 5.0, rel_tol: float = 1e-6):
        self.max_chars = max_chars
        self.timeout = timeout
        self.rel_tol = rel_tol

    def extract(self, text: str) -> str | None:
        """Apply the extraction rules in order; ``None`` when none finds a non-empty answer."""
        for rule in (extract_boxed, self._answer_line, self._answer_is, self._last_number):
            raw = rule(text)
            if raw is not None:
                answer = canonicalize_math(raw)
                if answer:
                    return answer
        return None

    @staticmethod
    def _answer_line(text: str) -> str | None:
        """``Answer: X`` / ``Final answer: X``, else GSM8K's ``#### X`` (the last one)."""
        content = _last_answer_line(text)
        if content is not None:
            return content
        hashes = [m.group(1) for m in _HASH_LINE.finditer(text) if m.group(1).strip()]
        return hashes[-1] if hashes else None

    @staticmethod
    def _answer_is(text: str) -> str | None:
        """What follows the last "answer is", cut at the end of its sentence."""
        matches = [m.group(1) for m in _ANSWER_IS.finditer(text)]
        for content in reversed(matches):
            content = _SENTENCE_END.split(content, maxsplit=1)[0].strip()
            if content:
                return content
        return None

    @staticmethod
    def _last_number(text: str) -> str | None:
        """The last number in the text."""
        numbers = _NUMBER_IN_TEXT.findall(text)
        return numbers[-1] if numbers else None

    def canonical(self, answer: str) -> str:
        """:func:`canonicalize_math` of the answer."""
        return canonicalize_math(answer)

    def equivalent(self, a: str, b: str) -> bool:
        """Exact, then numeric, then math-verify equality (see the class docstring)."""
        ca, cb = self.canonical(a), self.canonical(b)
        if not ca or not cb:
            return False
        if ca == cb:
            return True
        fa, fb = _as_float(ca), _as_float(cb)
        if fa is not None and fb is not None:
            return math.isclose(fa, fb, rel_tol=self.rel_tol, abs_tol=1e-12)
        if len(ca) > self.max_chars or len(cb) > self.max_chars:
            return False
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


class McqTask(AnswerTask):
    """Multiple choice with letters A-J.

    Extraction, first rule that matches wins:

    1. a single letter in the last ``\\boxed{}``;
    2. the last "Answer: B" / "the answer is (C)" / "answer is option D" (an unbracketed
       "A" or "I" followed by a lowercase word, as in "the answer is I think", is not a choice);
    3. the last line that is only a letter: "B", "B.", "B)" or "(B)";
    4. the last capital letter in parentheses anywhere.

    The answer is the uppercase letter. References may be letters or 0-based indices.
    """

    name = "mcq"

    def extract(self, text: str) -> str | None:
        """Apply the extraction rules in order; ``None`` when none finds a letter."""
        for rule in (self._boxed, self._answer_phrase, self._letter_line, self._last_paren):
            letter = rule(text)
            if letter is not None:
                return letter.upper()
        return None

    @staticmethod
    def _boxed(text: str) -> str | None:
        """A lone letter in the last box, as in ``\\boxed{B}`` or ``\\boxed{\\text{(b)}}``."""
        content = extract_boxed(text)
        if content is None:
            return None
        m = _MCQ_BOXED.fullmatch(_strip_math_wrappers(content))
        return m.group(1) if m else None

    @staticmethod
    def _answer_phrase(text: str) -> str | None:
        """The letter after the last "answer:" / "answer is"."""
        matches = list(_MCQ_ANSWER.finditer(text))
        if not matches:
            return None
        return next(g for g in matches[-1].groups() if g)

    @staticmethod
    def _letter_line(text: str) -> str | None:
        """The last line holding only a letter, optionally bracketed or followed by "." / ")"."""
        letters = _MCQ_LINE.findall(text)
        return letters[-1] if letters else None

    @staticmethod
    def _last_paren(text: str) -> str | None:
        """The last "(X)" with X in A-J."""
        letters = _MCQ_PAREN.findall(text)
        return letters[-1] if letters else None

    def canonical(self, answer: str) -> str:
        """The stripped, uppercased letter."""
        return answer.strip().upper()

    def reference_answer(self, reference: Any) -> str | None:
        """A letter ("B", "(b)") or a 0-based index (1 -> "B"); ``None`` for anything else."""
        if reference is None or isinstance(reference, bool):
            return None
        if isinstance(reference, Integral):
            index = int(reference)
            return chr(ord("A") + index) if 0 <= index < 10 else None
        letter = str(reference).strip().strip("().").strip().upper()
        return letter if len(letter) == 1 and "A" <= letter <= "J" else None


class TextTask(AnswerTask):
    """Short free-text answers compared by normalised exact match.

    Normalisation: lowercase, collapse whitespace, strip trailing punctuation (``.,;:!?``) and
    surrounding quotes or ``*``. Extraction uses the last ``Answer:`` line when there is one,
    else the whole text.
    """

    name = "text"

    def extract(self, text: str) -> str | None:
        """The normalised ``Answer:`` line content or whole text; ``None`` when empty."""
        content = _last_answer_line(text)
        answer = _normalise_text(content if content is not None else text)
        return answer or None

    def canonical(self, answer: str) -> str:
        """The normalised answer."""
        return _normalise_text(answer)


class CodeTask(AnswerTask):
    """Program text.

    Extraction: the last fenced code block (```` ```python ... ``` ```` or ```` ``` ... ``` ````;
    an unclosed final fence runs to the end of the text), else the whole text when it looks like
    code (contains ``def `` or ``return``). Lines lose trailing whitespace and leading/trailing
    blank lines are dropped.

    Equivalence is exact match of that normalised text. Whether code is *correct* cannot be
    decided here — it is judged by running tests elsewhere — so :meth:`is_correct` only says
    ``True`` when the answer is textually identical (up to trailing whitespace) to the reference.
    """

    name = "code"

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


_TASKS = types.MappingProxyType(
    {"math": MathTask, "mcq": McqTask, "code": CodeTask, "text": TextTask}
)


def get_task(name: str) -> AnswerTask:
    """A new task object for ``name`` (``math``, ``mcq``, ``code``, ``text``)."""
    cls = _TASKS.get(name)
    if cls is None:
        raise ConfigError("task", f"unknown task {name!r}", "math, mcq, code, text")
    return cls()


def group_answers(task: AnswerTask, answers: Sequence[str | None]) -> list[int | None]:
    """Equivalence-class id of each answer (``None`` for ``None``), numbered by first appearance.

    Answers with equal :meth:`AnswerTask.canonical` keys share a class without any comparison;
    each new key is compared with :meth:`AnswerTask.equivalent` against one representative per
    existing class, and joins the first class it matches. Cost: one ``equivalent`` call per
    (distinct key, class) pair at most.
    """
    key_class: dict[str, int] = {}
    representatives: list[str] = []
    ids: list[int | None] = []
    for answer in answers:
        if answer is None:
            ids.append(None)
            continue
        key = task.canonical(answer)
        if key not in key_class:
            key_class[key] = _find_class(task, key, representatives)
        ids.append(key_class[key])
    return ids


def _find_class(task: AnswerTask, key: str, representatives: list[str]) -> int:
    """Index of the first representative equivalent to ``key``, adding a new class if none."""
    for class_id, rep in enumerate(representatives):
        if task.equivalent(rep, key):
            return class_id
    representatives.append(key)
    return len(representatives) - 1
