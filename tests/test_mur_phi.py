"""MUR and φ-decoding on fake step models whose step uncertainties and scores are known.

The fake's token log-probabilities are scripted per step text, so a step's uncertainty (MUR) and
its foresight value (φ-decoding) are known exactly; the expected gate, pruning and selection are
computed by hand in each test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math

import numpy as np
import pytest

import infscale
from infscale import Budget, Problem
from infscale.errors import ConfigError
from infscale.testing import FakePotential, FakeStepModel, ForkingFakeGenerator

PROBLEM = Problem(question="q", task="text", id="p")


class ScriptedSteps(ForkingFakeGenerator):
    """A forking fake over ``next_steps`` whose every token of step ``s`` has log-prob ``logp[s]``."""

    def __init__(self, next_steps, logp: dict[str, float]):
        self.model = FakeStepModel(next_steps)
        super().__init__(self.model._reply)
        self.logp = logp

    def _one(self, r):
        out = super()._one(r)
        if out.generated_tokens and not r.params.top_logprobs:
            out.logprobs = [self.logp.get(out.text.strip(), -0.5)] * out.generated_tokens
        return out


def run(gen, strategy, n, scorer=None, seed=0, budget=None, **options):
    return asyncio.run(infscale.run(PROBLEM, gen, strategy, n=n, scorer=scorer, seed=seed, budget=budget,
                                    options=options, trace=True))


# -- MUR ---------------------------------------------------------------------------------------

# one path s1 ... s6, then the answer; a step's uncertainty is minus its tokens' log-prob
U = [0.2, 1.0, 0.1, 0.3, 2.0, 0.5, 0.05]
CHAIN = [f"s{i}" for i in range(1, 7)] + ["Answer: 7"]


def chain(steps):
    return {CHAIN[len(steps)]: 1.0}


def chain_model():
    return ScriptedSteps(chain, {s: -u for s, u in zip(CHAIN, U)})


def test_mur_searches_exactly_the_steps_above_the_momentum_threshold():
    # by hand, alpha = 0.9, gamma = 0.8, -log(gamma) = 0.22314:
    #   M1 = 0.02;                       step 2: tau = 0.24314 < 1.0 -> search; M2 = 0.118
    #   step 3: tau = 0.34114 > 0.1;     step 4: tau = 0.33934 > 0.3;          M4 = 0.13458
    #   step 5: tau = 0.35772 < 2.0 -> search; M5 = 0.321122
    #   step 6: tau = 0.544262 > 0.5;    step 7: tau = 0.56215 > 0.05
    gen = chain_model()
    r = run(gen, "mur", 4, scorer=FakePotential(lambda before, step: 0.0))
    assert r.answer == "7"
    assert r.info["steps_searched"] == [2, 5] and r.info["searched_steps"] == 2
    expected_tau = [None, 0.24314, 0.34114, 0.33934, 0.35772, 0.544262, 0.56215]
    got = r.info["thresholds"]
    assert got[0] is None and got[1:] == pytest.approx(expected_tau[1:], abs=1e-4)
    assert r.info["uncertainties"] == pytest.approx(U)
    # a searched step costs n one-token candidates, any other one its own tokens (the answer: 2)
    assert r.usage.generated_tokens == 4 * 1 + 2 * 4 * 1 + 2
    assert gen.held == set() and gen.handed_out > 0


def test_mur_threshold_follows_the_formula_for_other_settings():
    for alpha, gamma in [(0.5, 0.8), (0.9, 0.5), (0.0, 1.0), (1.0, 0.9)]:
        m, expected = 0.0, []
        for t, u in enumerate(U, start=1):
            if t >= 2 and u > m - math.log(gamma):
                expected.append(t)
            m = alpha * m + (1 - alpha) * u
        r = run(chain_model(), "mur", 3, scorer=FakePotential(lambda before, step: 0.0), momentum=alpha, gamma=gamma)
        assert r.info["steps_searched"] == expected, (alpha, gamma)


def test_mur_with_a_tiny_gamma_never_searches_and_costs_one_sample():
    r = run(chain_model(), "mur", 8, scorer=FakePotential(lambda before, step: 0.0), gamma=0.05)
    assert r.info["searched_steps"] == 0
    assert r.usage.generated_tokens == 6 + 2


# a two-way step 2: "bad" is uncertain and scores low, "good" is surer and scores high
def forked(steps):
    if not steps:
        return {"s1": 1.0}
    if len(steps) == 1:
        return {"bad": 0.7, "good": 0.3}
    return {"Answer: " + steps[1]: 1.0}


FORKED_LOGP = {"s1": -0.1, "bad": -2.0, "good": -0.6, "Answer: bad": -0.1, "Answer: good": -0.1}
FORKED_SCORE = {"bad": math.log(0.1), "good": 0.0}


@pytest.mark.parametrize("seed", range(6))
def test_mur_keeps_the_best_scored_candidate_and_its_uncertainty_enters_the_momentum(seed):
    gen = ScriptedSteps(forked, FORKED_LOGP)
    r = run(gen, "mur", 4, scorer=FakePotential(lambda before, step: FORKED_SCORE.get(step, 0.0)), seed=seed)
    search_rounds = [t for t in r.trace if t.get("mur", {}).get("candidates")]
    gated = [t for t in r.trace if "search" in t.get("mur", {})]
    first_step2 = next(t for t in gated if t["mur"]["step"] == 2)
    if first_step2["nodes"][0]["step"].strip() == "good":
        # u = 0.6 > tau = 0.01 + 0.22314: "good" is searched too, and every candidate competes
        assert first_step2["mur"]["search"]
    assert first_step2["mur"]["search"] and len(search_rounds) == 1
    cands = search_rounds[0]["mur"]["candidates"]
    assert len(cands) == 4
    steps = {n["id"]: n["step"].strip() for t in r.trace for n in t["nodes"]}
    best = "good" if any(steps[i] == "good" for i in cands) else "bad"
    assert steps[search_rounds[0]["mur"]["kept"]] == best
    assert r.answer == best
    assert r.info["uncertainties"][1] == pytest.approx(-FORKED_LOGP[best])
    assert gen.held == set()


def test_mur_needs_logprobs():
    gen = chain_model()
    gen.capabilities = dataclasses.replace(gen.capabilities, logprobs=False, top_logprobs=False)
    with pytest.raises(ConfigError, match="logprobs"):
        run(gen, "mur", 4)


@pytest.mark.parametrize("calls", [1, 2, 3, 5, 7, 9])
def test_mur_frees_every_handle_when_the_budget_stops_it(calls):
    gen = chain_model()
    r = run(gen, "mur", 4, scorer=FakePotential(lambda before, step: 0.0), budget=Budget(calls=calls))
    assert r.usage.calls <= calls
    assert gen.held == set()


# -- the real embedded model -----------------------------------------------------------------------

QUESTION = "Tom has 3 boxes with 4 apples each. He eats 2 apples. How many are left?"


def _real(engine, strategy, n=4, budget=None, **options):
    from infscale.params import SamplingParams

    return asyncio.run(infscale.run(Problem(question=QUESTION, id="apples"), engine, strategy, n=n, seed=1,
                                    params=SamplingParams(temperature=0.8, max_tokens=96), budget=budget,
                                    options={"max_steps": 6, **options}))


def _all_freed(engine):
    asyncio.run(asyncio.sleep(0.1))
    return engine.stats()["live"] == 0 and engine.stats()["free_sequences"] == engine.n_seq_max


@pytest.mark.slow
def test_mur_on_the_engine_searches_uncertain_steps_answers_and_keeps_its_budget(engine):
    # gamma = 1: the threshold is the momentum itself, which trails the uncertainties, so steps are searched
    r = _real(engine, "mur", gamma=1.0)
    assert r.answer is not None and r.info["searched_steps"] >= 1
    assert len(r.info["thresholds"]) == len(r.info["uncertainties"]) >= 2
    assert _all_freed(engine)
    cap = r.usage.generated_tokens // 2
    capped = _real(engine, "mur", budget=Budget(generated_tokens=cap), gamma=1.0)
    assert capped.usage.generated_tokens <= cap and capped.candidates
    assert _all_freed(engine)
