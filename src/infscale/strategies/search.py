"""Step-level search: one core, many configurations.

Search is treated as approximate inference over reasoning paths. The model is the prior
``p(path)`` over steps (a step is a line: it ends at the token that completes the delimiter,
default ``"\\n"``, or at the end of the answer); a process scorer gives each new step a log-score
``s_t``; the tempered potential ``exp(s_t / T)`` plays the likelihood. The target is

    pi(path)  ∝  p(path) * prod_t exp(s_t / T)

Every strategy here is one :class:`SearchConfig` of the same loop (:class:`SearchStrategy`),
one runner step per depth:

1. **select** which frontier nodes to extend, and how many children each (resampling for
   particle filters, top-k for beams, softmax allocation for REBASE, a priority queue for
   best-first search);
2. **extend** them by one step (embedded engine: fork the parent's KV sequence, no re-reading;
   other generators: continue the assistant turn from the text so far);
3. **weigh** the children with the process scorer (log-weight update, or a ranking score).

Finished trajectories are kept with their weights; one that hits its token cap or fails never
stops the search; an empty step is merged into the next and not counted; ``max_steps`` is
honoured exactly (trajectories still open then are finished as they are). Every node records
its parent, so the tree can be rebuilt from the trace.

Budget: each extension of one node is one call; scorer calls are charged too. When the budget
runs out the strategy answers from what it has (finished trajectories first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..rng import derive_seed, make_rng
from ..tasks.prompts import build_request
from ..types import Candidate, GenRequest, Result
from . import resampling as rs
from .base import BudgetExhausted, Context, ParamSpec, Strategy
from . import voting

__all__ = ["SearchConfig", "SearchStrategy", "Node", "SEARCH_STRATEGIES", "aggregate"]



def aggregate(scores: list[float], how: str) -> float:
    """Step scores → one trajectory score: ``last``, ``min``, ``product`` (sum of logs), ``mean``."""
    if not scores:
        return 0.0
    if how == "last":
        return scores[-1]
    if how == "min":
        return min(scores)
    if how == "product":
        return float(sum(scores))
    return float(sum(scores) / len(scores))


@dataclass
class Node:
    """A partial or finished trajectory (a particle, a beam, a tree node)."""

    id: int
    parent: int | None
    text: str = ""
    steps: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    logw: float = 0.0
    finished: bool = False
    reason: str = ""
    tokens: int = 0
    logprob: float = 0.0
    handle: Any = None
    group: int = 0
    empty_merges: int = 0
    step_logprob: float = 0.0  # mean token log-prob of the latest step

    def score(self, how: str) -> float:
        return aggregate(self.scores, how)


@dataclass(frozen=True)
class SearchConfig:
    """What distinguishes one step-level strategy from another.

    expand: ``all`` (every live node, ``children`` each), ``rebase`` (n minus finished children
        shared out by softmax(score/T)), ``best`` (the best ``width`` frontier nodes).
    weight: ``potential`` (log-weight += step score / T, importance weights) or ``rank`` (the
        aggregated step score ranks nodes; log-weights stay 0).
    select: after weighing, which children stay: ``all``, ``top`` (top-n by score), ``group-top``
        (best child per subtree, DVTS), ``sample`` (n drawn without replacement by
        exp(score/tau), Gumbel top-k).
    resample: resampler for ``potential`` weighting (``none`` for importance sampling) and
        whether it is gated by the effective sample size (``ess_threshold``, a fraction of n).
    final: ``weighted-vote`` (answer classes by normalised weight), ``vote`` or ``best``.
    """

    expand: str = "all"
    children: int = 1
    weight: str = "potential"
    select: str = "all"
    resample: str = "multinomial"
    ess_threshold: float | None = None
    final: str = "weighted-vote"
    stop_at_first: bool = False
    reference: bool = False  # particle Gibbs: keep a reference trajectory across iterations


@dataclass
class SearchState:
    frontier: list[Node]
    done: list[Node] = field(default_factory=list)
    depth: int = 0
    next_id: int = 0
    log_z: float = 0.0
    iteration: int = 0
    reference: list[str] | None = None  # particle Gibbs: the retained path's steps
    reference_scores: list[float] | None = None
    finished: bool = False
    stopped_early: bool = False
    tau: float = 1.0
    history: list[Node] = field(default_factory=list)  # earlier iterations' populations (PG)


_COMMON = {
    "max_steps": ParamSpec(int, 12, "maximum number of (non-empty) steps per trajectory", lo=1),
    "step_tokens": ParamSpec(int, 64, "token cap for one step", lo=1),
    "temperature": ParamSpec(float, 1.0, "T: weights are exp(score / T)", lo=1e-6),
    "aggregate": ParamSpec(str, "last", "step scores → trajectory score for ranking and reports",
                           choices=("last", "min", "product", "mean")),
    "delimiter": ParamSpec(str, "\n", "text that ends a step"),
}


class SearchStrategy(Strategy):
    """The step-level search core, configured by a :class:`SearchConfig`."""

    default_scorer = "arith-check"

    def __init__(self, name: str, summary: str, config: SearchConfig, params: dict[str, ParamSpec] | None = None,
                 doc: str = ""):
        self.name = name
        self.summary = summary
        self.config = config
        self.params = {**_COMMON, **(params or {})}
        self.__doc__ = doc or summary

    def wants_scorer(self, options):
        return True

    # ------------------------------------------------------------------ init
    def init(self, ctx: Context) -> SearchState:
        if ctx.scorer is not None and not (getattr(ctx.scorer, "process_capable", False) or ctx.scorer.kind == "process"):
            raise ConfigError("scorer", f"{ctx.scorer.name!r} scores whole solutions only",
                              "a process scorer: arith-check, self-eval, prm-http")
        st = SearchState(frontier=[], tau=float(ctx.options.get("tau", 1.0)))
        self._new_iteration(st, ctx)
        return st

    def _roots(self, st: SearchState, ctx: Context) -> list[Node]:
        cfg = self.config
        if cfg.expand == "best":
            count = 1
        elif cfg.select == "group-top":
            count = max(1, ctx.n // cfg_width(ctx, cfg))
        elif cfg.expand == "rebase" or cfg.select in ("top", "sample"):
            count = 1  # one root: the prompt, whose first expansion fills the beams
        else:
            count = ctx.n
        roots = []
        for g in range(count):
            roots.append(Node(id=st.next_id, parent=None, group=g))
            st.next_id += 1
        return roots

    def _new_iteration(self, st: SearchState, ctx: Context) -> None:
        st.frontier = self._roots(st, ctx)
        st.depth = 0
        st.log_z = 0.0
        if self.config.reference and st.reference is not None:
            # conditional SMC: the last particle follows the retained reference path
            st.frontier[-1].group = -1

    def done(self, st: SearchState) -> bool:
        return st.finished

    # ------------------------------------------------------------------ step
    async def step(self, st: SearchState, ctx: Context):
        cfg, opts = self.config, ctx.options
        rng = make_rng(ctx.seed, ctx.problem.id, "search", st.iteration, st.depth)
        info: dict[str, Any] = {"event": "step", "iteration": st.iteration, "depth": st.depth + 1}
        if st.depth == 0:
            info["roots"] = [n.id for n in st.frontier]

        # 1. select: which nodes to extend, how many children each
        plan = self._plan(st, ctx, rng, info)
        # 2. extend by one step (forking KV sequences where the generator can)
        children = await self._extend(st, ctx, plan, rng)
        # 3. weigh the new steps with the process scorer
        await self._weigh(ctx, children)
        st.depth += 1
        self._settle(st, ctx, children, rng, info)
        info["nodes"] = [_node_info(c, opts["aggregate"]) for c in children]

        if st.finished and cfg.reference and st.iteration + 1 < opts["iterations"]:
            self._next_gibbs_iteration(st, ctx, rng, info)
        return st, info

    def _plan(self, st: SearchState, ctx: Context, rng: np.random.Generator, info: dict) -> list[tuple[Node, int]]:
        cfg, opts = self.config, ctx.options
        live = [n for n in st.frontier if not n.finished]
        if cfg.expand == "rebase" and st.depth > 0:
            budget = max(0, ctx.n - len(st.done))
            counts = rs.rebase_allocate([n.score(opts["aggregate"]) for n in live], budget, opts["temperature"])
            info["allocation"] = [int(c) for c in counts]
            for n, c in zip(live, counts):
                if c == 0:  # pruned
                    self._release(ctx, n)
            return [(n, int(c)) for n, c in zip(live, counts) if c > 0]
        if cfg.expand == "rebase":
            return [(live[0], ctx.n)]
        if cfg.expand == "best":
            width = opts.get("width", 1)
            order = sorted(live, key=lambda n: -n.score(opts["aggregate"]) if n.scores else 0.0)
            chosen = order[:width]
            st.frontier = [n for n in st.frontier if n not in chosen]
            info["expanded"] = [n.id for n in chosen]
            return [(n, ctx.n) for n in chosen]
        k = cfg_width(ctx, cfg) if cfg.select in ("top", "group-top", "sample") else cfg.children
        if st.depth == 0 and cfg.select in ("top", "sample"):
            return [(live[0], ctx.n * k)]  # n beams' worth of first steps from the one root
        return [(n, k) for n in live]

    async def _extend(self, st: SearchState, ctx: Context, plan: list[tuple[Node, int]], rng) -> list[Node]:
        """One step for every planned child; empty steps are merged into the next."""
        opts = ctx.options
        children: list[Node] = []
        for parent, k in plan:
            for _ in range(k):
                c = Node(id=st.next_id, parent=parent.id, text=parent.text, steps=list(parent.steps),
                         scores=list(parent.scores), logw=parent.logw, tokens=parent.tokens,
                         logprob=parent.logprob, group=parent.group)
                c.handle = parent  # marker: continue from the parent (replaced by a real handle)
                st.next_id += 1
                children.append(c)
        pending = [c for c in children]
        for _ in range(4):  # the step itself, plus up to three merged empty steps
            if not pending:
                break
            ref = [c for c in pending if c.group == -1 and st.reference is not None and len(c.steps) < len(st.reference)]
            gen = [c for c in pending if c not in ref]
            for c in ref:  # particle Gibbs: the reference path is replayed, not sampled
                step = st.reference[len(c.steps)]
                self._release(ctx, c)
                c.handle = None
                c.text += step
                c.steps.append(step)
                if len(c.steps) == len(st.reference):
                    c.finished, c.reason = True, "reference"
            if gen:
                reqs = [self._request(ctx, c, rng) for c in gen]
                outs = await ctx.generate_settled(reqs)
                for c, out in zip(gen, outs):
                    self._apply(ctx, c, out)
            pending = [c for c in gen if c.reason == "empty"]
            for c in pending:
                c.reason = ""
        for c in pending:  # still empty after merging: end it as it is
            c.finished, c.reason = True, "empty"
            self._release(ctx, c)
        # the parents' sequences are no longer needed once every child has its own
        for parent, _ in plan:
            self._release(ctx, parent)
        return children

    def _request(self, ctx: Context, c: Node, rng) -> GenRequest:
        opts = ctx.options
        left = max(1, ctx.params.max_tokens - c.tokens)
        stop = tuple(dict.fromkeys((opts["delimiter"],) + ctx.params.stop))
        params = ctx.params.with_(max_tokens=min(opts["step_tokens"], left), stop=stop)
        seed = derive_seed(ctx.seed, ctx.problem.id, "node", c.id, len(c.steps), c.empty_merges)
        source = c.handle
        if isinstance(source, Node):  # continue from the parent node
            source = source.handle if source.handle is not None else None
            text = c.text
        else:
            text = c.text
        can_fork = ctx.generator.capabilities.kv_fork
        if can_fork and source is not None and not getattr(source, "freed", False):
            return GenRequest(params=params, parent=source, keep=True, seed=seed, key=f"{ctx.problem.id}/n{c.id}")
        base = build_request(ctx.problem, params, chat=ctx.chat, seed=seed, key=f"{ctx.problem.id}/n{c.id}")
        return GenRequest(params=base.params, messages=base.messages, prompt=base.prompt, prefix=text, seed=seed,
                          key=base.key, keep=can_fork)

    def _apply(self, ctx: Context, c: Node, out) -> None:
        """Fold one completion into a child node."""
        opts = ctx.options
        old = c.handle
        c.handle = out.handle
        if old is not None and not isinstance(old, Node) and old is not out.handle:
            # a merged empty step: the node continued from its own previous sequence, which the
            # new one has copied; nothing else holds it
            ctx.generator.free(old)
        c.tokens += out.generated_tokens
        c.logprob += out.logprob
        c.step_logprob = out.logprob / max(1, out.generated_tokens)
        if out.finish_reason == "error":
            c.finished, c.reason, c.logw = True, "error", -math.inf
            self._release(ctx, c)
            return
        stop = out.stop
        reports = ctx.generator.capabilities.reports_stop
        if stop is None and out.finish_reason == "stop" and not reports and not ctx.task.ends_answer(out.text):
            # the server does not say which stop ended the text: assume the step delimiter
            # (only an answer line then ends a trajectory; max_steps bounds the rest)
            stop = opts["delimiter"]
        step = out.text + (stop or "")
        eos = out.finish_reason == "stop" and stop is None
        if not step.strip() and not eos and out.finish_reason != "length" and c.tokens < ctx.params.max_tokens:
            c.text += step
            c.empty_merges += 1
            c.reason = "empty"  # merged into the next step
            return
        c.text += step
        c.steps.append(step)
        gives_answer = ctx.task.ends_answer(step)
        if eos or gives_answer:
            c.finished, c.reason = True, "answer" if gives_answer else "eos"
        elif c.tokens >= ctx.params.max_tokens:
            c.finished, c.reason = True, "length"
        elif len(c.steps) >= opts["max_steps"]:
            c.finished, c.reason = True, "max_steps"
        if c.finished:
            self._release(ctx, c)

    async def _weigh(self, ctx: Context, children: list[Node]) -> None:
        todo = [c for c in children if c.reason not in ("error", "empty") and c.steps and len(c.scores) < len(c.steps)]
        if not todo or ctx.scorer is None:
            for c in todo:
                c.scores.append(0.0)
            return
        prefixes = ["".join(c.steps[:-1]) for c in todo]
        steps = [c.steps[-1] for c in todo]
        scores = await ctx.scorer.score_steps(ctx.problem, prefixes, steps, ctx)
        temp, mix = ctx.options["temperature"], ctx.options.get("mix")
        for c, s in zip(todo, scores):
            s = float(s)
            if mix is not None:  # self-evaluation guided beams: mix in the step's token log-prob
                s = mix * c.step_logprob + (1.0 - mix) * s
            c.scores.append(s)
            if self.config.weight == "potential" and not math.isnan(s):
                c.logw += s / temp  # the step's potential exp(s_t / T)

    def _settle(self, st: SearchState, ctx: Context, children: list[Node], rng, info: dict) -> None:
        """Which children stay in the frontier; resampling; the stopping rule."""
        cfg, opts = self.config, ctx.options
        how = opts["aggregate"]
        if cfg.weight == "potential":
            # the population: every particle, finished ones included (their weight is kept)
            population = [n for n in st.frontier if n.finished] + children
            st.frontier = population
            live = [n for n in population if not n.finished]
            if not live or st.depth >= opts["max_steps"]:
                self._finish_all(st, ctx)
                return
            self._resample(st, ctx, rng, info)
            return
        # ranking-based search: finished and open children compete for the same places
        pool = _dedupe([c for c in children if c.reason != "error"])
        room = max(0, ctx.n - len(st.done))
        if cfg.select == "top":
            kept = sorted(pool, key=lambda n: -n.score(how))[:room]
        elif cfg.select == "group-top":
            done_groups = {c.group for c in st.done}
            kept = []
            for g in sorted({c.group for c in pool} - done_groups):
                kept.append(max((c for c in pool if c.group == g), key=lambda n: n.score(how)))
        elif cfg.select == "sample":
            keys = np.array([n.score(how) for n in pool]) / max(st.tau, 1e-6) + rng.gumbel(size=len(pool))
            kept = [pool[i] for i in np.argsort(-keys, kind="stable")[:room]]
            st.tau *= float(opts.get("tau_decay", 1.0))
        else:  # all: REBASE allocates by itself, best-first keeps a frontier
            kept = pool
        for c in children:
            if c not in kept:
                self._release(ctx, c)
        st.done.extend(c for c in kept if c.finished)
        kept = [c for c in kept if not c.finished]
        info["kept"] = [c.id for c in kept]
        if cfg.expand == "best":
            kept = st.frontier + kept
            limit = opts.get("max_frontier", 32)
            kept.sort(key=lambda n: -n.score(how))
            for c in kept[limit:]:
                self._release(ctx, c)
            kept = kept[:limit]
        st.frontier = kept
        limit = opts["max_expansions"] if cfg.expand == "best" else opts["max_steps"]
        if cfg.stop_at_first and st.done:
            st.stopped_early = True
            self._finish_all(st, ctx)
        elif not st.frontier or st.depth >= limit or (len(st.done) >= ctx.n and cfg.expand != "best"):
            self._finish_all(st, ctx)

    def _resample(self, st: SearchState, ctx: Context, rng, info: dict) -> None:
        """Resample the population (gated by ESS if configured) and update log Z."""
        cfg = self.config
        pop = st.frontier
        logw = np.array([n.logw for n in pop])
        e = rs.ess(logw)
        info["ess"] = e
        if cfg.resample == "none":
            return
        if cfg.ess_threshold is not None and e >= cfg.ess_threshold * len(pop):
            return
        n = len(pop)
        st.log_z += _log_mean_weight(logw)
        resampler = rs.RESAMPLERS[ctx.options.get("resampler", cfg.resample)]
        keep_ref = cfg.reference and st.reference is not None
        ref_idx = next((i for i, p in enumerate(pop) if p.group == -1), None) if keep_ref else None
        m = n - 1 if ref_idx is not None else n
        idx = list(resampler(logw, m, rng))
        if ref_idx is not None:
            idx.append(ref_idx)
        info["ancestors"] = [pop[i].id for i in idx]
        counts = np.bincount(idx, minlength=n)
        new, copies = [], []
        for i, p in enumerate(pop):
            for j in range(counts[i]):
                q = p if j == 0 else self._copy(st, p, group=p.group if p.group != -1 else 0)
                if q is not p:
                    copies.append([q.id, p.id])
                q.logw = 0.0
                new.append(q)
            if counts[i] == 0:
                self._release(ctx, p)
        st.frontier = new
        info["copies"] = copies  # [copy id, original id]: resampled duplicates

    def _copy(self, st: SearchState, p: Node, group: int) -> Node:
        q = Node(id=st.next_id, parent=p.parent, text=p.text, steps=list(p.steps), scores=list(p.scores),
                 logw=p.logw, finished=p.finished, reason=p.reason, tokens=p.tokens, logprob=p.logprob,
                 handle=p.handle, group=group)
        st.next_id += 1
        return q

    def _finish_all(self, st: SearchState, ctx: Context) -> None:
        if self.config.weight == "potential":
            st.log_z += _log_mean_weight(np.array([n.logw for n in st.frontier]))
        for n in st.frontier:
            if not n.finished:
                n.finished, n.reason = True, "max_steps"
            self._release(ctx, n)
        st.finished = True

    def _next_gibbs_iteration(self, st: SearchState, ctx: Context, rng, info: dict) -> None:
        """Particle Gibbs: draw the reference path from the final weights; start again."""
        pop = st.frontier
        w = rs.normalize([n.logw for n in pop])
        ref = pop[int(rng.choice(len(pop), p=w))]
        st.reference = list(ref.steps)
        st.history.extend(pop)
        info["reference"] = ref.id
        st.iteration += 1
        st.finished = False
        self._new_iteration(st, ctx)

    def _release(self, ctx: Context, n: Node) -> None:
        """Free a node's continuation handle. Resampled copies share their parent's handle
        only until the next extension, which forks every copy before any parent is freed."""
        h = n.handle
        if h is not None and not isinstance(h, Node):
            ctx.generator.free(h)
        n.handle = None

    async def close(self, st: SearchState, ctx: Context) -> None:
        for n in st.frontier + st.done:
            self._release(ctx, n)

    # ------------------------------------------------------------------ select
    def select(self, st: SearchState, ctx: Context) -> Result:
        cfg, how = self.config, ctx.options["aggregate"]
        if cfg.weight == "potential":
            pool = st.frontier + st.done
        elif cfg.expand == "best" and st.done:
            pool = st.done  # the solution(s) found; the open frontier is not an answer
        else:
            pool = st.done + st.frontier
        pool = [n for n in pool if n.steps]  # nodes the budget stopped before their first step say nothing
        finished = sorted([n for n in pool if n.finished and n.reason != "error"] or pool, key=lambda n: n.id)
        cands = [
            Candidate(text=n.text, answer=ctx.task.extract(n.text), index=n.id, logprob=n.logprob,
                      score=n.score(how) if n.scores else None, generated_tokens=n.tokens,
                      finish_reason=n.reason or "open")
            for n in finished
        ]
        if cfg.final == "weighted-vote" and cfg.weight == "potential":
            logw = [n.logw for n in finished]
        elif cfg.final == "weighted-vote":
            logw = [n.score(how) for n in finished]
        else:
            logw = [0.0] * len(finished)
        classes = voting.fold(cands, logw, ctx.task)
        dist = voting.distribution(classes)
        answers = voting.choose("best" if cfg.final == "best" else "vote", classes, cands)
        answer = answers[0] if answers else None
        r = Result(strategy=self.name, answer=answer, answers=answers, distribution=dist, candidates=cands,
                   usage=ctx.usage, n=ctx.n, stopped_early=st.stopped_early)
        if cfg.weight == "potential":
            r.info["log_z"] = st.log_z  # log of the normalising-constant estimate
        return r


def cfg_width(ctx: Context, cfg: SearchConfig) -> int:
    return int(ctx.options.get("width", cfg.children))


def _dedupe(nodes: list[Node]) -> list[Node]:
    """Children with identical text (same prefix, same step) count once."""
    seen, out = set(), []
    for n in nodes:
        if n.text not in seen:
            seen.add(n.text)
            out.append(n)
    return out


def _log_mean_weight(logw: np.ndarray) -> float:
    """log of the mean incremental weight since the last resampling (weights reset to 0 then)."""
    return rs.log_mean_exp(logw) if logw.size else 0.0


def _node_info(n: Node, how: str) -> dict[str, Any]:
    return {
        "id": n.id, "parent": n.parent, "step": n.steps[-1] if n.steps else "", "depth": len(n.steps),
        "tokens": n.tokens, "score": n.scores[-1] if n.scores else None, "agg": n.score(how) if n.scores else None,
        "logw": n.logw, "finished": n.finished, "reason": n.reason,
    }


_PF = {"resampler": ParamSpec(str, "multinomial", "resampling scheme", choices=tuple(rs.RESAMPLERS))}
_WIDTH = {"width": ParamSpec(int, 4, "children per expanded node", lo=1)}

SEARCH_STRATEGIES: dict[str, SearchStrategy] = {
    s.name: s
    for s in [
        SearchStrategy(
            "particle-filter",
            "particle filtering: weights exp(step score / T), multinomial resampling every step, weighted vote",
            SearchConfig(weight="potential", resample="multinomial"), _PF,
            doc="Particle filtering over reasoning steps (Puri et al. 2025, 'A Probabilistic Inference Approach "
                "to Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods'). n particles; "
                "each step extends every live particle by one step, multiplies its weight by exp(s_t / T) with "
                "s_t the process scorer's log-score of the step, and resamples (multinomial by default). "
                "Finished particles keep their weights; the answer is the weighted vote of the final "
                "population. log_z estimates the normalising constant of the tempered target."),
        SearchStrategy(
            "importance-sampling",
            "n independent trajectories weighted by prod exp(step score / T); weighted vote (no resampling)",
            SearchConfig(weight="potential", resample="none")),
        SearchStrategy(
            "smc",
            "sequential Monte Carlo: particle filter resampling only when ESS < half of n",
            SearchConfig(weight="potential", resample="systematic", ess_threshold=0.5), _PF),
        SearchStrategy(
            "particle-gibbs",
            "particle Gibbs: conditional particle filters that keep a reference path across iterations",
            SearchConfig(weight="potential", resample="multinomial", reference=True),
            {**_PF, "iterations": ParamSpec(int, 2, "particle filter sweeps", lo=1)},
            doc="Particle Gibbs (Andrieu, Doucet, Holenstein 2010; as used for LLM reasoning by Puri et al. "
                "2025): the first sweep is a particle filter; each later sweep is a conditional particle "
                "filter in which one particle replays the reference path drawn from the previous sweep's "
                "final weights and always survives resampling."),
        SearchStrategy(
            "beam-search",
            "beam search: n beams, each extended by `width` children, top-n by process score kept",
            SearchConfig(weight="rank", select="top", final="best"), _WIDTH,
            doc="Beam search with a process reward (Snell et al. 2024; Beeching et al. 2024): every beam "
                "gets `width` sampled children, the n best children by aggregated step score survive, "
                "finished beams are set aside; the answer is the best finished beam."),
        SearchStrategy(
            "dvts",
            "diverse verifier tree search: n/width independent subtrees, each keeps its best child",
            SearchConfig(weight="rank", select="group-top", final="weighted-vote"), _WIDTH,
            doc="DVTS (Beeching, Tunstall, Rush 2024, 'Scaling test-time compute with open models'): the "
                "n beams are split into n/width subtrees searched greedily and independently with the "
                "process scorer; the answer is the score-weighted vote of the subtrees' solutions."),
        SearchStrategy(
            "rebase",
            "REBASE: each depth's n expansions shared out by softmax(score / T) over the frontier",
            SearchConfig(weight="rank", expand="rebase", final="weighted-vote"),
            doc="REBASE (Wu et al. 2024, 'Inference Scaling Laws'): a tree whose expansion budget at each "
                "depth (n minus the finished solutions) is allocated to frontier nodes in proportion to "
                "softmax(score / T); nodes allocated nothing are pruned. Answer: weighted vote."),
        SearchStrategy(
            "best-first",
            "best-first search: expand the best frontier node by score (n children), stop at the first solution",
            SearchConfig(weight="rank", expand="best", stop_at_first=True, final="best"),
            {"aggregate": ParamSpec(str, "product", "priority: step scores → path score",
                                    choices=("last", "min", "product", "mean")),
             "width": ParamSpec(int, 1, "frontier nodes expanded per step", lo=1),
             "max_frontier": ParamSpec(int, 32, "frontier size kept (the worst are dropped)", lo=1),
             "max_expansions": ParamSpec(int, 64, "search steps (expansions) at most", lo=1)},
            doc="Best-first search in the spirit of A*-decoding (Chatziveroglou 2025): a priority queue of "
                "partial solutions ordered by aggregated process score; each step expands the best node "
                "with n sampled children; the search stops at the first finished solution or the budget."),
        SearchStrategy(
            "self-eval-beam",
            "self-evaluation guided stochastic beam search: beams drawn by exp(score / tau), tau decays",
            SearchConfig(weight="rank", select="sample", final="best"),
            {**_WIDTH, "tau": ParamSpec(float, 0.5, "sampling temperature of the beam draw", lo=1e-6),
             "tau_decay": ParamSpec(float, 0.5, "tau is multiplied by this after each step", lo=0.0, hi=1.0),
             "mix": ParamSpec(float, 0.5, "score = mix * step mean token log-prob + (1 - mix) * scorer score",
                              lo=0.0, hi=1.0)},
            doc="Self-evaluation guided stochastic beam search (Xie et al. 2023): each beam gets `width` "
                "children; a child's score mixes the step's mean token log-probability under the model with the "
                "self-evaluation log-score (weight `mix`), and the next n beams are drawn without replacement "
                "with probability ∝ exp(score / tau) (Gumbel top-k); tau decays by `tau_decay` each step."),
    ]
}
SEARCH_STRATEGIES["self-eval-beam"].default_scorer = "self-eval"
