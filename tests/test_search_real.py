"""Step-level search on the real embedded model (slow: loads SmolLM2-135M): every registered
strategy runs, frees every KV sequence, and spends about what --n independent samples do."""

from __future__ import annotations

import asyncio

import pytest

import infscale
from infscale.params import SamplingParams
from infscale.strategies.search import SEARCH_STRATEGIES

pytestmark = pytest.mark.slow

QUESTION = "Tom has 3 boxes with 4 apples each. He eats 2 apples. How many are left?"
N = 4


def _run(engine, strategy, **options):
    params = SamplingParams(temperature=0.8, max_tokens=96)
    return asyncio.run(infscale.run(infscale.Problem(question=QUESTION, id="apples"), engine, strategy, n=N,
                                    scorer="arith-check", params=params, options={"max_steps": 6, **options}))


@pytest.fixture(scope="module")
def samples_tokens(engine):
    """Generated tokens of N independent samples (importance sampling: N independent trajectories)."""
    return _run(engine, "importance-sampling").usage.generated_tokens


@pytest.mark.parametrize("strategy", sorted(SEARCH_STRATEGIES))
def test_every_search_strategy_on_the_engine_frees_its_sequences_and_is_compute_matched(engine, samples_tokens,
                                                                                          strategy):
    r = _run(engine, strategy, **({"width": 2} if "width" in SEARCH_STRATEGIES[strategy].params else {}))
    assert r.candidates and r.usage.calls > 0
    asyncio.run(asyncio.sleep(0.1))
    assert engine.stats()["live"] == 0 and engine.stats()["free_sequences"] == engine.n_seq_max
    ratio = r.usage.generated_tokens / samples_tokens
    # the band of tests/test_compute_matched.py, widened for a real model's variable step lengths
    # (one seed, four trajectories); best-first ends at its first solution and MUR searches only the
    # steps the model is unsure of (here often none: one sample's tokens), so their lower bound is exempt
    assert ratio <= 3.0, (strategy, ratio)
    if strategy not in ("best-first", "mur"):
        assert ratio >= 0.33, (strategy, ratio)
