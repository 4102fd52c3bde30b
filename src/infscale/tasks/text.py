"""The ``text`` task: short free-text answers compared by normalised exact match.

Prompt: the question and a last line ``Answer: X``. Extraction: the statement of the last
"Answer:" line (the one rule of :mod:`.base`) when there is one, else the whole text.
Normalisation: lowercase, collapse whitespace, strip trailing punctuation (``.,;:!?``) and
surrounding quotes or ``*``.
"""

from __future__ import annotations

import re

from .base import AnswerTask, last_answer_line

__all__ = ["TextTask", "normalise_text"]

TEXT_SYSTEM = "Answer the question. End with a last line 'Answer: X' giving the short final answer."

_WHITESPACE = re.compile(r"\s+")
_TRAILING_PUNCT = ".,;:!?"
_QUOTES = "\"'`“”‘’*"


def normalise_text(s: str) -> str:
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


class TextTask(AnswerTask):
    """Short free-text answers (rules in the module docstring)."""

    name = "text"
    system = TEXT_SYSTEM

    def extract(self, text: str) -> str | None:
        """The normalised "Answer:" statement or whole text; ``None`` when empty."""
        content = last_answer_line(text)
        answer = normalise_text(content if content is not None else text)
        return answer or None

    def canonical(self, answer: str) -> str:
        """The normalised answer."""
        return normalise_text(answer)
