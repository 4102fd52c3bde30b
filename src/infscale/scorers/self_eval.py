"""LLM self-evaluation: the generator judges its own answers and steps, scored from logprobs.

* **Outcome** (:meth:`SelfEvalScorer.score`): the model sees the problem and the proposed
  solution and is asked "Is this answer correct? Answer Yes or No." — the P(True)
  self-evaluation of Kadavath et al. (2022, "Language Models (Mostly) Know What They Know").
* **Process** (:meth:`SelfEvalScorer.score_steps`): the model sees the problem, the solution so
  far and the new step and is asked "Is the last step correct? Answer Yes or No." — the
  step-level self-evaluation that guides the beam search of Xie et al. (2023,
  "Self-Evaluation Guided Beam Search for Reasoning").

Either way one token is generated greedily with its top logprobs and the score is
``log P(Yes) / (P(Yes) + P(No))``, the probabilities summed over the tokens that read "yes" /
"no" (any case, surrounding space); when neither appears among the top alternatives the score is
``log 0.5`` (no information). It needs no extra model and costs one call and one generated token
(plus the prompt) per candidate or step, each charged to the request's usage and budget through
the request's :class:`~infscale.meter.Meter`; a candidate whose call the budget refused is
unscored (NaN). It needs top logprobs: on a generator that reports none it raises a one-line
ConfigError before any call (scoring every candidate ``log 0.5`` would be silent noise). The
scorer serves both roles: ``kind`` is ``outcome`` and ``process_capable`` is True.

By default the policy model evaluates itself; ``self-eval:model=NAME`` (another embedded model)
or ``self-eval:url=URL`` (an OpenAI-compatible server) asks a model chosen independently, its
calls charged to the same budget and counted apart in ``usage.by_model``
(:mod:`infscale.scorers.separate`).
"""

from __future__ import annotations

import math

from ..meter import BUDGET, Meter
from ..params import SamplingParams
from ..types import Completion, GenRequest, Problem
from ..tasks.prompts import question_text
from .base import UNSCORED, Scorer, prob_to_logscore
from .separate import ScorerModel

__all__ = ["SelfEvalScorer"]

QUESTION = "Is this answer correct? Answer Yes or No."
STEP_QUESTION = "Is the last step correct? Answer Yes or No."


class SelfEvalScorer(Scorer):
    name = "self-eval"
    kind = "outcome"
    process_capable = True
    requires = ("top_logprobs",)

    def __init__(self, top_logprobs: int = 20, *, model: str | None = None, url: str | None = None):
        self.top_logprobs = top_logprobs
        self.where = ScorerModel(self.name, model=model, url=url)

    async def check(self, meter: Meter) -> None:
        await super().check(await self.where.meter(meter))

    def _params(self) -> SamplingParams:
        return SamplingParams(temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=self.top_logprobs)

    @staticmethod
    def _question(problem: Problem) -> str:
        if problem.question is not None:
            return question_text(problem)
        if problem.messages is None and problem.prompt is not None:
            return problem.prompt
        return (problem.messages or [{}])[-1].get("content", "")

    def _request(self, problem: Problem, text: str, chat: bool) -> GenRequest:
        params = self._params()
        q = self._question(problem)
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

    def _step_request(self, problem: Problem, prefix: str, step: str, chat: bool) -> GenRequest:
        """The question about one step: the problem, the steps before it, the step itself."""
        q = self._question(problem)
        before = prefix.strip("\n") if prefix.strip() else "(none)"
        last = step.strip("\n")
        body = f"Question: {q}\nPrevious steps:\n{before}\nLast step:\n{last}\n{STEP_QUESTION}"
        if chat:
            return GenRequest(params=self._params(), messages=[{"role": "user", "content": body}], key="self-eval-step")
        return GenRequest(params=self._params(), prompt=body + "\nReply:", key="self-eval-step")

    def _logscore(self, c: Completion) -> float:
        if c.finish_reason == BUDGET:
            return UNSCORED
        return prob_to_logscore(self.p_yes(c.top_logprobs[0] if c.top_logprobs else None))

    async def _ask(self, meter: Meter | None, build) -> list[float]:
        if meter is None:
            raise TypeError(f"scorer {self.name!r} calls the model: pass the request's Meter, not None")
        meter = await self.where.meter(meter)
        await Scorer.check(self, meter)
        reqs = build(meter.chat)
        if not reqs:
            return []
        return [self._logscore(c) for c in await meter.generate(reqs)]

    async def score(self, problem, texts, meter):
        return await self._ask(meter, lambda chat: [self._request(problem, t, chat) for t in texts])

    async def score_steps(self, problem, prefixes, steps, meter):
        """``log P(Yes)/(P(Yes)+P(No))`` for "is ``steps[i]`` a correct next step after
        ``prefixes[i]``?"; one greedy one-token call per step, charged through the meter."""
        if len(prefixes) != len(steps):
            raise ValueError(f"score_steps needs one prefix per step, got {len(prefixes)} and {len(steps)}")
        return await self._ask(meter, lambda chat: [self._step_request(problem, p, s, chat)
                                                    for p, s in zip(prefixes, steps)])
