"""An LLM judge: pointwise scores, pairwise preferences and critiques, on a model of its choice.

The judge is a model asked to grade solutions (LLM-as-a-judge, Zheng et al. 2023, "Judging
LLM-as-a-Judge with MT-Bench and Chatbot Arena"). It runs on the policy model by default — then
it is the policy model's **self-critique** — or on a model chosen independently of the policy:
``judge:model=gemma3-270m`` (another embedded model) or ``judge:url=http://host:8000/v1``
(any OpenAI-compatible server; ``model=`` names the served model). Its calls and tokens are
charged to the request's budget and usage and reported apart in ``usage.by_model``
(:mod:`infscale.scorers.separate`).

* **Pointwise** (:meth:`JudgeScorer.score`): the judge sees the problem and one solution and is
  asked "Is the proposed solution correct? Answer Yes or No."; one greedy token with its top
  logprobs; the score is ``log P(Yes) / (P(Yes) + P(No))`` (``log 0.5`` without evidence). One
  call and one generated token per solution.
* **Pairwise** (:meth:`JudgeScorer.compare`): the judge sees two solutions, labelled A and B, and
  is asked which one is correct; ``P(A) / (P(A) + P(B))`` from one greedy token. Each pair is
  asked in both orders and the two preferences averaged, which cancels a constant position
  bias. Two calls per pair. The ``tournament`` strategy selects with it.
* **Critique** (:meth:`JudgeScorer.explain`): a solution passes when P(Yes) > ``threshold``;
  for one that fails, the judge writes what the first mistake is and how to fix it (greedy, at
  most ``critique_tokens`` tokens) — the feedback ``refine`` feeds back. One more call per
  failing solution.

The judge needs top log-probabilities from its generator: without them it fails with a one-line
ConfigError before any call.
"""

from __future__ import annotations

import math

from ..errors import ConfigError
from ..meter import BUDGET, Meter
from ..params import SamplingParams
from ..types import Completion, GenRequest, Problem
from .base import UNSCORED, Scorer, Verdict, prob_to_logscore
from .self_eval import SelfEvalScorer
from .separate import ScorerModel

__all__ = ["JudgeScorer", "p_first"]

POINTWISE = "Is the proposed solution correct? Answer Yes or No."
PAIRWISE = "Which solution is correct, A or B? Answer A or B."
CRITIQUE = ("The proposed solution contains a mistake. Name the first wrong step and say what it should be, "
            "in at most two sentences.")
GRADER = "You are a strict grader. You check solutions to problems step by step."


def p_first(top: dict[str, float] | None, first: str, second: str) -> float:
    """P(first) / (P(first) + P(second)) from one position's top logprobs (tokens compared
    case-insensitively, surrounding space ignored); 0.5 without evidence."""
    if not top:
        return 0.5
    a = b = 0.0
    for tok, lp in top.items():
        w = tok.strip().lower()
        if w == first.lower():
            a += math.exp(lp)
        elif w == second.lower():
            b += math.exp(lp)
    return 0.5 if a + b == 0.0 else a / (a + b)


