"""What every task shares: the :class:`AnswerTask` protocol and the one "Answer:" rule.

A task (``math``, ``mcq``, ``text``, ``code``; one module each) owns its knowledge: its prompt
(:attr:`AnswerTask.system`, :attr:`AnswerTask.shots`, :meth:`AnswerTask.question_text`),
answer extraction (:meth:`~AnswerTask.extract`), equivalence (:meth:`~AnswerTask.canonical`,
:meth:`~AnswerTask.equivalent`), whether a generated step gives the final answer
(:meth:`~AnswerTask.ends_answer`) and grading against a dataset reference
(:meth:`~AnswerTask.grade`). Nothing outside ``tasks/`` keeps its own "Answer:" pattern.

The "Answer:" rule (:data:`ANSWER_LINE`): a line that starts (after optional spaces, a ``>``
quote mark and Markdown emphasis or heading marks) with ``Answer`` or ``Final answer`` (any
case), optional closing emphasis, then ``:`` (or the full-width ``：``); the rest of the line is
the answer statement. ``**Answer:** 18``, ``## Final Answer: 18`` and ``answer： 18`` all
state ``18``. A line whose statement is empty does not count. Mid-sentence phrases ("so the
answer is 18", "my answer: 18") are a weaker signal (:data:`ANSWER_PHRASE`): tasks use them
for extraction only when there is no answer line, and they never end a step.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..types import Problem

__all__ = [
    "ANSWER_LINE",
    "ANSWER_PHRASE",
    "AnswerTask",
    "answer_lines",
    "last_answer_line",
    "answer_phrases",
    "extract_boxed",
    "group_answers",
    "split_thinking",
    "THINK_OPEN",
    "THINK_CLOSE",
]

#: The tags of a reasoning model's thinking (DeepSeek-R1, Qwen3, s1 and others).
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def split_thinking(text: str) -> tuple[str, str]:
    """``(thinking, answer text)`` of a completion: what is inside ``<think>...</think>`` blocks
    and what is outside them.

    A completion that starts inside thinking (chat templates that open ``<think>`` in the
    prompt) has thinking up to its first ``</think>``; an unclosed ``<think>`` runs to the end
    (the answer has not started). Text without the tags is all answer. One pass, linear."""
    if THINK_OPEN not in text and THINK_CLOSE not in text:
        return "", text
    thinking: list[str] = []
    rest: list[str] = []
    i = 0
    close, opened = text.find(THINK_CLOSE), text.find(THINK_OPEN)
    if close != -1 and (opened == -1 or close < opened):
        thinking.append(text[:close])
        i = close + len(THINK_CLOSE)
    while True:
        o = text.find(THINK_OPEN, i)
        if o == -1:
            rest.append(text[i:])
            break
        rest.append(text[i:o])
        c = text.find(THINK_CLOSE, o + len(THINK_OPEN))
        if c == -1:
            thinking.append(text[o + len(THINK_OPEN):])
            break
        thinking.append(text[o + len(THINK_OPEN):c])
        i = c + len(THINK_CLOSE)
    return "\n\n".join(t.strip() for t in thinking if t.strip()), "".join(rest).strip()

#: The one "Answer:" line rule (see the module docstring); group 1 is the statement.
#: Linear in the line's length (it is applied to model output): the possessive runs never give
#: back blanks another run could take, and the statement is the line up to its last non-blank
#: character instead of a lazy match retried against every trailing blank.
ANSWER_LINE = re.compile(
    r"^[ \t>]*+[*_#]*+[ \t]*+(?:final[ \t]+answer|answer)[ \t]*+[*_]*+[ \t]*+[:：][ \t]*+((?:.*[^ \t\n])?)[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
#: "answer is X", "answer is: X" or "answer: X" anywhere in a line; group 1 is the rest of the line.
ANSWER_PHRASE = re.compile(r"\banswer(?:[ \t]+is\b[ \t]*[:：]?|[ \t]*[:：])[ \t]*(.*)", re.IGNORECASE)

_BOX_START = re.compile(r"\\(?:boxed|fbox)")
_BOX_TOKEN = re.compile(r"[^\s${}]+")


def answer_lines(text: str) -> list[str]:
    """The statements of every non-empty "Answer:" line of ``text``, in order, emphasis removed
    (``**Answer:** 18`` states ``18``)."""
    out = []
    for m in ANSWER_LINE.finditer(text):
        content = m.group(1).strip().strip("*_").strip()
        if content:
            out.append(content)
    return out


def last_answer_line(text: str) -> str | None:
    """The statement of the last non-empty "Answer:" line, or ``None``."""
    lines = answer_lines(text)
    return lines[-1] if lines else None


def answer_phrases(text: str) -> list[str]:
    """What follows each "answer is" / "answer:" phrase, to the end of its line, in order."""
    return [m.group(1) for m in ANSWER_PHRASE.finditer(text)]


def _brace_pairs(text: str) -> dict[int, int]:
    """Index of each ``{`` that is closed -> index of its ``}`` (a brace after a backslash is
    text, not a group), in one pass: finding every box's group costs linear time, not a scan
    to the end of the text per unclosed ``\\boxed{``."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for i, c in enumerate(text):
        if c == "{" and (i == 0 or text[i - 1] != "\\"):
            stack.append(i)
        elif c == "}" and i > 0 and text[i - 1] != "\\" and stack:
            pairs[stack.pop()] = i
    return pairs


def _box_content(text: str, after: int, pairs: dict[int, int]) -> str | None:
    """Argument of a ``\\boxed``/``\\fbox`` whose name ends at ``after``.

    ``\\boxed{...}`` takes the brace group (nested braces allowed); ``\\boxed 5`` takes the
    next token up to whitespace or ``$``.
    """
    i = after
    while i < len(text) and text[i].isspace():
        i += 1
    if i < len(text) and text[i] == "{":
        end = pairs.get(i)
        return None if end is None else text[i + 1 : end]
    if i == after and (i >= len(text) or not text[i].isdigit()):
        return None  # "\boxedx" is another macro name, not a box
    m = _BOX_TOKEN.match(text, i)  # matched in place: no copy of the rest of the text per box
    return m.group(0) if m else None


def extract_boxed(text: str) -> str | None:
    """Content of the last well-formed, non-empty ``\\boxed``/``\\fbox`` in ``text``."""
    starts = list(_BOX_START.finditer(text))
    pairs = _brace_pairs(text) if starts else {}
    for m in reversed(starts):
        content = _box_content(text, m.end(), pairs)
        if content is not None and content.strip():
            return content.strip()
    return None


class AnswerTask(ABC):
    """One task kind's knowledge: prompt, extraction, equivalence, step end, grading.

    :meth:`canonical` gives the exact-match key :func:`group_answers` uses before it falls back
    to the (possibly expensive) :meth:`equivalent`.
    """

    name: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every task reads answers outside a reasoning model's thinking: its ``extract`` sees
        the completion with ``<think>...</think>`` removed (:func:`split_thinking`)."""
        super().__init_subclass__(**kwargs)
        inner = cls.__dict__.get("extract")
        if inner is not None and not getattr(inner, "_outside_thinking", False):
            def extract(self, text: str, _inner=inner) -> str | None:
                return _inner(self, split_thinking(text)[1])

            extract.__doc__ = inner.__doc__
            extract._outside_thinking = True  # type: ignore[attr-defined]
            cls.extract = extract  # type: ignore[method-assign]

    #: The system instruction of the default prompt.
    system: str = ""
    #: Worked examples ``(question, solution)`` shown before the question (may be empty).
    shots: tuple[tuple[str, str], ...] = ()

    def question_text(self, problem: Problem) -> str:
        """The question as the model reads it (the ``mcq`` task appends the lettered choices)."""
        return problem.question or ""

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
        """Whether ``answer`` is equivalent to the answer ``reference`` stands for; ``None`` is
        never correct."""
        if answer is None:
            return False
        ref = self.reference_answer(reference)
        return ref is not None and self.equivalent(answer, ref)

    def grade(self, answer: str | None, problem: Problem) -> bool:
        """Whether an extracted ``answer`` solves ``problem`` (the evaluation harness's grading).

        Default: :meth:`is_correct` against ``problem.reference``. The ``code`` task runs the
        problem's tests instead (blocking: call it from a worker thread).
        """
        return self.is_correct(answer, problem.reference)

    def ends_answer(self, step: str) -> bool:
        """Whether a generated step gives the final answer, so the trajectory ends with it.

        The one rule the search core and the process scorers share: the step holds a non-empty
        "Answer:" line (:data:`ANSWER_LINE`; Markdown emphasis allowed, ``**Answer:** 18``).
        Whether the statement holds an answer the task can extract does not matter here.
        """
        return last_answer_line(step) is not None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


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


class AnswerClasses:
    """The equivalence classes of a set of answers, computed once by ``task`` (a cache, not a task).

    The evaluation harness folds many subsamples of one pool of answers; grouping the pool once
    and looking the subsamples' answers up here spares a math-verify comparison per subsample.
    :meth:`group` is :func:`group_answers` for answers of the pool; an answer outside it is
    grouped by the task against the pool's classes."""

    def __init__(self, task: AnswerTask, answers: Sequence[str | None]):
        self.task = task
        self._class: dict[str, int] = {}
        self._representatives: list[str] = []
        self._key_class: dict[str, int] = {}
        self.group(answers)

    def class_of(self, answer: str) -> int:
        """The pool-wide class id of ``answer`` (new answers join or open a class)."""
        k = self._class.get(answer)
        if k is None:
            key = self.task.canonical(answer)
            if key not in self._key_class:
                self._key_class[key] = _find_class(self.task, key, self._representatives)
            k = self._class[answer] = self._key_class[key]
        return k

    def group(self, answers: Sequence[str | None]) -> list[int | None]:
        """A class id per answer (``None`` for ``None``); equal ids mean equivalent answers."""
        return [None if a is None else self.class_of(a) for a in answers]


def _find_class(task: AnswerTask, key: str, representatives: list[str]) -> int:
    """Index of the first representative equivalent to ``key``, adding a new class if none."""
    for class_id, rep in enumerate(representatives):
        if task.equivalent(rep, key):
            return class_id
    representatives.append(key)
    return len(representatives) - 1
