"""Structured answers: JSON documents (``json``) and function calls (``tool-call``).

Both fold candidates by *parsed* content, not by text: two completions that differ only in key
order, spacing or number formatting of the same JSON value are the same answer.

``json`` (the server's ``response_format``): the answer is the completion's JSON value (a
Markdown code fence around it is allowed; otherwise the first ``{`` or ``[`` starts it) written
canonically — keys sorted, no spaces, non-ASCII kept. A completion without a parseable JSON
value has no answer.

``tool-call`` (the server's ``tools``): the model is asked (:func:`tool_instructions`) to call a
function by writing ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (the format of
Hermes-style function-calling models; a bare JSON object with ``name`` and ``arguments`` or
``parameters`` is read too, and ``arguments`` may be a JSON string, as OpenAI sends it). The
answer of a completion with calls is :data:`TOOL_CALLS_PREFIX` followed by the canonical JSON
list of ``{"arguments", "name"}`` objects, in the order written; a completion without a call
is read as the ``text`` task reads it (a plain reply is a legitimate answer when the caller
lets the model choose). :func:`parse_tool_answer` turns an answer back into calls.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .base import AnswerTask, last_answer_line
from .text import TextTask

__all__ = ["JsonTask", "ToolCallTask", "canonical_json", "parse_json_value", "parse_tool_answer",
           "tool_instructions", "TOOL_CALLS_PREFIX"]

#: What starts the answer string of a completion that calls functions.
TOOL_CALLS_PREFIX = "tool_calls:"

_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n(.*?)```", re.DOTALL)
_TOOL_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
_DECODER = json.JSONDecoder()


def canonical_json(value: Any) -> str:
    """One spelling per JSON value: keys sorted, no spaces, non-ASCII kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_json_value(text: str) -> tuple[bool, Any]:
    """``(True, value)`` for the JSON value a completion holds, else ``(False, None)``.

    Tried in order: the whole text; the content of the first Markdown code fence; the value
    that starts at the first ``{`` or ``[`` (text after it is ignored). Each is one parse, so
    the cost is linear in the text's length."""
    candidates = [text.strip()]
    fence = _FENCE.search(text)
    if fence:
        candidates.append(fence.group(1).strip())
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if starts:
        candidates.append(text[min(starts):])
    for c in candidates:
        if not c:
            continue
        try:
            return True, json.loads(c)
        except (ValueError, RecursionError):
            pass
        try:
            return True, _DECODER.raw_decode(c)[0]
        except (ValueError, RecursionError):
            pass
    return False, None


class JsonTask(AnswerTask):
    """Answers are JSON values, compared by their canonical form (rules in the module docstring)."""

    name = "json"
    system = "Reply with one JSON value and nothing else."

    def extract(self, text: str) -> str | None:
        ok, value = parse_json_value(text)
        return canonical_json(value) if ok else None

    def canonical(self, answer: str) -> str:
        ok, value = parse_json_value(answer)
        return canonical_json(value) if ok else answer.strip()

    def ends_answer(self, step: str) -> bool:
        return last_answer_line(step) is not None


def _call(obj: Any) -> dict[str, Any] | None:
    """``{"name", "arguments"}`` of one call object, or ``None`` when it is not one."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):  # OpenAI's own shape: {"type": "function", "function": {...}}
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except (ValueError, RecursionError):
            return None
    if not isinstance(args, dict):
        return None
    return {"name": name, "arguments": args}


def tool_calls_in(text: str) -> list[dict[str, Any]]:
    """The function calls a completion writes (see the module docstring), in order."""
    calls = []
    blocks = _TOOL_BLOCK.findall(text)
    for block in blocks:
        ok, value = parse_json_value(block)
        for item in (value if ok and isinstance(value, list) else [value] if ok else []):
            c = _call(item)
            if c is not None:
                calls.append(c)
    if not blocks:
        ok, value = parse_json_value(text)
        if ok:
            for item in value if isinstance(value, list) else [value]:
                c = _call(item)
                if c is None:
                    return []  # a JSON reply that is not (only) calls is a plain reply
                calls.append(c)
    return calls


def parse_tool_answer(answer: str | None) -> list[dict[str, Any]] | None:
    """The calls an answer of the ``tool-call`` task stands for, or ``None`` for a plain reply."""
    if answer is None or not answer.startswith(TOOL_CALLS_PREFIX):
        return None
    calls = json.loads(answer[len(TOOL_CALLS_PREFIX):])
    return calls if isinstance(calls, list) and calls else None


class ToolCallTask(AnswerTask):
    """Function calls folded by name and canonical arguments; plain replies as ``text`` reads them."""

    name = "tool-call"
    system = TextTask.system

    def __init__(self) -> None:
        self._text = TextTask()

    def extract(self, text: str) -> str | None:
        calls = tool_calls_in(text)
        if calls:
            return TOOL_CALLS_PREFIX + canonical_json(calls)
        return self._text.extract(text)

    def canonical(self, answer: str) -> str:
        if answer.startswith(TOOL_CALLS_PREFIX):
            return answer
        return self._text.canonical(answer)

    def ends_answer(self, step: str) -> bool:
        return "</tool_call>" in step or last_answer_line(step) is not None


def tool_instructions(tools: list[dict[str, Any]], choice: str | None = None) -> str:
    """The system text that shows the model its functions and how to call them.

    ``choice``: ``None`` (the model decides), ``"required"`` (it must call one) or a function
    name (it must call that one)."""
    lines = ["You can call these functions (JSON descriptions):"]
    lines += [canonical_json(t.get("function", t)) for t in tools]
    lines.append('To call a function, reply with <tool_call>{"name": NAME, "arguments": {...}}</tool_call> '
                 "(one block per call) and nothing else.")
    if choice == "required":
        lines.append("You must call one of the functions.")
    elif choice:
        lines.append(f"You must call the function {choice}.")
    else:
        lines.append("If no function is needed, answer directly.")
    return "\n".join(lines)
