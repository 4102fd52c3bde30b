"""LLM self-evaluation: the generator judges its own answers, scored from logprobs.

For each candidate the model sees the problem and the proposed solution and is asked "Is this
answer correct? Answer Yes or No." One token is generated greedily with its top logprobs; the
score is ``log P(Yes) / (P(Yes) + P(No))`` with the probabilities summed over the tokens that
read "yes" / "no" (any case, surrounding space). When neither appears among the top
alternatives the score is ``log 0.5`` (no information). This is the P(True) self-evaluation of
Kadavath et al. (2022, "Language Models (Mostly) Know What They Know"); it needs no extra
model, costs one call and one generated token per candidate, and each call is charged to the
request's usage.
"""

from __future__ import annotations

import math

from ..params import SamplingParams
from ..types import GenRequest, Problem
from ..tasks.prompts import _question_text
from .base import Scorer, prob_to_logscore

__all__ = ["SelfEvalScorer"]

QUESTION = "Is this answer correct? Answer Yes or No."


class SelfEvalScorer(Scorer):
    name = "self-eval"
    kind = "outcome"
    needs_model = True

    def __init__(self, top_logprobs: int = 20):
        self.top_logprobs = top_logprobs

    def _request(self, problem: Problem, text: str, chat: bool) -> GenRequest:
        params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=self.top_logprobs)
        q = _question_text(problem) if problem.question is not None else (problem.messages or [{}])[-1].get("content", "")
        if chat:
            msgs = [
                {"role": "user", "content": q},
                {"role": "assistant", "content": text},
                {"role": "user", "content": QUESTION},
            ]
            return GenRequest(params=params, messages=msgs, key="self-eval")
        prompt = f"Question: {q}\nProposed solution:\n{text}\n{QUESTION}\nReply:"
        return GenRequest(params=params, prompt=prompt, key="self-eval")

    @staticmethod
    def p_yes(top: dict[str, float] | None) -> float:
        """P(yes) / (P(yes) + P(no)) from one position's top logprobs; 0.5 without evidence."""
        if not top:
            return 0.5
        yes = no = 0.0
        for tok, lp in top.items():
            w = tok.strip().lower()
            if w == "yes":
                yes += math.exp(lp)
            elif w == "no":
                no += math.exp(lp)
        if yes + no == 0.0:
            return 0.5
        return yes / (yes + no)

    async def score(self, problem, texts, ctx):
        reqs = [self._request(problem, t, ctx.chat) for t in texts]
        outs = await ctx.generate(reqs, purpose="scorer")
        return [prob_to_logscore(self.p_yes(c.top_logprobs[0] if c.top_logprobs else None)) for c in outs]
