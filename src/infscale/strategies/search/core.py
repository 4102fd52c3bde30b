"""The step-level search core: nodes, the search state, and one straight loop.

Search is approximate inference over reasoning paths. The model is the prior ``p(path)`` over
steps (a step is a line: it ends at the token that completes the delimiter, default ``"\\n"``,
or at the end of the answer); a process scorer gives each new step a log-score ``s_t``; the
tempered potential ``exp(s_t / T)`` plays the likelihood. The target of the weighted strategies is

    pi(path)  ∝  p(path) * prod_t exp(s_t / T)

One runner step is one round of the loop in :meth:`SearchStrategy.step`:

1. **select** what to extend — which frontier nodes, how many children each (the
   :class:`~.policies.Expand` policy);
2. **extend** each planned child by one step (:mod:`.extend`, the only code that touches
   generator handles: forks KV sequences where the generator can, merges empty steps);
3. **weigh** the new steps with the process scorer (the :class:`~.policies.Weigh` policy turns a
   step's log-score into the node's log-weight and priority);
4. **settle** which nodes stay — resampling, top-k, a priority queue — and whether the search is
   over (the :class:`~.policies.Select` policy).

The answer comes from the :class:`~.policies.Finish` policy (weighted vote or best
trajectory). Nothing in the loop tests a strategy's name or a flag: a named strategy is a
:class:`SearchConfig` of four policies (see :mod:`.registry`).

Finished trajectories keep their weights; one that hits its token cap, fails, or is refused for
budget never stops the others; an empty step is merged into the next and not counted;
``max_steps`` is honoured exactly. Every node records its parent, so the tree can be rebuilt
from the trace.

Budget: each child of each expansion is one call; scorer calls are charged too. When the budget
runs out the strategy answers from what it has (finished trajectories first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from ...errors import ConfigError
from ...rng import make_rng
from ...types import Candidate, Result
from ..base import Context, ParamSpec, Requirement, Strategy
from ..resampling import ess, normalize
from . import extend

__all__ = ["Node", "SearchState", "SearchConfig", "SearchStrategy", "ParticleGibbs", "aggregate", "COMMON_PARAMS"]


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


@dataclass(eq=False)
class Node:
    """A partial or finished trajectory (a particle, a beam, a tree node). Compared by identity.

    ``logw`` is the importance log-weight (weighted strategies); ``priority`` is what ranking
    strategies sort by (set by the weigh policy); ``handle`` is the generator's handle to the
    node's kept sequence (embedded engine: its KV cache), or ``None``; ``group`` is the
    subtree a node belongs to (DVTS)."""

    id: int
    parent: int | None
    text: str = ""
    steps: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    logw: float = 0.0
    priority: float = 0.0
    finished: bool = False
    reason: str = ""
    tokens: int = 0
    logprob: float = 0.0
    handle: Any = None
    group: int = 0
    empty_merges: int = 0
    step_logprob: float = 0.0  # mean token log-prob of the latest step
    memo: dict[str, Any] = field(default_factory=dict)  # policies' per-path state (immutable values), inherited
    up: Node | None = field(default=None, repr=False)  # the parent node itself (tree searches walk up)
    visits: int = 0  # tree search: simulations backed up through this node
    value: float = 0.0  # tree search: mean of the values backed up through it
    step_stats: list[float] = field(default_factory=list)  # the latest step's per-token statistic for a
    # generation-time scorer (self-certainty), gathered over its completions; not inherited

    @property
    def mean_logprob(self) -> float:
        return self.logprob / max(1, self.tokens)


@dataclass
class SearchState:
    """One search (one sweep, for particle Gibbs). ``reference`` and ``reference_node``: the path a
    conditional particle filter replays and the node currently replaying it."""

    frontier: list[Node]
    done: list[Node] = field(default_factory=list)
    pending: list[Node] = field(default_factory=list)  # children of the round in progress
    depth: int = 0
    next_id: int = 0
    iteration: int = 0
    log_z: float | None = None  # set by weighted selection: log of the normalising-constant estimate
    reference: list[str] | None = None
    reference_node: int | None = None
    finished: bool = False
    stopped_early: bool = False

    def new_node(self, **fields: Any) -> Node:
        node = Node(id=self.next_id, **fields)
        self.next_id += 1
        return node

    def child(self, parent: Node) -> Node:
        """A new node continuing ``parent`` (not yet extended)."""
        return self.new_node(parent=parent.id, text=parent.text, steps=list(parent.steps), scores=list(parent.scores),
                             logw=parent.logw, priority=parent.priority, tokens=parent.tokens, logprob=parent.logprob,
                             group=parent.group, memo=dict(parent.memo), up=parent)

    def copy(self, p: Node) -> Node:
        """A resampled duplicate of ``p``: same tree position and sequence handle, new id."""
        return self.new_node(parent=p.parent, text=p.text, steps=list(p.steps), scores=list(p.scores), logw=p.logw,
                             priority=p.priority, finished=p.finished, reason=p.reason, tokens=p.tokens,
                             logprob=p.logprob, handle=p.handle, group=p.group, memo=dict(p.memo), up=p.up)

    def live(self) -> list[Node]:
        return [n for n in self.frontier if not n.finished]


@dataclass(frozen=True)
class SearchConfig:
    """A named strategy: how to expand, weigh, select and finish (see :mod:`.policies`)."""

    expand: Any
    weigh: Any
    select: Any
    finish: Any

    def policies(self) -> tuple[Any, ...]:
        return (self.expand, self.weigh, self.select, self.finish)


COMMON_PARAMS = {
    "max_steps": ParamSpec(int, 12, "maximum number of (non-empty) steps per trajectory", lo=1),
    "step_tokens": ParamSpec(int, 64, "token cap for one step", lo=1),
    "delimiter": ParamSpec(str, "\n", "text that ends a step"),
}


class SearchStrategy(Strategy):
    """The step-level search core, configured by a :class:`SearchConfig`."""

    holds_sequences = True

    generation_scorers = True

    default_scorer = "arith-check"

    def __init__(self, name: str, summary: str, config: SearchConfig, doc: str = "",
                 default_scorer: str | None = "arith-check", cost: str = ""):
        self.name = name
        self.summary = summary
        self.config = config
        self.default_scorer = default_scorer
        self.cost = cost  # what --n buys, in units of n independent samples' generated tokens
        params = dict(COMMON_PARAMS)
        for policy in config.policies():
            params.update(policy.specs)
        self.params = params
        self.__doc__ = doc or summary

    def wants_scorer(self, options):
        return self.default_scorer is not None  # a search valued without a scorer (φ-decoding) calls none

    def requires(self, options: dict[str, Any]) -> list[Requirement]:
        """What the policies need of the generator with these settings (e.g. logprobs for a mixed score)."""
        steps = Requirement(("prefill", "kv_fork"), param="strategy",
                            who=f"strategy {self.name!r} (continues the assistant turn step by step)",
                            accepted="a sample-level strategy, or a generator with prefill (a completions endpoint, "
                                     "continue_final_message) or kv_fork (the embedded engine)")
        return [steps] + [replace(r, who=f"strategy {self.name!r} ({r.who})")
                          for policy in self.config.policies() for r in getattr(policy, "requires", lambda o: [])(options)]

    # ------------------------------------------------------------------ init
    def init(self, ctx: Context) -> SearchState:
        return self.start(ctx)

    def start(self, ctx: Context, *, iteration: int = 0, next_id: int = 0,
              reference: list[str] | None = None) -> SearchState:
        """A fresh search; with ``reference``, the last root replays that path (conditional SMC)."""
        if ctx.scorer is not None and not (getattr(ctx.scorer, "process_capable", False) or ctx.scorer.kind == "process"):
            raise ConfigError("scorer", f"{ctx.scorer.name!r} scores whole solutions only",
                              "a process scorer: arith-check, self-eval, prm-http")
        if (ctx.scorer is not None and ctx.scorer.ordinal and self.wants_scorer(ctx.options)
                and any(getattr(p, "needs_probability", False) for p in self.config.policies())):
            raise ConfigError("scorer", f"{ctx.scorer.name!r} gives ordinal scores, not log-probabilities, and "
                              f"strategy {self.name!r} reads a score as a probability",
                              "a scorer of probabilities (arith-check, self-eval, prm-http), or a search that ranks "
                              "or tempers scores (beam-search, dvts, best-first, particle-filter, smc, mur)")
        st = SearchState(frontier=[], iteration=iteration, next_id=next_id)
        st.frontier = [st.new_node(parent=None, group=g) for g in range(self.config.expand.roots(ctx))]
        if reference is not None:
            st.reference, st.reference_node = list(reference), st.frontier[-1].id
        return st

    def done(self, st: SearchState) -> bool:
        return st.finished

    # ------------------------------------------------------------------ step
    async def step(self, st: SearchState, ctx: Context):
        cfg = self.config
        rng = make_rng(ctx.seed, ctx.problem.id, "search", st.iteration, st.depth)
        info: dict[str, Any] = {"event": "step", "iteration": st.iteration, "depth": st.depth + 1}
        if st.depth == 0:
            info["roots"] = [n.id for n in st.frontier]
        before = st.frontier + st.done

        # 1. select what to extend: (node, number of children) pairs; nodes given 0 are pruned
        plan = cfg.expand.plan(st, ctx, info)
        planned = {id(node) for node, _ in plan}
        # 2. extend every planned child by one step (the parents leave the frontier)
        children = await extend.grow(st, ctx, plan)
        st.frontier = [n for n in st.frontier if id(n) not in planned]
        # 3. weigh the new steps: the process scorer's log-scores become weights and priorities;
        #    a weigh policy that looks ahead (foresight rollouts) does so here
        await self._weigh(ctx, children)
        foresee = getattr(cfg.weigh, "foresee", None)
        if foresee is not None:
            await foresee(st, ctx, children, rng, info)
        st.depth += 1
        # 4. settle which nodes stay, and whether the search is over
        over = cfg.select.settle(st, ctx, children, rng, info)
        st.pending = []
        kept = {id(n) for n in st.frontier + st.done}
        extend.release(ctx, [n for n in before + children if id(n) not in kept])
        if over or not st.live():
            self._finish(st, ctx)
        info["nodes"] = [_node_info(c) for c in children]
        return st, info

    async def _weigh(self, ctx: Context, children: list[Node]) -> None:
        todo = [c for c in children if c.reason not in ("error", "empty", "budget") and c.steps
                and len(c.scores) < len(c.steps)]
        if not todo:
            return
        if ctx.scorer is None or not self.wants_scorer(ctx.options):
            scores = [0.0] * len(todo)
        elif ctx.scorer.reads_generation:  # computed while the step was generated: no call
            scores = ctx.scorer.score_generated([c.step_stats for c in todo])
        else:
            prefixes = ["".join(c.steps[:-1]) for c in todo]
            scores = await ctx.scorer.score_steps(ctx.problem, prefixes, [c.steps[-1] for c in todo], ctx.meter)
        for c, s in zip(todo, scores):
            if math.isnan(s):  # the budget refused its scoring call: the step stays unscored
                continue
            self.config.weigh.update(c, float(s), ctx.options)

    def _finish(self, st: SearchState, ctx: Context) -> None:
        """End the search: open trajectories end as they are; every sequence is freed."""
        for n in st.frontier:
            if not n.finished:
                n.finished, n.reason = True, "max_steps"
        extend.release(ctx, st.frontier + st.done)
        st.finished = True

    async def close(self, st: SearchState, ctx: Context) -> None:
        extend.release(ctx, st.frontier + st.done + st.pending)

    # ------------------------------------------------------------------ select
    def select(self, st: SearchState, ctx: Context) -> Result:
        pool = [n for n in st.done + st.frontier if n.steps]  # nodes stopped before their first step say nothing
        usable = [n for n in pool if n.finished and n.reason not in ("error", "budget")]
        nodes = sorted(usable or pool, key=lambda n: n.id)
        cands = [Candidate(text=n.text, answer=ctx.task.extract(n.text), index=n.id, logprob=n.logprob,
                           score=n.priority if n.scores else None, generated_tokens=n.tokens,
                           finish_reason=n.reason or "open")
                 for n in nodes]
        dist, answers = self.config.finish.choose(nodes, cands, ctx.task)
        r = Result(strategy=self.name, answer=answers[0] if answers else None, answers=answers, distribution=dist,
                   candidates=cands, usage=ctx.usage, n=ctx.n, stopped_early=st.stopped_early)
        chosen = getattr(self.config.finish, "chosen", None)  # finishes that pick one trajectory name it
        pick = chosen(nodes, cands) if chosen is not None and nodes else None
        if pick is not None:  # the chosen path, root first (the trace draws it)
            path = []
            while pick is not None:
                path.append(pick.id)
                pick = pick.up
            r.info["path"] = path[::-1]
        if ctx.scorer is not None and ctx.scorer.reads_generation and self.wants_scorer(ctx.options):
            r.info.update(ctx.scorer.result_info(ctx.meter))
        if st.log_z is not None:  # weighted searches: the normalising-constant estimate, the final weights' ESS
            r.info["log_z"] = st.log_z
            r.info["ess"] = ess([n.logw for n in st.frontier])
        for policy in self.config.policies():  # what a policy reports about the search (MUR: steps searched)
            report = getattr(policy, "report", None)
            if report is not None:
                r.info.update(report(st, nodes))
        return r


def _node_info(n: Node) -> dict[str, Any]:
    return {
        "id": n.id, "parent": n.parent, "step": n.steps[-1] if n.steps else "", "depth": len(n.steps),
        "tokens": n.tokens, "score": n.scores[-1] if n.scores else None, "agg": n.priority if n.scores else None,
        "logw": n.logw, "finished": n.finished, "reason": n.reason,
    }



@dataclass
class GibbsState:
    sweep: SearchState
    iterations: int


class ParticleGibbs(Strategy):
    """Particle Gibbs (Andrieu, Doucet, Holenstein 2010; for LLM reasoning, Puri et al. 2025):
    sweeps of a particle filter. The first sweep is a plain particle filter; each later sweep is a
    conditional particle filter whose last particle replays the reference path — drawn from the
    previous sweep's final weights — and always survives resampling. The answer is the weighted
    vote of the last sweep. Its ``log_z`` would be conditional on the reference, not an unbiased
    estimate, so none is reported. Cost: ``iterations`` particle filters of n particles (the
    reference replays without generating)."""

    holds_sequences = True

    def __init__(self, name: str, summary: str, inner: SearchStrategy, doc: str = "", cost: str = ""):
        self.name = name
        self.summary = summary
        self.inner = inner
        self.default_scorer = inner.default_scorer
        self.cost = cost
        self.params = {**inner.params, "iterations": ParamSpec(int, 2, "particle filter sweeps", lo=1)}
        # a generation-time scorer has nothing to read on the reference path (it is replayed, not generated)
        self.generation_scorers = False
        self.__doc__ = doc or summary

    def wants_scorer(self, options):
        return True

    def requires(self, options: dict[str, Any]) -> list[Requirement]:
        return [replace(r, who=r.who.replace(repr(self.inner.name), repr(self.name), 1))
                for r in self.inner.requires(options)]

    def init(self, ctx: Context) -> GibbsState:
        return GibbsState(sweep=self.inner.start(ctx), iterations=1)

    def done(self, st: GibbsState) -> bool:
        return st.sweep.finished

    async def step(self, st: GibbsState, ctx: Context):
        st.sweep, info = await self.inner.step(st.sweep, ctx)
        if st.sweep.finished and st.iterations < ctx.options["iterations"]:
            # the reference path: one particle of the final population, drawn by weight
            pop = st.sweep.frontier
            rng = make_rng(ctx.seed, ctx.problem.id, "gibbs", st.iterations)
            ref = pop[int(rng.choice(len(pop), p=normalize([n.logw for n in pop])))]
            info["reference"] = ref.id
            st.sweep = self.inner.start(ctx, iteration=st.iterations, next_id=st.sweep.next_id,
                                        reference=list(ref.steps))
            st.iterations += 1
        return st, info

    async def close(self, st: GibbsState, ctx: Context) -> None:
        await self.inner.close(st.sweep, ctx)

    def select(self, st: GibbsState, ctx: Context) -> Result:
        r = self.inner.select(st.sweep, ctx)
        r.strategy = self.name
        r.info.pop("log_z", None)
        return r
