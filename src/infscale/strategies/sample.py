"""Sample-level strategies: the one-step case of search, as configurations of one core.

Every strategy here draws up to ``n`` independent samples of the whole solution (sample ``i``
seeded by ``(seed, problem id, i)``), folds their extracted answers into equivalence classes
and chooses. They differ only in four settings of :class:`SampleStrategy`:

=================  ==========  ========  =============  ==========================================
name               weight      choose    scorer          reference
=================  ==========  ========  =============  ==========================================
greedy             count       first     none            temperature 0, one sample
sample             count       first     none            repeated sampling (Brown et al. 2024)
majority           count       vote      none            self-consistency (Wang et al. 2023)
weighted           score/prob  vote      self-eval       weighted vote; RPC (Zhou et al. 2025)
best-of-n          score       best      self-eval       best-of-N with an outcome verifier
bom                count       bom       self-eval       Best-of-Majority (Di et al. 2025)
adaptive           count       vote      none            Adaptive-Consistency (Aggarwal et al. 2023)
=================  ==========  ========  =============  ==========================================

The answer distribution gives each class the normalised sum of its members' weights: 1 per
sample (``count``), ``exp(score)`` of an outcome scorer's log-score (``score``), or the
geometric-mean token probability ``exp(logprob / tokens)`` (``prob``, the perplexity-based
weight of RPC). Samples without an extractable answer carry no weight; if no sample has one,
the strategy abstains (``answer is None``). Ties go to the class seen first, which for
exchangeable samples is a uniformly random tie-break. ``best-of-n`` breaks ties on the score —
frequent with pass/fail verifiers such as ``arith-check`` or ``code-tests`` — by the samples'
mean token log-probability (the model's confidence), then by order.

Budget: every sample is one call; scorer calls (one per sample for ``self-eval``) are charged
too. When the budget runs out the strategy chooses from the samples it has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..answers import AnswerTask, group_answers
from ..types import AnswerMass, Candidate, Completion, Result, Usage
from .base import BudgetExhausted, Context, ParamSpec, Strategy

__all__ = ["SampleStrategy", "SAMPLE_STRATEGIES", "beta_leader_probability", "select_from"]


@dataclass
class SampleState:
    target: int
    completions: dict[int, Completion] = field(default_factory=dict)
    stream: Any = None
    scores: list[float] | None = None
    sampling_done: bool = False
    finished: bool = False
    stopped_early: bool = False


def beta_leader_probability(a: int, b: int) -> float:
    """P(the leader's share among the top two > 1/2) under a uniform Beta prior.

    With counts ``a`` (leader) and ``b`` (runner-up) the share is Beta(a+1, b+1), and
    P(share > 1/2) = P(Binomial(a+b+1, 1/2) <= a), computed exactly.
    """
    m = a + b + 1
    return sum(math.comb(m, j) for j in range(0, a + 1)) / 2.0**m


class SampleStrategy(Strategy):
    """The sample-level core; the named strategies are instances with different settings."""

    def __init__(self, name: str, summary: str, *, weight: str = "count", choose: str = "vote",
                 greedy: bool = False, adaptive: bool = False, default_scorer: str | None = None,
                 params: dict[str, ParamSpec] | None = None, doc: str = ""):
        self.name = name
        self.summary = summary
        self.weight = weight
        self.choose = choose
        self.greedy = greedy
        self.adaptive = adaptive
        self.default_scorer = default_scorer
        self.params = params or {}
        self.__doc__ = doc or summary

    # -- init / step --------------------------------------------------------------------
    def init(self, ctx: Context) -> SampleState:
        return SampleState(target=1 if self.greedy else ctx.n)

    def done(self, state: SampleState) -> bool:
        return state.finished

    async def step(self, state: SampleState, ctx: Context):
        if not state.sampling_done:
            return await self._take_sample(state, ctx)
        # all samples in: score them once, batch-first
        texts = [state.completions[i].text for i in sorted(state.completions)]
        if ctx.scorer is not None and texts and self.wants_scorer(ctx.options):
            try:
                state.scores = await ctx.scorer.score(ctx.problem, texts, ctx)
            except BudgetExhausted:
                state.scores = None
        state.finished = True
        return state, {"event": "scored", "n": len(texts)}

    async def _take_sample(self, state: SampleState, ctx: Context):
        if state.stream is None:
            changes = {"temperature": 0.0} if self.greedy else {}
            reqs = [ctx.sample_request(i, **changes) for i in range(state.target)]
            state.stream = ctx.stream(reqs).__aiter__()
        try:
            i, c = await state.stream.__anext__()
        except StopAsyncIteration:
            state.sampling_done = True
            return state, {"event": "sampling done", "samples": len(state.completions)}
        state.completions[i] = c
        info = {"event": "sample", "index": i, "tokens": c.generated_tokens, "finish": c.finish_reason}
        if self.adaptive and self._settled(state, ctx):
            state.stopped_early = True
            state.sampling_done = True
            await self.close(state, ctx)
            info["stop"] = "posterior settled"
        return state, info

    def _settled(self, state: SampleState, ctx: Context) -> bool:
        opts = ctx.options
        answers = [ctx.task.extract(c.text) for c in state.completions.values()]
        known = [a for a in answers if a is not None]
        if len(known) < opts["min_samples"]:
            return False
        ids = group_answers(ctx.task, known)
        counts = sorted((ids.count(k) for k in set(ids)), reverse=True) + [0]
        return beta_leader_probability(counts[0], counts[1]) >= opts["threshold"]

    async def close(self, state: SampleState, ctx: Context) -> None:
        if state.stream is not None:
            await state.stream.aclose()
            state.stream = None

    # -- select -------------------------------------------------------------------------
    def select(self, state: SampleState, ctx: Context) -> Result:
        order = sorted(state.completions)
        cands = []
        for j, i in enumerate(order):
            c = state.completions[i]
            score = state.scores[j] if state.scores is not None and j < len(state.scores) else None
            cands.append(Candidate(text=c.text, answer=ctx.task.extract(c.text), index=i, logprob=c.logprob,
                                   score=score, generated_tokens=c.generated_tokens,
                                   finish_reason=c.finish_reason, seed=c.seed))
        return self._choose(cands, ctx, n=state.target, stopped_early=state.stopped_early)

    def _choose(self, cands: list[Candidate], ctx, *, n: int, stopped_early: bool) -> Result:
        """The selection step over finished candidates; ``ctx`` needs ``task``, ``options``, ``usage``."""
        dist, members = self._distribution(cands, ctx)
        answers = [m.answer for m in dist]
        answer = answers[0] if answers else None
        if self.choose == "first":
            answer = next((c.answer for c in cands if c.answer is not None), None)
            if answer is not None:
                answers = [answer] + [a for a in answers if a != answer]
        elif self.choose == "best":
            scored = [c for c in cands if c.answer is not None and c.score is not None]
            if scored:
                # ties on the score (common with pass/fail verifiers) go to the sample the model
                # was most confident in, then to the first of equals (max is stable)
                best = max(scored, key=lambda c: (c.score, c.mean_logprob))
                answer = best.answer
                answers = [answer] + [a for a in answers if a != answer]
        elif self.choose == "bom":
            answers = self._best_of_majority(cands, dist, members, ctx)
            answer = answers[0] if answers else None
        return Result(strategy=self.name, answer=answer, answers=answers, distribution=dist,
                      candidates=cands, usage=ctx.usage, n=n, stopped_early=stopped_early)

    def _mode(self, options: dict[str, Any]) -> str:
        return options.get("by", self.weight)

    def wants_scorer(self, options: dict[str, Any]) -> bool:
        return self._mode(options) == "score" or self.choose in ("best", "bom")

    def _weights(self, cands: list[Candidate], ctx: Context) -> list[float]:
        mode = self._mode(ctx.options)
        if mode == "prob":
            return [math.exp(c.mean_logprob) for c in cands]
        if mode == "score":
            finite = [c.score for c in cands if c.score is not None and c.score > -math.inf]
            if finite:
                top = max(finite)
                return [0.0 if c.score is None or c.score == -math.inf else math.exp(c.score - top) for c in cands]
        return [1.0] * len(cands)

    def _distribution(self, cands: list[Candidate], ctx: Context) -> tuple[list[AnswerMass], list[list[Candidate]]]:
        """Answer classes with normalised weights, heaviest first (ties: first seen first)."""
        with_answer = [c for c in cands if c.answer is not None]
        if not with_answer:
            return [], []
        return _fold(with_answer, self._weights(with_answer, ctx), ctx.task)

    def _best_of_majority(self, cands, dist, members, ctx: Context) -> list[str]:
        """Keep classes whose frequency is at least ``alpha`` of the samples, rank them by their
        best member's score, return the top ``k``."""
        k, alpha = ctx.options["k"], ctx.options["alpha"]
        n = max(1, len(cands))
        kept = [(m, grp) for m, grp in zip(dist, members) if m.count / n >= alpha] or list(zip(dist, members))

        def best(grp):
            s = [c.score for c in grp if c.score is not None]
            return max(s) if s else -math.inf

        ranked = sorted(kept, key=lambda mg: (-best(mg[1]), -mg[0].count))
        return [m.answer for m, _ in ranked[:k]]


@dataclass
class _SelectView:
    """What the selection step reads from a context."""

    task: AnswerTask
    options: dict[str, Any]
    usage: Usage


def select_from(strategy: SampleStrategy, candidates: list[Candidate], task: AnswerTask,
                options: dict[str, Any] | None = None, *, usage: Usage | None = None) -> Result:
    """What ``strategy`` chooses from ``candidates`` (answers extracted, scores set): its selection
    step alone, without sampling. The evaluation harness uses it to apply several strategies to
    subsamples of one shared pool of samples. ``options`` are the strategy's settings."""
    view = _SelectView(task=task, options=strategy.options(options or {}), usage=usage or Usage())
    return strategy._choose(list(candidates), view, n=len(candidates), stopped_early=False)


def _fold(cands: list[Candidate], weights: list[float], task) -> tuple[list[AnswerMass], list[list[Candidate]]]:
    ids = group_answers(task, [c.answer for c in cands])
    order: list[int] = []
    mass: dict[int, float] = {}
    groups: dict[int, list[Candidate]] = {}
    for c, w, k in zip(cands, weights, ids):
        if k not in groups:
            order.append(k)
            groups[k] = []
            mass[k] = 0.0
        groups[k].append(c)
        mass[k] += w
    total = sum(mass.values())
    if total <= 0.0:  # every weight zero: fall back to counts
        mass = {k: float(len(groups[k])) for k in order}
        total = float(sum(mass.values()))
    ranked = sorted(order, key=lambda k: (-mass[k], order.index(k)))
    dist = [AnswerMass(answer=groups[k][0].answer, weight=mass[k] / total, count=len(groups[k])) for k in ranked]
    return dist, [groups[k] for k in ranked]


_BOM = {
    "k": ParamSpec(int, 1, "how many answers to return (pass@k)", lo=1),
    "alpha": ParamSpec(float, 0.1, "keep answers whose frequency among the samples is at least alpha", lo=0.0, hi=1.0),
}
_ADAPTIVE = {
    "threshold": ParamSpec(float, 0.95, "stop once P(leading answer beats the runner-up) reaches this", lo=0.5, hi=1.0),
    "min_samples": ParamSpec(int, 3, "answers needed before the stopping rule is consulted", lo=1),
}
_WEIGHTED = {
    "by": ParamSpec(str, "score", "weight samples by the outcome scorer ('score') or by geometric-mean token probability ('prob')",
                    choices=("score", "prob")),
}

SAMPLE_STRATEGIES: dict[str, SampleStrategy] = {
    s.name: s
    for s in [
        SampleStrategy("greedy", "one greedy (temperature 0) sample; --n is ignored", greedy=True, choose="first"),
        SampleStrategy("sample", "n independent samples; answer of the first sample, all distinct answers listed",
                       choose="first"),
        SampleStrategy("majority", "self-consistency: the most frequent answer of n samples"),
        SampleStrategy("weighted", "weighted vote: classes weighted by scorer probability (or token probability)",
                       weight="score", default_scorer="self-eval", params=_WEIGHTED),
        SampleStrategy("best-of-n", "the answer of the sample the outcome scorer rates highest",
                       weight="score", choose="best", default_scorer="self-eval"),
        SampleStrategy("bom", "Best-of-Majority: frequent answers (>= alpha), top-k by scorer",
                       choose="bom", default_scorer="self-eval", params=_BOM),
        SampleStrategy("adaptive", "self-consistency that stops once a Beta posterior settles the leader",
                       adaptive=True, params=_ADAPTIVE),
    ]
}
