"""``auto``: probe the question, read how hard it is, and spend what a tuned policy says.

Compute-optimal inference in the sense of Snell et al. (2024, "Scaling LLM Test-Time Compute
Optimally can be More Effective than Scaling Model Parameters"): the compute a question gets
depends on an estimate of its difficulty. Per query, ``auto``

1. **probes**: draws the policy's first ``k`` samples (sample ``i`` seeded by ``(seed, problem
   id, i)``, the samples every sample-level strategy draws first);
2. **reads** the policy's difficulty signal on them (:data:`infscale.strategies.policy.SIGNALS`:
   answer agreement, mean token log-probability, the share ``arith-check`` accepts) and finds
   its bin;
3. **acts**: answers now (the bin's rule over the probe), abstains, or continues with the bin's
   strategy spec and budget. A sample-level spec *reuses the probe*: it draws only samples
   ``k..budget-1`` and chooses over all ``budget`` of them, so no sample is generated twice; a
   step-level spec searches afresh with ``n = budget`` (its steps are seeded per search node,
   never like the probe's samples).

``n`` (``--n``, the server's ``auto-16:MODEL``) is a **cap** on the budget: the bin's budget is
lowered to ``n`` (``capped`` in the decision); with ``n`` below the probe size the probe has
``n`` samples and the answer is their vote. The decision — policy, signal value, bin, action,
spec, budget — is in ``result.info["decision"]`` (so in ``--json`` and the server's
``infscale`` field) and is one event of the trace.

Budget: every probe sample, continuation sample, scorer call and search step is charged to the
request's one meter; when the budget runs out, ``auto`` answers from what it has.

:func:`allocate` spends one total token budget over a batch of probed problems where the
marginal gain in expected accuracy per token is highest (the policy's per-bin curves).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..meter import BUDGET
from ..scorers import get_scorer
from ..tasks import group_answers
from ..types import Candidate, Completion, Result
from .base import BudgetExhausted, Context, ParamSpec, Strategy
from .policy import SIGNALS, Action, Policy, load_policy, parse_spec, signal_value

__all__ = ["AutoStrategy", "AUTO", "allocate", "run_batch", "resolve_spec", "generator_model"]

CHECKER = "arith-check"


def generator_model(generator: Any) -> str | None:
    """The model a generator serves, as policies name it (embedded: the registered name)."""
    return getattr(generator, "model_name", None) or getattr(generator, "model", None)


def resolve_spec(spec: str, where: str = "policy"):
    """``(strategy, options, scorer)`` of a policy's spec; one-line error when it cannot be run by ``auto``."""
    from . import STRATEGIES  # noqa: PLC0415  (the registry imports this module)
    from .sample import SampleStrategy  # noqa: PLC0415

    try:
        name, given, scorer_name = parse_spec(spec)
    except ValueError as e:
        raise ConfigError(where, str(e), "NAME[:key=value,...]") from None
    strat = STRATEGIES.get(name)
    if strat is None or isinstance(strat, AutoStrategy):
        raise ConfigError(where, f"spec {spec!r} names no strategy auto can hand over to",
                          ", ".join(n for n in STRATEGIES if n != "auto"))
    if isinstance(strat, SampleStrategy) and (strat.greedy or strat.adaptive):
        raise ConfigError(where, f"spec {spec!r}: {name} would draw the probe's samples again",
                          "a pooled sample-level strategy (majority, weighted, best-of-n, bom) or a step-level one")
    opts = strat.options(given)
    scorer = get_scorer(scorer_name if scorer_name is not None else (strat.default_scorer if strat.wants_scorer(opts) else None))
    return strat, opts, scorer


def _pooled(strat: Strategy) -> bool:
    from .sample import SampleStrategy  # noqa: PLC0415

    return isinstance(strat, SampleStrategy)


@dataclass
class AutoState:
    policy: Policy
    k: int
    phase: str = "check"  # check -> probe -> (more -> score | inner) -> done
    completions: dict[int, Completion] = field(default_factory=dict)
    stream: Any = None
    passed: dict[int, bool] = field(default_factory=dict)
    checker_scores: dict[int, float] = field(default_factory=dict)
    scores: dict[int, float] | None = None
    decision: dict[str, Any] | None = None
    action: Action | None = None
    budget: int = 0
    spec: tuple[Any, dict[str, Any], Any] | None = None
    inner_ctx: Context | None = None
    inner_state: Any = None


