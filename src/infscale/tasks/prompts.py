"""Default prompts.

Math: the model is asked for one short computation per line and a last line ``Answer: X``, so
that a step (issue: step-level search) is a line and the answer is easy to extract. Chat models
get a system instruction and two worked examples as earlier turns (small models need the
examples to keep the format); base models without a chat template get the same examples as
plain text ("Question: ... / Solution: ..."), with a stop at the next "Question:".
"""

from __future__ import annotations

from ..params import SamplingParams
from ..types import GenRequest, Problem

__all__ = ["build_request", "default_stop", "problem_messages"]

MATH_SYSTEM = (
    "Solve the math problem. Write one short computation per line, like 3 * 4 = 12. "
    "End with a last line of the form 'Answer: X' where X is the final number."
)
MATH_SHOTS = [
    (
        "Tom has 3 boxes with 4 apples each. He eats 2 apples. How many apples are left?",
        "3 * 4 = 12\n12 - 2 = 10\nAnswer: 10",
    ),
    (
        "A pen costs 5 dollars. Anna buys 6 pens and pays with 50 dollars. How much change does she get?",
        "6 * 5 = 30\n50 - 30 = 20\nAnswer: 20",
    ),
]
MCQ_SYSTEM = "Answer the multiple-choice question. Think briefly, then end with a last line 'Answer: X' where X is the letter of the choice."
TEXT_SYSTEM = "Answer the question. End with a last line 'Answer: X' giving the short final answer."
CODE_SYSTEM = "Write a Python solution. Put the complete code in one ```python fenced block."


def _question_text(p: Problem) -> str:
    q = p.question or ""
    if p.task == "mcq" and p.choices:
        letters = "ABCDEFGHIJ"
        q += "\n" + "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(p.choices))
    return q


def problem_messages(p: Problem) -> list[dict[str, str]]:
    """The chat messages for a problem (its own messages if it has them)."""
    if p.messages is not None:
        return [dict(m) for m in p.messages]
    if p.prompt is not None:
        return [{"role": "user", "content": p.prompt}]
    if p.task == "math":
        msgs = [{"role": "system", "content": MATH_SYSTEM}]
        for q, a in MATH_SHOTS:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return msgs + [{"role": "user", "content": _question_text(p)}]
    system = {"mcq": MCQ_SYSTEM, "code": CODE_SYSTEM}.get(p.task, TEXT_SYSTEM)
    return [{"role": "system", "content": system}, {"role": "user", "content": _question_text(p)}]


def _plain_prompt(p: Problem) -> str:
    if p.messages is not None:
        return "\n\n".join(m["content"] for m in p.messages) + "\n"
    if p.task == "math":
        shots = "".join(f"Question: {q}\nSolution:\n{a}\n\n" for q, a in MATH_SHOTS)
        return f"{MATH_SYSTEM}\n\n{shots}Question: {_question_text(p)}\nSolution:\n"
    system = {"mcq": MCQ_SYSTEM, "code": CODE_SYSTEM}.get(p.task, TEXT_SYSTEM)
    return f"{system}\n\nQuestion: {_question_text(p)}\nSolution:\n"


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
