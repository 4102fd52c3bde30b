"""Compute-matched budgets: at width n every search strategy generates about as many tokens as n
independent samples of the same problem.

The fake model's every solution is DEPTH one-token steps and a two-token answer line, so n
independent samples generate exactly n * (DEPTH + 2) tokens. The band is 0.5x to 2x.
Exception (docs/strategies.md): best-first ends as soon as the first node of its queue is a
solution, so only its upper bound is checked; particle-gibbs runs ``iterations`` particle
filters (checked at iterations=2, the default, just under 2x since the reference replays).
"""

from __future__ import annotations

import asyncio
import math

import pytest

import infscale
from infscale import Problem
from infscale.strategies.search import SEARCH_STRATEGIES
from infscale.testing import FakePotential, FakeStepModel

DEPTH, N = 5, 8
LOWER_BOUND_EXEMPT = {"best-first"}


def next_steps(steps):
    if len(steps) >= DEPTH:
        return {"Answer: " + "".join(s[0] for s in steps): 1.0}
    return {"p": 0.5, "q": 0.3, "r": 0.2}


SCORE = {"p": math.log(0.8), "q": math.log(0.5), "r": math.log(0.3)}


def generated_tokens(strategy: str, n: int, seed: int) -> int:
    r = asyncio.run(infscale.run(Problem(question="q", task="text", id="p"), FakeStepModel(next_steps), strategy,
                                 n=n, scorer=FakePotential(lambda before, step: SCORE.get(step, 0.0)), seed=seed))
    return r.usage.generated_tokens


def test_independent_samples_cost_what_the_band_assumes():
    assert generated_tokens("importance-sampling", N, 0) == N * (DEPTH + 2)


@pytest.mark.parametrize("strategy", sorted(SEARCH_STRATEGIES))
def test_every_strategy_at_n_generates_about_n_samples_worth_of_tokens(strategy):
    samples = N * (DEPTH + 2)
    for seed in range(3):
        ratio = generated_tokens(strategy, N, seed) / samples
        assert ratio <= 2.0, (strategy, ratio)
        if strategy not in LOWER_BOUND_EXEMPT:
            assert ratio >= 0.5, (strategy, ratio)
