"""Default prompts: how a problem becomes a generation request, through its task.

Each task module holds its own instruction (:attr:`~.base.AnswerTask.system`), worked examples
(:attr:`~.base.AnswerTask.shots`, the math task's two) and question rendering
(:meth:`~.base.AnswerTask.question_text`). Chat models get the instruction as a system message
and the examples as earlier turns (small models need the examples to keep the format); base
models without a chat template get the same as plain text ("Question: ... / Solution: ..."),
with a stop at the next "Question:".
"""

from __future__ import annotations

from ..params import SamplingParams
from ..types import GenRequest, Problem
from .registry import get_task

__all__ = ["build_request", "default_stop", "problem_messages", "question_text"]


def question_text(problem: Problem) -> str:
    """The question as the model reads it in the default prompt (with lettered choices for
    ``mcq``); scorers that show the model a question use this too."""
    return get_task(problem.task).question_text(problem)


def problem_messages(p: Problem) -> list[dict[str, str]]:
    """The chat messages for a problem (its own messages if it has them)."""
    if p.messages is not None:
        return [dict(m) for m in p.messages]
    if p.prompt is not None:
        return [{"role": "user", "content": p.prompt}]
    task = get_task(p.task)
    msgs = [{"role": "system", "content": task.system}]
    for q, a in task.shots:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return msgs + [{"role": "user", "content": task.question_text(p)}]


def _plain_prompt(p: Problem) -> str:
    if p.messages is not None:
        return "\n\n".join(m["content"] for m in p.messages) + "\n"
    task = get_task(p.task)
    shots = "".join(f"Question: {q}\nSolution:\n{a}\n\n" for q, a in task.shots)
    return f"{task.system}\n\n{shots}Question: {task.question_text(p)}\nSolution:\n"


def default_stop(chat: bool) -> tuple[str, ...]:
    """Stops for the default prompts: base models would go on with a new question."""
    return () if chat else ("\nQuestion:", "\n\n\n")


def build_request(p: Problem, params: SamplingParams, *, chat: bool, seed: int | None, key: str = "") -> GenRequest:
    """The request that samples one solution of ``p``."""
    if p.prompt is not None:  # raw text: continued as it is, chat template or not
        return GenRequest(params=params, prompt=p.prompt, seed=seed, key=key)
    if not chat:
        stops = tuple(dict.fromkeys(params.stop + default_stop(False)))
        return GenRequest(params=params.with_(stop=stops), prompt=_plain_prompt(p), seed=seed, key=key)
    return GenRequest(params=params, messages=problem_messages(p), seed=seed, key=key)
