"""The ``mcq`` task: multiple choice with letters A-J.

Prompt: the question with its choices lettered "A. ...", "B. ...", and a last line ``Answer: X``.

Extraction, first rule that matches wins:

1. a single letter in the last ``\\boxed{}``;
2. the letter that starts the last "Answer:" line (the one rule of :mod:`.base`), else the last
   "answer is" / "answer:" phrase: "Answer: B", "**Answer:** D", "the answer is (C)", "answer
   is option D", "Answer: A. Paris" (an unbracketed "A" or "I" followed by a lowercase word, as
   in "the answer is I think", is not a choice);
3. the last line that is only a letter: "B", "B.", "B)" or "(B)";
4. the last capital letter in parentheses anywhere.

The answer is the uppercase letter. References may be letters or 0-based indices.
"""

from __future__ import annotations

import re
from numbers import Integral
from typing import TYPE_CHECKING, Any

from .base import AnswerTask, answer_lines, answer_phrases, extract_boxed
from .math import _strip_math_wrappers

if TYPE_CHECKING:
    from ..types import Problem

__all__ = ["McqTask", "LETTERS"]

LETTERS = "ABCDEFGHIJ"
MCQ_SYSTEM = ("Answer the multiple-choice question. Think briefly, then end with a last line 'Answer: X' "
              "where X is the letter of the choice.")

#: The choice a statement starts with.
_LEADING_CHOICE = re.compile(
    r"[ \t]*[*_]*[ \t]*(?:(?i:option|choice)[ \t]+)?"
    r"(?:\(([A-J])\)|\[([A-J])\]|(?!(?:A|I)\s+[a-z])([A-J])(?![\w'’]))"
)
_LETTER_LINE = re.compile(r"^[ \t]*[*_]*\(?([A-J])[.)]?[*_]*[ \t]*$", re.MULTILINE)
_PAREN = re.compile(r"\(([A-J])\)")
_BOXED = re.compile(r"[(\[]?\s*([A-Ja-j])\s*[)\]]?\.?")


def _leading_choice(statement: str) -> str | None:
    m = _LEADING_CHOICE.match(statement)
    return next(g for g in m.groups() if g) if m else None


class McqTask(AnswerTask):
    """Multiple choice with letters A-J (rules in the module docstring)."""

    name = "mcq"
    system = MCQ_SYSTEM

    def question_text(self, problem: Problem) -> str:
        """The question, then one line per choice: "A. first", "B. second", ..."""
        q = problem.question or ""
        if problem.choices:
            q += "\n" + "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(problem.choices))
        return q

    def extract(self, text: str) -> str | None:
        """Apply the extraction rules in order; ``None`` when none finds a letter."""
        for rule in (self._boxed, self._stated, self._letter_line, self._last_paren):
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
        m = _BOXED.fullmatch(_strip_math_wrappers(content))
        return m.group(1) if m else None

    @staticmethod
    def _stated(text: str) -> str | None:
        """The letter the last "Answer:" line starts with, else the last "answer is" phrase."""
        lines = answer_lines(text)
        if lines:
            return _leading_choice(lines[-1])
        phrases = answer_phrases(text)
        return _leading_choice(phrases[-1]) if phrases else None

    @staticmethod
    def _letter_line(text: str) -> str | None:
        """The last line holding only a letter, optionally bracketed or followed by "." / ")"."""
        letters = _LETTER_LINE.findall(text)
        return letters[-1] if letters else None

    @staticmethod
    def _last_paren(text: str) -> str | None:
        """The last "(X)" with X in A-J."""
        letters = _PAREN.findall(text)
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
