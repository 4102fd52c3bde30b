"""The registry of tasks by name."""

from __future__ import annotations

import types

from ..errors import ConfigError
from .base import AnswerTask
from .code import CodeTask
from .math import MathTask
from .mcq import McqTask
from .structured import JsonTask, ToolCallTask
from .text import TextTask

__all__ = ["TASKS", "get_task"]

#: Task classes by name (``Problem.task``, ``--task``).
TASKS = types.MappingProxyType({"math": MathTask, "mcq": McqTask, "code": CodeTask, "text": TextTask,
                              "json": JsonTask, "tool-call": ToolCallTask})


def get_task(name: str) -> AnswerTask:
    """A new task object for ``name`` (``math``, ``mcq``, ``code``, ``text``, ``json``, ``tool-call``)."""
    cls = TASKS.get(name)
    if cls is None:
        raise ConfigError("task", f"unknown task {name!r}", ", ".join(TASKS))
    return cls()
