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
temperature-mix    by          rule      none            samples over several temperatures (Wu et al.
                                                         2025), then any rule
best-of-n          score       best      self-eval       best-of-N with an outcome verifier
bom                count       bom       self-eval       Best-of-Majority (Di et al. 2025)
adaptive           count       vote      none            Adaptive-Consistency (Aggarwal et al. 2023)
=================  ==========  ========  =============  ==========================================

The answer distribution gives each class the normalised sum of its members' weights: 1 per
sample (``count``), ``exp(score)`` of an outcome scorer's log-score (``score``), the
geometric-mean token probability ``exp(logprob / tokens)`` (``prob``, the perplexity-based
weight of RPC), or a Borda count over the scorer's ranking (``borda``: the sample ranked ``r``
of ``N`` scored ones gets ``(N - r + 1) ** power``; unscored samples get nothing), the
weighted vote of Kang et al. 2025 for ``self-certainty`` (``power=0`` is majority voting over
the scored samples).

A generation-time scorer (``self-certainty``) is served from the samples themselves: the
requests ask for its per-token statistic and the scorer reads the completions
(:meth:`~infscale.scorers.base.Scorer.score_generated`); ``Result.info`` then says how it was
computed.

``weighted`` with ``by=prob`` is RPC, Reasoning-pruning Perplexity Consistency (Zhou et al.
2025, "Bridging Internal Probability and Self-Consistency for Effective and Efficient LLM
Reasoning"), in full unless ``prune=false``: (1) **reasoning pruning** fits a mixture of two
Weibull distributions to the samples' path probabilities ``p_i = exp(logprob / tokens)``
(maximum likelihood) and drops every sample that the low-probability component explains better
(posterior above 1/2) and whose ``p_i`` is below the mean; the pruned samples carry no weight
(nothing is pruned when fewer than 4 distinct probabilities exist or the fit would drop
everything); (2) **perplexity consistency** gives each answer the sum of ``p_i`` over its
*distinct* reasoning paths (a path sampled twice counts once). ``prune=false`` is the plain
perplexity-weighted vote (every sample, duplicates included). ``Result.info["pruned"]`` lists
the indices pruned.

``temperature-mix`` draws sample ``i`` at temperature ``temperatures[i mod m]`` (default
0.4, 0.7, 1.0) — different temperatures solve different problems (Wu et al. 2025, "On the Role
of Temperature Sampling in Test-Time Scaling") — and then applies any of the rules above:
``rule=vote|best`` with weights ``by=count|score|prob`` (``best`` and ``score`` use the
scorer, default ``self-eval``). Budget: n samples, as every strategy here. Samples without an extractable answer carry no weight; if no sample has one,
the strategy abstains (``answer is None``). Ties go to the class seen first, which for
exchangeable samples is a uniformly random tie-break. ``best-of-n`` breaks ties on the score —
frequent with pass/fail verifiers such as ``arith-check`` or ``code-tests`` — by the samples'
mean token log-probability (the model's confidence), then by order.

Budget: every sample is one call; scorer calls (one per sample for ``self-eval``) are charged
too. When the budget runs out the strategy chooses from the samples it has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..tasks import AnswerClasses, AnswerTask, group_answers
from ..meter import BUDGET
from ..types import Candidate, Completion, Result, Usage
from . import voting
from .base import BudgetExhausted, Context, ParamSpec, Requirement, Strategy

__all__ = ["SampleStrategy", "SAMPLE_STRATEGIES", "beta_leader_probability", "borda_log_weights", "select_from"]


@dataclass
class SampleState:
    target: int
    completions: dict[int, Completion] = field(default_factory=dict)
    stream: Any = None
    scores: list[float] | None = None
    sampling_done: bool = False
    finished: bool = False
    stopped_early: bool = False
    scorer_info: dict[str, Any] = field(default_factory=dict)


def beta_leader_probability(a: int, b: int) -> float:
    """P(the leader's share among the top two > 1/2) under a uniform Beta prior.

    With counts ``a`` (leader) and ``b`` (runner-up) the share is Beta(a+1, b+1), and
    P(share > 1/2) = P(Binomial(a+b+1, 1/2) <= a), the Beta survival function at 1/2 (scipy.stats).
    """
    from scipy import stats  # noqa: PLC0415  (imported on first use: `import infscale` stays light)

    return float(stats.beta.sf(0.5, a + 1, b + 1))


class SampleStrategy(Strategy):
    """The sample-level core; the named strategies are instances with different settings."""

    generation_scorers = True

    def __init__(self, name: str, summary: str, *, weight: str = "count", choose: str = "vote",
                 greedy: bool = False, adaptive: bool = False, default_scorer: str | None = None,
                 params: dict[str, ParamSpec] | None = None, doc: str = "", mixed_temperatures: bool = False):
        self.name = name
        self.summary = summary
        self.weight = weight
        self.choose = choose
        self.greedy = greedy
        self.adaptive = adaptive
        self.default_scorer = default_scorer
        self.params = params or {}
        self.mixed_temperatures = mixed_temperatures
        self.__doc__ = doc or summary

    def options(self, given: dict[str, Any], limits: Mapping[str, float] | None = None) -> dict[str, Any]:
        out = super().options(given, limits)
        if self.mixed_temperatures:
            out["temperatures"] = ",".join(f"{t:g}" for t in parse_temperatures(out["temperatures"]))
        return out

    # -- init / step --------------------------------------------------------------------
    def init(self, ctx: Context) -> SampleState:
        sc = ctx.scorer
        if sc is not None and sc.ordinal and self._mode(ctx.options) == "score" and self._rule(ctx.options) == "vote":
            raise ConfigError("param by", f"scorer {sc.name!r} gives ordinal scores, not log-probabilities, so "
                              "exp(score) is no weight", "by=borda (a Borda count over its ranking), or another scorer")
        return SampleState(target=1 if self.greedy else ctx.n)

    def _reads_generation(self, ctx: Context) -> bool:
        return ctx.scorer is not None and ctx.scorer.reads_generation and self.wants_scorer(ctx.options)

    def done(self, state: SampleState) -> bool:
        return state.finished

    async def step(self, state: SampleState, ctx: Context):
        if not state.sampling_done:
            return await self._take_sample(state, ctx)
        # all samples in: score them once, batch-first
        texts = [state.completions[i].text for i in sorted(state.completions)]
        if self._reads_generation(ctx):  # computed while sampling: no call
            state.scores = ctx.scorer.score_generated([state.completions[i] for i in sorted(state.completions)])
            state.scorer_info = ctx.scorer.result_info(ctx.meter)
        elif ctx.scorer is not None and texts and self.wants_scorer(ctx.options):
            try:
                state.scores = await ctx.scorer.score(ctx.problem, texts, ctx.meter)
            except BudgetExhausted:
                state.scores = None
        state.finished = True
        return state, {"event": "scored", "n": len(texts)}

    async def _take_sample(self, state: SampleState, ctx: Context):
        if state.stream is None:
            changes = {"temperature": 0.0} if self.greedy else {}
            temps = parse_temperatures(ctx.options["temperatures"]) if self.mixed_temperatures else None
            reqs = [ctx.sample_request(i, **({"temperature": temps[i % len(temps)]} if temps else changes))
                    for i in range(state.target)]
            if self._reads_generation(ctx):
                reqs = [replace(r, **ctx.scorer.request_changes()) for r in reqs]
            state.stream = ctx.stream(reqs).__aiter__()
        try:
            i, c = await state.stream.__anext__()
        except StopAsyncIteration:
            state.sampling_done = True
            return state, {"event": "sampling done", "samples": len(state.completions)}
        info = {"event": "sample", "index": i, "tokens": c.generated_tokens, "finish": c.finish_reason}
        if c.finish_reason == BUDGET:  # refused for budget: no sample
            return state, info
        state.completions[i] = c
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
            score = state.scores[j] if state.scores is not None else None
            if score is not None and math.isnan(score):  # the budget refused its scoring call
                score = None
            cands.append(Candidate(text=c.text, answer=ctx.task.extract(c.text), index=i, logprob=c.logprob,
                                   score=score, generated_tokens=c.generated_tokens,
                                   finish_reason=c.finish_reason, seed=c.seed))
        r = self._choose(cands, ctx.task, ctx.options, ctx.usage, n=state.target, stopped_early=state.stopped_early)
        r.info.update(state.scorer_info)
        return r

    def _choose(self, cands: list[Candidate], task: AnswerTask, options: dict[str, Any], usage: Usage, *,
                n: int, stopped_early: bool, answer_classes: AnswerClasses | None = None) -> Result:
        """The selection step over finished candidates: fold by the task's equivalence, weigh,
        choose by this strategy's rule (:mod:`infscale.strategies.voting`)."""
        logw, pruned = self._log_weights(cands, options), None
        if self._mode(options) == "prob" and options.get("prune", False):
            logw, pruned = rpc_log_weights(cands)
        classes = voting.fold(cands, logw, task, classes=answer_classes)
        answers = voting.choose(self._rule(options), classes, cands, k=options.get("k", 1),
                                alpha=options.get("alpha", 0.0))
        return Result(strategy=self.name, answer=answers[0] if answers else None, answers=answers,
                      distribution=voting.distribution(classes), candidates=cands, usage=usage, n=n,
                      stopped_early=stopped_early, info={} if pruned is None else {"pruned": pruned})

    def _mode(self, options: dict[str, Any]) -> str:
        return options.get("by", self.weight)

    def _rule(self, options: dict[str, Any]) -> str:
        return options.get("rule", self.choose)

    def wants_scorer(self, options: dict[str, Any]) -> bool:
        return self._mode(options) in ("score", "borda") or self._rule(options) in ("best", "bom")

    def requires(self, options: dict[str, Any]) -> list[Requirement]:
        if self._mode(options) == "prob":
            return [Requirement("logprobs", param="param by", who=f"strategy {self.name!r} with by=prob",
                                accepted="by=score, or a generator that reports logprobs")]
        return []

    def _log_weights(self, cands: list[Candidate], options: dict[str, Any]) -> list[float]:
        """Each candidate's log-weight in the vote: 0 (``count``), the outcome scorer's log-score
        (``score``; unscored: ``-inf``), or the mean token log-probability (``prob``)."""
        mode = self._mode(options)
        if mode == "prob":
            return [c.mean_logprob for c in cands]
        if mode == "borda":
            return borda_log_weights([c.score for c in cands], options.get("power", 0.5))
        if mode == "score":
            return [-math.inf if c.score is None else float(c.score) for c in cands]
        return [0.0] * len(cands)


def borda_log_weights(scores: list[float | None], power: float) -> list[float]:
    """Borda log-weights (Kang et al. 2025): the scored samples ranked by score, best first (ties
    by order); rank ``r`` of ``N`` gets the vote ``(N - r + 1) ** power``, i.e. log-weight
    ``power * log(N - r + 1)``; unscored samples (``None`` or NaN) get ``-inf``."""
    scored = [i for i, s in enumerate(scores) if s is not None and not math.isnan(s)]
    order = sorted(scored, key=lambda i: -scores[i])  # stable: ties keep sample order
    logw = [-math.inf] * len(scores)
    N = len(order)
    for r, i in enumerate(order, start=1):
        logw[i] = power * math.log(N - r + 1)
    return logw


def select_from(strategy: SampleStrategy, candidates: list[Candidate], task: AnswerTask,
                options: dict[str, Any] | None = None, *, usage: Usage | None = None,
                answer_classes: AnswerClasses | None = None) -> Result:
    """What ``strategy`` chooses from ``candidates`` (answers extracted, scores set): its selection
    step alone, without sampling. The evaluation harness uses it to apply several strategies to
    subsamples of one shared pool of samples. ``options`` are the strategy's settings;
    ``answer_classes`` the pool's answer classes, computed once by ``task`` (see
    :func:`infscale.strategies.voting.fold`)."""
    return strategy._choose(list(candidates), task, strategy.options(options or {}), usage or Usage(),
                            n=len(candidates), stopped_early=False, answer_classes=answer_classes)


_BOM = {
    "k": ParamSpec(int, 1, "how many answers to return (pass@k)", lo=1),
    "alpha": ParamSpec(float, 0.1, "keep answers whose frequency among the samples is at least alpha", lo=0.0, hi=1.0),
}
_ADAPTIVE = {
    "threshold": ParamSpec(float, 0.95, "stop once P(leading answer beats the runner-up) reaches this", lo=0.5, hi=1.0),
    "min_samples": ParamSpec(int, 3, "answers needed before the stopping rule is consulted", lo=1),
}
_POWER = ParamSpec(float, 0.5, "with by=borda: the sample ranked r of N votes (N - r + 1) ** power "
                   "(0: one vote each)", lo=0.0, hi=10.0)
_WEIGHTED = {
    "by": ParamSpec(str, "score", "weight samples by the outcome scorer ('score'), by geometric-mean token probability "
                    "('prob'), or by a Borda count over the scorer's ranking ('borda')",
                    choices=("score", "prob", "borda")),
    "power": _POWER,
    "prune": ParamSpec(bool, True, "with by=prob: RPC's reasoning pruning and perplexity consistency (false: plain "
                       "perplexity weights)"),
}
_TMIX = {
    "temperatures": ParamSpec(str, "0.4,0.7,1.0", "comma-separated temperatures; sample i uses the (i mod m)-th"),
    "rule": ParamSpec(str, "vote", "how to choose: the heaviest answer ('vote') or the best-scored sample ('best')",
                      choices=("vote", "best")),
    "by": ParamSpec(str, "count", "vote weights: 1 per sample, the scorer's probability, token probability, or a "
                    "Borda count over the scorer's ranking", choices=("count", "score", "prob", "borda")),
    "power": _POWER,
}


def parse_temperatures(raw: Any) -> tuple[float, ...]:
    """``"0.4,0.7,1.0"`` (or a sequence) -> temperatures, each a number in [0, 2]."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    try:
        temps = tuple(float(x) for x in items if str(x).strip())
    except (TypeError, ValueError):
        temps = ()
    if not temps or not all(0.0 <= t <= 2.0 for t in temps):
        raise ConfigError("param temperatures", f"got {raw!r}", "comma-separated numbers in [0, 2], e.g. 0.4,0.7,1.0")
    return temps


def _weibull_mixture_low_posterior(p: np.ndarray) -> np.ndarray | None:
    """Fit a two-component Weibull mixture to ``p`` by maximum likelihood; return each point's
    posterior probability of the component with the lower mean (``None`` if the fit fails)."""
    from scipy import optimize, special, stats  # noqa: PLC0415  (first use only)

    x = np.clip(p, 1e-12, None)
    lo, hi = x[x <= np.median(x)], x[x > np.median(x)]
    if len(hi) == 0:
        return None

    def unpack(th):
        w = special.expit(th[0])
        return w, np.exp(th[1]), np.exp(th[2]), np.exp(th[3]), np.exp(th[4])

    def nll(th):
        w, k1, l1, k2, l2 = unpack(th)
        a = np.log(w) + stats.weibull_min.logpdf(x, k1, scale=l1)
        b = np.log1p(-w) + stats.weibull_min.logpdf(x, k2, scale=l2)
        v = -np.logaddexp(a, b).sum()
        return v if np.isfinite(v) else 1e300

    th0 = np.array([0.0, np.log(5.0), np.log(lo.mean()), np.log(5.0), np.log(hi.mean())])
    res = optimize.minimize(nll, th0, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-9})
    w, k1, l1, k2, l2 = unpack(res.x)
    a = np.log(w) + stats.weibull_min.logpdf(x, k1, scale=l1)
    b = np.log1p(-w) + stats.weibull_min.logpdf(x, k2, scale=l2)
    post_a = np.exp(a - np.logaddexp(a, b))
    if not np.all(np.isfinite(post_a)):
        return None
    mean_a = l1 * special.gamma(1 + 1 / k1)
    mean_b = l2 * special.gamma(1 + 1 / k2)
    return post_a if mean_a <= mean_b else 1.0 - post_a


def rpc_log_weights(cands: list[Candidate]) -> tuple[list[float], list[int]]:
    """RPC's log-weights (see the module docs): ``log p_i`` for kept samples, ``-inf`` for
    pruned ones and for repeats of a path already counted; and the indices pruned."""
    logp = np.array([c.mean_logprob for c in cands], dtype=np.float64)
    p = np.exp(logp)
    prune = np.zeros(len(cands), dtype=bool)
    if len(np.unique(np.round(p, 12))) >= 4:
        low = _weibull_mixture_low_posterior(p)
        if low is not None:
            prune = (low > 0.5) & (p < p.mean())
            if prune.all():
                prune[:] = False
    seen: set[str] = set()
    logw = []
    for c, lp, cut in zip(cands, logp, prune):
        if cut or c.text in seen:
            logw.append(-math.inf)
        else:
            logw.append(float(lp))
        seen.add(c.text)
    return logw, [c.index for c, cut in zip(cands, prune) if cut]

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
        SampleStrategy("temperature-mix", "n samples spread over several temperatures, then a vote (or best-of-n)",
                       default_scorer="self-eval", params=_TMIX, mixed_temperatures=True),
    ]
}