class AutoStrategy(Strategy):
    """The ``auto`` strategy (see the module docstring)."""

    holds_sequences = True

    name = "auto"
    summary = "probe k samples, read a difficulty signal, continue with the strategy and budget a tuned policy chose"
    default_scorer = None
    n_is_cap = True  # n caps the policy's budget (servers give it their largest budget by default)
    params = {
        "policy": ParamSpec(str, "", "policy name (INFSCALE_HOME/policies/NAME.json, else shipped) or a .json path; "
                                     "default: the policy named after the generator's model"),
    }

    def wants_scorer(self, options: dict[str, Any]) -> bool:
        return False

    # -- init / step --------------------------------------------------------------------
    def init(self, ctx: Context) -> AutoState:
        policy = load_policy(ctx.options.get("policy") or None, generator_model(ctx.generator))
        for spec in policy.specs():
            resolve_spec(spec, where="policy")
        return AutoState(policy=policy, k=min(policy.probe, ctx.n))

    def done(self, state: AutoState) -> bool:
        return state.phase == "done"

    async def step(self, state: AutoState, ctx: Context):
        if state.phase == "check":  # every capability any bin may need, before any call
            for spec in state.policy.specs():
                strat, opts, sc = resolve_spec(spec)
                for need in strat.requires(opts):
                    await ctx.meter.require(need.capability, who=need.who, param="policy", accepted=need.accepted)
                if sc is not None:
                    await sc.check(ctx.meter)
            state.phase = "probe"
            return state, {"event": "policy", "policy": state.policy.name, "probe": state.k,
                           "signal": state.policy.signal}
        if state.phase == "probe":
            return await self._sample(state, ctx, range(state.k), then=self._decide)
        if state.phase == "more":
            return await self._sample(state, ctx, range(state.k, state.budget), then=self._to_score)
        if state.phase == "score":
            strat, opts, sc = state.spec
            order = sorted(state.completions)
            todo = [i for i in order if not (sc is not None and sc.name == CHECKER and i in state.checker_scores)]
            got: list[float] = []
            if todo:
                try:
                    got = await sc.score(ctx.problem, [state.completions[i].text for i in todo], ctx.meter)
                except BudgetExhausted:
                    got = [math.nan] * len(todo)
            scores = dict(zip(todo, got))
            state.scores = {i: scores.get(i, state.checker_scores.get(i, math.nan)) for i in order}
            state.phase = "done"
            return state, {"event": "scored", "n": len(todo)}
        if state.phase == "inner":
            strat = state.spec[0]
            state.inner_state, info = await strat.step(state.inner_state, state.inner_ctx)
            if strat.done(state.inner_state):
                state.phase = "done"
            return state, {"event": "search", **info}
        raise RuntimeError(f"auto: step in phase {state.phase!r}")

    async def _sample(self, state: AutoState, ctx: Context, indices: range, then):
        if state.stream is None:
            state.stream = ctx.stream([ctx.sample_request(i) for i in indices]).__aiter__()
        try:
            j, c = await state.stream.__anext__()
        except StopAsyncIteration:
            state.stream = None
            return await then(state, ctx)
        if c.finish_reason != BUDGET:
            state.completions[indices[j]] = c
        return state, {"event": "sample", "index": indices[j], "tokens": c.generated_tokens,
                       "finish": c.finish_reason}

    def _candidates(self, state: AutoState, ctx: Context, scores: dict[int, float] | None = None) -> list[Candidate]:
        out = []
        for i in sorted(state.completions):
            c = state.completions[i]
            s = None if scores is None else scores.get(i)
            if s is not None and math.isnan(s):
                s = None
            out.append(Candidate(text=c.text, answer=ctx.task.extract(c.text), index=i, logprob=c.logprob, score=s,
                                 generated_tokens=c.generated_tokens, finish_reason=c.finish_reason, seed=c.seed))
        return out

    async def _decide(self, state: AutoState, ctx: Context):
        policy = state.policy
        cands = self._candidates(state, ctx)
        if SIGNALS[policy.signal][1] and cands:
            checker = get_scorer(CHECKER)
            got = await checker.score(ctx.problem, [c.text for c in cands], ctx.meter)
            state.checker_scores = {c.index: s for c, s in zip(cands, got)}
            state.passed = {c.index: (s is not None and s >= 0.0) for c, s in zip(cands, got)}
        classes = group_answers(ctx.task, [c.answer for c in cands])
        # a probe sample the budget refused counts as a sample without an answer
        missing = state.k - len(cands)
        probe = cands + [Candidate(text="", answer=None)] * missing
        value = signal_value(policy.signal, probe, list(classes) + [None] * missing,
                             [state.passed.get(c.index, False) for c in cands] + [False] * missing)
        b = policy.bin_of(value)
        action = policy.bins[b].action
        budget = action.budget if action.kind == "continue" else state.k
        capped = budget > ctx.n
        budget = min(budget, ctx.n)
        kind = action.kind
        spec = action.spec
        if state.k < policy.probe:  # the cap is below the probe: answer from what the cap allowed
            kind, spec = "answer", "majority"
        if kind == "continue" and budget <= state.k:  # nothing beyond the probe fits (the cap): answer now
            kind = "answer"
            if not _pooled(resolve_spec(spec)[0]):
                spec = "majority"
        state.spec = resolve_spec(spec)
        strat = state.spec[0]
        state.action = Action(kind, spec, budget)
        state.budget = budget if kind == "continue" else state.k
        lo, hi = policy.bins[b].lo, policy.bins[b].hi
        state.decision = {
            "policy": policy.name, "signal": policy.signal, "value": value if math.isfinite(value) else None,
            "bin": b, "bin_range": [lo, hi], "action": kind, "spec": spec if kind != "abstain" else None,
            "budget": state.budget, "policy_budget": action.budget if action.kind == "continue" else policy.probe,
            "probe": state.k, "cap": ctx.n, "capped": capped or state.k < policy.probe,
        }
        info = {"event": "decision", **state.decision}
        if kind == "continue" and _pooled(strat):
            state.phase = "more"
        elif kind == "continue":
            _, opts, sc = state.spec
            state.inner_ctx = Context(problem=ctx.problem, meter=ctx.meter, task=ctx.task, params=ctx.params,
                                      n=budget, seed=ctx.seed, scorer=sc, options=opts)
            state.inner_state = strat.init(state.inner_ctx)
            state.phase = "inner"
        else:
            return await self._to_score(state, ctx, info)
        return state, info

    async def _to_score(self, state: AutoState, ctx: Context, info: dict[str, Any] | None = None):
        strat, opts, sc = state.spec
        needs = state.action is not None and state.action.kind != "abstain" and sc is not None \
            and strat.wants_scorer(opts) and state.completions
        state.phase = "score" if needs else "done"
        return state, info or {"event": "sampling done", "samples": len(state.completions)}

    async def close(self, state: AutoState, ctx: Context) -> None:
        if state.stream is not None:
            await state.stream.aclose()
            state.stream = None
        if state.inner_state is not None:
            await state.spec[0].close(state.inner_state, state.inner_ctx)

    # -- select -------------------------------------------------------------------------
    def select(self, state: AutoState, ctx: Context) -> Result:
        decision = state.decision or {"policy": state.policy.name, "signal": state.policy.signal, "value": None,
                                      "bin": None, "action": "stopped", "spec": "majority", "budget": state.k,
                                      "probe": state.k, "cap": ctx.n, "capped": False,
                                      "note": "the budget ran out before the probe was complete: majority over it"}
        if state.inner_state is not None:
            strat = state.spec[0]
            r = strat.select(state.inner_state, state.inner_ctx)
            r.strategy = self.name
            r.info = {**r.info, "decision": decision, "probe_answers": [c.answer for c in self._candidates(state, ctx)]}
            return r
        from .sample import SAMPLE_STRATEGIES  # noqa: PLC0415

        cands = self._candidates(state, ctx, state.scores)
        if decision["action"] == "abstain":
            return Result(strategy=self.name, answer=None, answers=[], distribution=[], candidates=cands,
                          usage=ctx.usage, n=len(cands), info={"decision": decision})
        if state.spec is not None:
            strat, opts, _ = state.spec
        else:
            strat, opts = SAMPLE_STRATEGIES["majority"], {}
        r = strat._choose(cands, ctx.task, opts, ctx.usage, n=len(cands), stopped_early=False)
        r.strategy = self.name
        r.info = {**r.info, "decision": decision}
        return r


