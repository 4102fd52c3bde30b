"""Tasks own their knowledge: one module per task kind (``math``, ``mcq``, ``text``, ``code``)
holds its prompt, answer extraction, equivalence, whether a step ends the answer and grading
against a reference; :mod:`.base` holds the protocol and the one "Answer:" rule; :mod:`.prompts`
turns a problem into a generation request through its task."""

from .base import AnswerClasses, AnswerTask, extract_boxed, group_answers
from .code import CodeTask
from .math import MathTask, canonicalize_math
from .mcq import McqTask
from .prompts import build_request, default_stop, problem_messages, question_text
from .registry import TASKS, get_task
from .text import TextTask

__all__ = [
    "AnswerTask",
    "MathTask",
    "McqTask",
    "TextTask",
    "CodeTask",
    "TASKS",
    "get_task",
    "group_answers",
    "AnswerClasses",
    "extract_boxed",
    "canonicalize_math",
    "build_request",
    "default_stop",
    "problem_messages",
    "question_text",
]
