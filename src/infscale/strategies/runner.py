"""The runner: the only outer loop. It owns the budget, the context and cancellation.

``run`` validates what the caller gave (strategy, n, scorer, settings), builds the request's
:class:`~infscale.meter.Meter` and the :class:`~infscale.strategies.base.Context` around it,
checks that the generator has every capability the strategy and scorer need (a one-line
ConfigError before any call otherwise), then calls ``strategy.step`` until the strategy is done
or the budget is spent, and always lets the strategy cancel outstanding work before it selects
its result from what it has.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from ..tasks import get_task
from ..backends.base import Generator
from ..errors import BackendError, ConfigError
from ..meter import Meter, OnCompletion
from ..params import MAX_WIDTH, Budget, SamplingParams
from ..scorers import Scorer, get_scorer
from ..types import Problem, Result
from . import get_strategy
from .base import BudgetExhausted, Context, Strategy

__all__ = ["run", "check_n", "resolve", "check_capabilities"]


def check_n(n: Any, limit: int = MAX_WIDTH) -> int:
    """``n`` checked: an integer in [1, ``limit``] (the work limit, by default
    :data:`~infscale.params.MAX_WIDTH`), before anything is allocated."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or n > limit:
        raise ConfigError("n", f"got {n!r}", f"an integer >= 1 and <= {limit}, the work limit (the width: about "
                          "the compute of n independent samples)")
    return n


def resolve(strategy: str | Strategy, scorer: str | Scorer | None = None, options: dict[str, Any] | None = None,
            limits: Mapping[str, float] | None = None) -> tuple[Strategy, dict[str, Any], Scorer | None]:
    """The strategy, its validated settings (``limits``: a server's work limits by setting
    name), and the scorer it will use (given, else its default when these settings use one)."""
    strat = get_strategy(strategy)
    opts = strat.options(options or {}, limits)
    sc = get_scorer(scorer if scorer is not None else (strat.default_scorer if strat.wants_scorer(opts) else None))
    return strat, opts, sc


async def check_capabilities(meter: Meter, strat: Strategy, opts: dict[str, Any], sc: Scorer | None) -> None:
    """A one-line ConfigError, before any model call, if the generator lacks a capability the
    strategy (with these settings) or the scorer needs."""
    for need in strat.requires(opts):
        await meter.require(need.capability, who=need.who, param=need.param, accepted=need.accepted)
    if sc is not None and sc.reads_generation and strat.wants_scorer(opts) \
            and not getattr(strat, "generation_scorers", False):
        raise ConfigError("scorer", f"scorer {sc.name!r} scores the token statistics of the strategy's own "
                          f"generation, which strategy {strat.name!r} does not give it",
                          "best-of-n, weighted (by=borda), bom, temperature-mix or a step-level search strategy")
    if sc is not None:
        await sc.check(meter)


async def run(
    problem: Problem,
    generator: Generator,
    strategy: str | Strategy = "majority",
    *,
    n: int = 8,
    scorer: str | Scorer | None = None,
    params: SamplingParams | None = None,
    budget: Budget | None = None,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    trace: bool = False,
    on_completion: OnCompletion | None = None,
    limits: Mapping[str, float] | None = None,
) -> Result:
    """Run ``strategy`` on ``problem`` with ``generator``; return its :class:`Result`.

    ``n`` is the width, in units of independent samples: every strategy spends about the
    tokens ``n`` independent samples would (docs/strategies.md). ``options`` are the strategy's own
    settings (``--param``). ``scorer`` defaults to the strategy's documented default scorer.
    ``on_completion`` sees every completion charged to the request (strategy and scorer calls).
    ``limits`` replaces the work limits (``"n"`` and setting names -> maximum; a server's own).
    """
    strat, opts, sc = resolve(strategy, scorer, options, limits)
    opts = dict(opts)
    think = opts.pop("think_tokens", None)
    if think is not None:
        if any(isinstance(r.capability, tuple) and "prefill" in r.capability for r in strat.requires(opts)):
            raise ConfigError("param think_tokens", f"strategy {strat.name!r} continues partial answers step by "
                              "step, which a thinking budget over the whole answer cannot follow",
                              "a strategy that samples whole answers (majority, best-of-n, weighted, ...)")
        params = (params or SamplingParams()).with_(think_tokens=think)
    n = check_n(n, int((limits or {}).get("n", MAX_WIDTH)))
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError("seed", f"got {seed!r}", "an integer")
    meter = Meter(generator, budget or Budget(), on_completion=on_completion)
    ctx = Context(
        problem=problem, meter=meter, task=get_task(problem.task), params=params or SamplingParams(),
        n=n, seed=seed, scorer=sc, options=opts,
    )
    await check_capabilities(meter, strat, opts, sc)
    if think is not None:
        for cap in ("prefill", "reports_stop") if meter.chat else ("reports_stop",):
            await meter.require(cap, who="a thinking budget (think_tokens)", param="param think_tokens",
                                accepted="no think_tokens with this backend")
    state = strat.init(ctx)
    steps: list[dict[str, Any]] = []
    try:
        while not strat.done(state):
            left = None if ctx.budget.seconds is None else ctx.budget.seconds - (time.monotonic() - ctx.started)
            if left is not None and left <= 0:
                ctx.stopped_by_budget = True
                break
            try:
                async with asyncio.timeout(left):
                    state, info = await strat.step(state, ctx)
            except TimeoutError:
                ctx.stopped_by_budget = True
                break
            except BudgetExhausted:
                break
            if trace:
                steps.append(info)
    finally:
        await strat.close(state, ctx)
    ctx.usage.seconds = time.monotonic() - ctx.started
    result = strat.select(state, ctx)
    result.stopped_early = result.stopped_early or ctx.stopped_by_budget
    if meter.errors:
        # calls that failed end their trajectory (a particle dies, a draft is dropped): never quietly
        if result.answer is None:
            raise BackendError(f"strategy {strat.name!r}: {len(meter.errors)} of {ctx.usage.calls} calls failed and "
                               f"left no answer (first: {meter.errors[0]})", retryable=True)
        result.info["failed_calls"] = len(meter.errors)
        result.info["first_error"] = meter.errors[0]
    result.trace = steps
    return result