AUTO = AutoStrategy()


def allocate(curves: list[list[dict[str, Any]]], spent: list[float], total_tokens: float) -> list[int]:
    """Spend ``total_tokens`` over a batch where the marginal gain per token is highest.

    ``curves[j]`` is problem ``j``'s list of options (``tokens``, ``accuracy``: expected
    generated tokens and accuracy, the first one what its probe already bought), ``spent[j]``
    what its probe actually cost. Greedy on the upper convex hull of each curve: repeatedly take
    the step (one problem, to its next hull point) with the largest accuracy gain per extra
    token that still fits in what is left; exact for concave curves (Lagrangian allocation).
    Returns the chosen option index per problem."""
    if total_tokens < 0:
        raise ConfigError("total_tokens", f"got {total_tokens!r}", "a number of tokens >= 0")
    hulls = [_upper_hull(c) for c in curves]
    at = [0] * len(curves)
    left = float(total_tokens) - float(sum(spent))
    while True:
        best, best_rate = None, 0.0
        for j, h in enumerate(hulls):
            if at[j] + 1 >= len(h):
                continue
            cur, nxt = curves[j][h[at[j]]], curves[j][h[at[j] + 1]]
            extra = nxt["tokens"] - cur["tokens"]
            gain = nxt["accuracy"] - cur["accuracy"]
            if extra > left or gain <= 0:
                continue
            rate = gain / max(extra, 1e-9)
            if rate > best_rate:
                best, best_rate = j, rate
        if best is None:
            break
        h = hulls[best]
        left -= curves[best][h[at[best] + 1]]["tokens"] - curves[best][h[at[best]]]["tokens"]
        at[best] += 1
    return [h[a] for h, a in zip(hulls, at)]


