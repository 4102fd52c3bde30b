"""Fake generators and scorers for tests: deterministic, seeded, no downloads.

:class:`FakeGenerator` answers each request with ``reply(request, rng)`` where ``rng`` is seeded
by the request's own seed, so the same seed gives the same text whatever the batch; token counts
are whitespace words. ``yes_prob(request)`` drives self-evaluation: a request asking for top
logprobs gets ``{"Yes": log p, "No": log(1 - p)}`` at its first position.
:func:`answer_model` builds the classic test model: the right answer with probability ``p``,
otherwise one of ``wrong`` answers uniformly.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence

import numpy as np

from ..backends.base import Capabilities, Generator
from ..scorers.base import Scorer, prob_to_logscore
from ..types import Completion, GenRequest

__all__ = ["FakeGenerator", "answer_model", "OracleScorer"]


def answer_model(p_correct: float, correct: str = "42", wrong: Sequence[str] = ("7", "13", "99")) -> Callable:
    """A reply function: 'Answer: correct' with probability p_correct, else a uniform wrong one."""

    def reply(req: GenRequest, rng: np.random.Generator) -> str:
        if rng.random() < p_correct:
            return f"some work\nAnswer: {correct}"
        return f"some work\nAnswer: {wrong[int(rng.integers(len(wrong)))]}"

    return reply


class FakeGenerator(Generator):
    """A scripted generator with the real protocol (ordered, batch-first, cancellable)."""

    name = "fake"

    def __init__(self, reply: Callable[[GenRequest, np.random.Generator], str] | None = None, *,
                 yes_prob: Callable[[GenRequest], float] | None = None, chat: bool = True, delay: float = 0.0):
        self.reply = reply or answer_model(1.0)
        self.yes_prob = yes_prob or (lambda req: 0.5)
        self.capabilities = Capabilities(chat_template=chat, kv_fork=False)
        self.delay = delay
        self.calls = 0
        self.cancelled = 0

    def _one(self, r: GenRequest) -> Completion:
        self.calls += 1
        seed = r.seed if r.seed is not None else r.params.seed
        if r.params.top_logprobs:
            p = min(max(self.yes_prob(r), 1e-9), 1 - 1e-9)
            top = [{"Yes": math.log(p), "No": math.log(1 - p)}]
            tok = "Yes" if p >= 0.5 else "No"
            return Completion(text=tok, finish_reason="length", prompt_tokens=10, generated_tokens=1,
                              logprobs=[max(top[0].values())], sampled_logprobs=[0.0], top_logprobs=top, seed=seed)
        text = self.reply(r, np.random.default_rng(seed))
        words = text.split()[: r.params.max_tokens]
        finish = "length" if len(text.split()) > r.params.max_tokens else "stop"
        if finish == "length":
            text = " ".join(words)
        n = max(1, len(words))
        return Completion(text=text, finish_reason=finish, prompt_tokens=10, generated_tokens=n,
                          logprobs=[-0.5] * n, sampled_logprobs=[-0.5] * n, seed=seed)

    async def generate(self, requests: list[GenRequest]) -> list[Completion]:
        outs = []
        for r in requests:
            if self.delay:
                try:
                    await asyncio.sleep(self.delay)
                except asyncio.CancelledError:
                    self.cancelled += 1
                    raise
            outs.append(self._one(r))
        return outs


class OracleScorer(Scorer):
    """Scores with the problem's reference: log 1 if the extracted answer is right, else
    ``log(false_positive_rate)`` — an imperfect verifier with a known error rate."""

    name = "oracle"

    def __init__(self, false_positive_rate: float = 0.0):
        self.fpr = false_positive_rate

    async def score(self, problem, texts, ctx):
        out = []
        for t in texts:
            ok = ctx.task.is_correct(ctx.task.extract(t), problem.reference)
            out.append(0.0 if ok else prob_to_logscore(self.fpr))
        return out
