"""Hint marginalization: re-ask with earlier rounds' answers as hints; the answer distribution
is the marginal over the hints.

Pal et al. (2024), "Hint Marginalization for Improved Reasoning in Large Language Models",
which builds on progressive-hint prompting (Zheng et al. 2023, "Progressive-Hint Prompting
Improves Reasoning in Large Language Models"). Round 1 draws ``m`` plain samples; their answers
form the distribution ``p_1``. In round ``r > 1`` each of ``m`` samples gets one hint ``h``
drawn from ``p_{r-1}`` — the question followed by "(Hint: the answer is near to h.)" — so its
answers are draws from ``p_r(y) = sum_h p(y | question, hint h) p_{r-1}(h)``, the model's
answer marginalised over the previous round's distribution. The result's distribution is the
last round's ``p_R``; a sample without an answer carries no weight (if a whole round has none,
the round before stands). Every round's answers are in ``result.info["rounds"]``.

Budget: ``--n`` buys about n samples: ``rounds`` rounds of ``m = max(1, n // rounds)`` samples.
No scorer. When the budget runs out the last complete round decides (an incomplete one adds
its answers to it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..meter import BUDGET
from ..rng import derive_seed, make_rng
from ..tasks.prompts import build_request
from ..types import Candidate, Result
from . import voting
from .base import Context, ParamSpec, Strategy
from .fusion import with_context

__all__ = ["HintMarginalization", "HINT"]

HINT = "(Hint: the answer is near to {hint}.)"


@dataclass
class HintState:
    rounds: list[list[Candidate]] = field(default_factory=list)
    next_index: int = 0
    finished: bool = False


class HintMarginalization(Strategy):
    """Hint marginalization (see the module docs)."""

    name = "hint-marginalization"
    summary = "re-ask with hints drawn from the previous round's answers; the last round's distribution"
    default_scorer = None
    cost = "rounds x (n // rounds) samples: about n samples' tokens"
    params = {"rounds": ParamSpec(int, 3, "rounds of sampling (the first without hints)", lo=1, hi=16)}

    def init(self, ctx: Context) -> HintState:
        return HintState()

    def done(self, st: HintState) -> bool:
        return st.finished

    def _per_round(self, ctx: Context) -> int:
        return max(1, ctx.n // ctx.options["rounds"])

    async def step(self, st: HintState, ctx: Context):
        r = len(st.rounds)
        m = self._per_round(ctx)
        prev = self._answered(st)
        dist = voting.distribution(voting.fold(prev[-1], [0.0] * len(prev[-1]), ctx.task)) if prev else []
        if r == 0 or not dist:  # the first round, or no answer yet to hint at: plain samples
            hints: list[str | None] = [None] * m
            reqs = [ctx.sample_request(st.next_index + i) for i in range(m)]
        else:
            rng = make_rng(ctx.seed, ctx.problem.id, "hints", r)
            p = np.array([d.weight for d in dist], dtype=np.float64)
            hints = [dist[int(k)].answer for k in rng.choice(len(dist), size=m, p=p / p.sum())]
            reqs = []
            for i, h in enumerate(hints):
                seed = derive_seed(ctx.seed, ctx.problem.id, "hint", r, i)
                reqs.append(build_request(with_context(ctx.problem, HINT.format(hint=h)), ctx.params, chat=ctx.chat,
                                          seed=seed, key=f"{ctx.problem.id}/hint{r}.{i}"))
        outs = await ctx.generate_settled(reqs)
        got = []
        for c in outs:
            if c.finish_reason in (BUDGET, "error"):
                continue
            got.append(Candidate(text=c.text, answer=ctx.task.extract(c.text), index=st.next_index, logprob=c.logprob,
                                 generated_tokens=c.generated_tokens, finish_reason=c.finish_reason, seed=c.seed))
            st.next_index += 1
        st.rounds.append(got)
        if len(st.rounds) >= ctx.options["rounds"] or not got:
            st.finished = True
        info: dict[str, Any] = {"event": "round", "round": r + 1, "hints": hints,
                                "answers": [c.answer for c in got]}
        return st, info

    @staticmethod
    def _answered(st: HintState) -> list[list[Candidate]]:
        """The rounds that have at least one answer, in order."""
        return [cands for cands in st.rounds if any(c.answer is not None for c in cands)]

    def select(self, st: HintState, ctx: Context) -> Result:
        answered = self._answered(st)
        if not answered:
            cands = st.rounds[-1] if st.rounds else []
        else:
            cands = answered[-1]
            if len(cands) < self._per_round(ctx) and len(answered) > 1:
                cands = answered[-2] + cands  # an incomplete last round (the budget) joins the one before
        classes = voting.fold(cands, [0.0] * len(cands), ctx.task)
        answers = voting.choose("vote", classes, cands)
        r = Result(strategy=self.name, answer=answers[0] if answers else None, answers=answers,
                   distribution=voting.distribution(classes), candidates=list(cands), usage=ctx.usage, n=ctx.n)
        r.info["rounds"] = [[c.answer for c in cands_r] for cands_r in st.rounds]
        return r