class JudgeScorer(Scorer):
    """Outcome scorer, pairwise comparer and critic (see the module docs)."""

    name = "judge"
    kind = "outcome"
    requires = ("top_logprobs",)
    writes_feedback = True

    def __init__(self, *, model: str | None = None, url: str | None = None, threshold: float = 0.5,
                 critique_tokens: int = 128, top_logprobs: int = 20):
        if not 0.0 < threshold < 1.0:
            raise ConfigError("scorer judge threshold", f"got {threshold!r}", "a probability in (0, 1)")
        if critique_tokens < 1:
            raise ConfigError("scorer judge critique_tokens", f"got {critique_tokens!r}", "an integer >= 1")
        self.where = ScorerModel(self.name, model=model, url=url)
        self.threshold = threshold
        self.critique_tokens = critique_tokens
        self.top_logprobs = top_logprobs

    async def check(self, meter: Meter) -> None:
        await super().check(await self.where.meter(meter))

    async def _meter(self, meter: Meter | None) -> Meter:
        m = await self.where.meter(meter)
        await super().check(m)
        return m

    # ------------------------------------------------------------------ prompts
    def _verdict_params(self) -> SamplingParams:
        return SamplingParams(temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=self.top_logprobs)

    @staticmethod
    def _ask(body: str, question: str, params: SamplingParams, chat: bool, key: str, reply: str) -> GenRequest:
        if chat:
            return GenRequest(params=params, messages=[{"role": "system", "content": GRADER},
                                                       {"role": "user", "content": f"{body}\n\n{question}"}], key=key)
        return GenRequest(params=params, prompt=f"{GRADER}\n\n{body}\n\n{question}\n{reply}", key=key)

    def pointwise_request(self, problem: Problem, text: str, chat: bool) -> GenRequest:
        body = f"Problem:\n{SelfEvalScorer._question(problem)}\n\nProposed solution:\n{text.strip()}"
        return self._ask(body, POINTWISE, self._verdict_params(), chat, "judge", "Answer:")

    def pairwise_request(self, problem: Problem, a: str, b: str, chat: bool) -> GenRequest:
        body = (f"Problem:\n{SelfEvalScorer._question(problem)}\n\nSolution A:\n{a.strip()}\n\n"
                f"Solution B:\n{b.strip()}")
        return self._ask(body, PAIRWISE, self._verdict_params(), chat, "judge-pair", "Answer:")

    def critique_request(self, problem: Problem, text: str, chat: bool) -> GenRequest:
        params = SamplingParams(temperature=0.0, max_tokens=self.critique_tokens, logprobs=False,
                                stop=() if chat else ("\n\n",))
        body = f"Problem:\n{SelfEvalScorer._question(problem)}\n\nProposed solution:\n{text.strip()}"
        return self._ask(body, CRITIQUE, params, chat, "judge-critique", "Mistake:")

    @staticmethod
    def _logscore(c: Completion, first: str = "yes", second: str = "no") -> float:
        if c.finish_reason == BUDGET:
            return UNSCORED
        return prob_to_logscore(p_first(c.top_logprobs[0] if c.top_logprobs else None, first, second))

    # ------------------------------------------------------------------ scoring
    async def score(self, problem, texts, meter):
        if not texts:
            return []
        m = await self._meter(meter)
        outs = await m.generate([self.pointwise_request(problem, t, m.chat) for t in texts])
        return [self._logscore(c) for c in outs]

    async def explain(self, problem, texts, meter):
        scores = await self.score(problem, texts, meter)
        passed = [not math.isnan(s) and math.exp(s) > self.threshold for s in scores]
        wrong = [i for i, (s, ok) in enumerate(zip(scores, passed)) if not ok and not math.isnan(s)]
        critiques: dict[int, str] = {}
        if wrong:
            m = await self._meter(meter)
            outs = await m.generate([self.critique_request(problem, texts[i], m.chat) for i in wrong])
            critiques = {i: c.text.strip() for i, c in zip(wrong, outs) if c.finish_reason != BUDGET}
        out = []
        for i, (s, ok) in enumerate(zip(scores, passed)):
            feedback = ""
            if not ok and not math.isnan(s):
                feedback = critiques.get(i) or (f"A grader rates this solution's chance of being correct at "
                                                f"{math.exp(s):.2f}. Check every step again.")
            out.append(Verdict(s, ok, feedback))
        return out

    async def compare(self, problem: Problem, pairs: list[tuple[str, str]], meter: Meter | None) -> list[float]:
        """For each ``(a, b)``: the log-probability that the judge prefers ``a``, averaged over
        both presentation orders (NaN when the budget refused either call)."""
        if not pairs:
            return []
        m = await self._meter(meter)
        reqs = []
        for a, b in pairs:
            reqs += [self.pairwise_request(problem, a, b, m.chat), self.pairwise_request(problem, b, a, m.chat)]
        outs = await m.generate(reqs)
        result = []
        for k in range(len(pairs)):
            ab, ba = outs[2 * k], outs[2 * k + 1]
            if BUDGET in (ab.finish_reason, ba.finish_reason):
                result.append(UNSCORED)
                continue
            p_ab = p_first(ab.top_logprobs[0] if ab.top_logprobs else None, "a", "b")
            p_ba = p_first(ba.top_logprobs[0] if ba.top_logprobs else None, "b", "a")
            result.append(prob_to_logscore((p_ab + p_ba) / 2))
        return result