def _upper_hull(curve: list[dict[str, Any]]) -> list[int]:
    """Indices of the upper-left convex hull of (tokens, accuracy), from the first option, in
    increasing tokens (options that cost more and buy no more accuracy are dropped)."""
    if not curve:
        return []
    order = sorted(range(len(curve)), key=lambda i: (curve[i]["tokens"], -curve[i]["accuracy"]))
    start = 0
    pts = [start] + [i for i in order if i != start and curve[i]["tokens"] >= curve[start]["tokens"]]
    hull: list[int] = []
    for i in pts:
        if hull and curve[i]["accuracy"] <= curve[hull[-1]]["accuracy"]:
            continue
        while len(hull) >= 2:
            a, b = curve[hull[-2]], curve[hull[-1]]
            c = curve[i]
            # b lies on or below the chord a-c: drop it (the curve must be concave)
            if (b["accuracy"] - a["accuracy"]) * (c["tokens"] - a["tokens"]) <= \
                    (c["accuracy"] - a["accuracy"]) * (b["tokens"] - a["tokens"]):
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


async def run_batch(problems: list, generator: Any, *, total_tokens: float, policy: str | None = None, seed: int = 0,
                    params: Any = None, concurrency: int = 8) -> tuple[list[Result], dict[str, Any]]:
    """``auto`` over a batch under one total token budget (``infscale eval --total-tokens``).

    Every problem is probed first (``auto`` capped at the probe size: ``k`` samples, the
    signal, the bin); then :func:`allocate` spends what is left of ``total_tokens`` where the
    bins' curves promise the largest gain in accuracy per token, instead of the same budget per
    problem; then each problem continues with the option it was given. A sample-level
    continuation draws samples ``k..budget-1`` (what ``auto`` alone would draw next; no probe
    sample is drawn again) and chooses over all ``budget`` samples; a step-level one searches
    afresh. Returns the results (``info["decision"]`` marks ``allocated``) and the
    allocation: tokens given and spent, and per problem its bin, option and tokens."""
    import asyncio  # noqa: PLC0415

    import contextlib  # noqa: PLC0415

    from ..meter import Meter  # noqa: PLC0415
    from .runner import run  # noqa: PLC0415  (the runner imports the registry, which imports this module)

    pol = load_policy(policy or None, generator_model(generator))
    sem = asyncio.Semaphore(concurrency)
    opts = {"policy": policy or ""}

    async def probe(p):
        async with sem:
            return await run(p, generator, AUTO, n=pol.probe, seed=seed, params=params, options=opts)

    probes = list(await asyncio.gather(*(probe(p) for p in problems)))
    spent = [float(r.usage.generated_tokens) for r in probes]
    curves = []
    for r in probes:
        b = r.info["decision"]["bin"]
        curve = list(pol.bins[b].curve) if b is not None else []
        if not curve or curve[0].get("kind") != "answer":
            curve = [{"kind": "answer", "spec": "majority", "budget": pol.probe, "tokens": 0.0, "accuracy": 0.0}] + \
                [c for c in curve if c.get("kind") == "continue"]
        curves.append(curve)
    chosen = allocate(curves, spent, total_tokens)

    async def finish(p, r, curve, j):
        opt = curve[j]
        if j == 0 or opt.get("kind") != "continue" or int(opt["budget"]) <= pol.probe:
            return r
        strat, sopts, sc = resolve_spec(opt["spec"])
        budget = int(opt["budget"])
        async with sem:
            if not _pooled(strat):
                more = await run(p, generator, strat, n=budget, seed=seed, params=params, options=sopts, scorer=sc)
                out = more
            else:  # samples probe..budget-1, exactly the ones auto itself would draw next
                from ..params import SamplingParams  # noqa: PLC0415
                from ..tasks import get_task  # noqa: PLC0415

                task = get_task(p.task)
                ctx = Context(problem=p, meter=Meter(generator), task=task, params=params or SamplingParams(),
                              n=budget, seed=seed, scorer=sc, options=sopts)
                new: list[Candidate] = []
                async with contextlib.aclosing(ctx.stream([ctx.sample_request(i)
                                                           for i in range(pol.probe, budget)])) as stream:
                    async for j, c in stream:
                        if c.finish_reason != BUDGET:
                            new.append(Candidate(text=c.text, answer=task.extract(c.text), index=pol.probe + j,
                                                 logprob=c.logprob, generated_tokens=c.generated_tokens,
                                                 finish_reason=c.finish_reason, seed=c.seed))
                cands = list(r.candidates) + sorted(new, key=lambda c: c.index)
                if sc is not None and strat.wants_scorer(sopts) and cands:
                    got = await sc.score(p, [c.text for c in cands], ctx.meter)
                    cands = [dataclasses.replace(c, score=None if math.isnan(s) else s) for c, s in zip(cands, got)]
                out = strat._choose(cands, task, sopts, ctx.usage, n=budget, stopped_early=False)
        out.strategy = AUTO.name
        out.usage.calls += r.usage.calls
        out.usage.generated_tokens += r.usage.generated_tokens
        out.usage.prompt_tokens += r.usage.prompt_tokens
        out.usage.seconds += r.usage.seconds
        out.info = {**out.info, "decision": {**r.info["decision"], "action": "continue", "spec": opt["spec"],
                                             "budget": budget, "allocated": True}}
        return out

    results = list(await asyncio.gather(*(finish(p, r, c, j) for p, r, c, j in zip(problems, probes, curves, chosen))))
    per = [{"problem_id": p.id, "bin": r.info["decision"]["bin"], "value": r.info["decision"]["value"],
            "spec": c[j].get("spec"), "budget": int(c[j].get("budget") or pol.probe),
            "tokens": float(res.usage.generated_tokens)}
           for p, r, c, j, res in zip(problems, probes, curves, chosen, results)]
    allocation = {"policy": pol.name, "total_tokens": float(total_tokens),
                  "spent": float(sum(x["tokens"] for x in per)), "probe_tokens": float(sum(spent)),
                  "problems": len(problems), "per_problem": per}
    return results, allocation
