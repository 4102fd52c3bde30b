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


# -- φ-decoding: the pieces on known values ------------------------------------------------------

from infscale.strategies.search.policies import cluster_texts, phi_probabilities, width_prune  # noqa: E402


def test_width_pruning_keeps_steps_within_sigma_of_the_mean_and_refills_to_the_beams():
    rng = np.random.default_rng(0)
    logps = [-0.1, -0.2, -0.3, -2.0]  # mean -0.65, std 0.7826: the cut is -1.4326
    assert width_prune(logps, 1.0, 1, 0.1, rng) == [0, 1, 2]
    assert width_prune(logps, 0.0, 1, 0.1, rng) == [0, 1, 2]  # the cut is the mean
    assert width_prune(logps, 3.0, 1, 0.1, rng) == [0, 1, 2, 3]
    assert width_prune(logps, 1.0, 4, 0.1, rng) == [0, 1, 2, 3]  # refilled to the beams to fill
    assert width_prune([-0.5] * 3, 1.0, 1, 0.1, rng) == [0, 1, 2]  # all equal: all kept
    # the refill draws ∝ softmax(logp / tau) among the pruned: -0.2 beats -3.0 almost surely
    picks = [width_prune([0.0, 0.0, 0.0, 0.0, -0.2, -3.0], 0.1, 5, 0.1, np.random.default_rng(s)) for s in range(20)]
    assert all(p[:4] == [0, 1, 2, 3] and len(p) == 5 for p in picks)
    assert sum(p[4] == 4 for p in picks) >= 19


def test_selection_probabilities_are_the_mean_of_advantage_and_cluster_softmaxes():
    adv, labels, tau = [0.2, 0.1, 0.3], [0, 0, 1], 0.1
    ea = [math.exp(a / tau) for a in adv]
    ec = [math.exp(s) for s in (2 / 3, 2 / 3, 1 / 3)]
    expected = [(x / sum(ea) + y / sum(ec)) / 2 for x, y in zip(ea, ec)]
    assert phi_probabilities(adv, labels, tau) == pytest.approx(expected)
    assert phi_probabilities(adv, labels, tau).sum() == pytest.approx(1.0)


def test_clusters_group_alike_foresights():
    rng = np.random.default_rng(0)
    texts = ["3 + 4 = 7\n", "3 + 4 = 7\n", "3 + 4 = 7 so\n", "apples are red\n", "apples are red\n"]
    labels = cluster_texts(texts, 2, rng)
    assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4]
    assert cluster_texts(["x"] * 4, 3, rng) == [0, 0, 0, 0]  # one distinct text: one cluster
    assert len(set(cluster_texts(["a b", "c d", "e f"], 3, rng))) == 3


# -- φ-decoding on a fake with known foresight values ------------------------------------------------

# the step a; then m or n (as likely as each other); m is followed by u, n by v; then the answer
def foresight_model(steps):
    if not steps:
        return {"a": 1.0}
    if len(steps) == 1:
        return {"m": 0.5, "n": 0.5}
    if len(steps) == 2:
        return {"u": 1.0} if steps[1] == "m" else {"v": 1.0}
    return {"Answer: 1" if steps[2] == "u" else "Answer: 2": 1.0}


PHI_LOGP = {"a": -2.0, "m": -1.5, "n": -1.5, "u": -0.2, "v": -0.3, "Answer: 1": -0.1, "Answer: 2": -0.1}


@pytest.mark.parametrize("seed", range(5))
def test_phi_values_candidates_by_their_foresight_and_draws_by_the_documented_distribution(seed):
    gen = ScriptedSteps(foresight_model, PHI_LOGP)
    # n = 8, foresight 1: C = 8 // 2 = 4 candidates per round, one beam of 4
    r = run(gen, "phi-decoding", 8, seed=seed, min_foresight=2, consensus=0.7)
    steps = {n["id"]: n["step"].strip() for t in r.trace for n in t["nodes"]}
    first, second = r.trace[0], r.trace[1]
    # round 1: four "a"s, each foreseeing m or n (-1.5): advantage -1.5 - 0 < 0, so no cluster, the
    # draw is softmax(A / 0.1) over the four: uniform
    assert [steps[f["id"]] for f in first["foresight"]] == ["a"] * 4
    assert all(f["value"] == pytest.approx(-1.5) and f["adv"] == pytest.approx(-1.5) for f in first["foresight"])
    assert [f["p"] for f in first["foresight"]] == pytest.approx([0.25] * 4)
    assert first["consensus"] == 0.0 and len(first["selected"]) == 1
    # round 2: m foresees u (-0.2), n foresees v (-0.3); the beam's previous value is -1.5, so the
    # advantages are 1.3 and 1.2 (all > 0): clusters by foresight text, p = mean of the two softmaxes
    fs = second["foresight"]
    kinds = [steps[f["id"]] for f in fs]
    assert set(kinds) <= {"m", "n"} and len(kinds) == 4
    adv = [1.3 if k == "m" else 1.2 for k in kinds]
    assert [f["adv"] for f in fs] == pytest.approx(adv)
    share = [kinds.count(k) / 4 for k in kinds]
    ea = [math.exp(a / 0.1) for a in adv]
    ec = [math.exp(s) for s in share]
    assert [f["p"] for f in fs] == pytest.approx([(x / sum(ea) + y / sum(ec)) / 2 for x, y in zip(ea, ec)])
    assert len({f["cluster"] for f in fs}) == len(set(kinds))  # u-foresights and v-foresights apart
    assert second["consensus"] == pytest.approx(max(share))
    # in-depth pruning: from round min_foresight = 2 on, exactly when the largest cluster holds > 0.7;
    # then the beam goes on alone, one child a round, without foresight
    assert not first["depth_pruned"]
    rounds = r.trace[1:]
    stop = next(i for i, t in enumerate(rounds) if t.get("depth_pruned"))
    assert all(t["depth_pruned"] == (t["consensus"] > 0.7) for t in rounds[: stop + 1])
    assert all("foresight" not in t and len(t["nodes"]) == 1 for t in rounds[stop + 1:])
    assert r.info["foresight_stopped_at"] == stop + 2
    assert second["depth_pruned"] == (max(share) > 0.7)
    chosen = steps[second["selected"][0]]
    assert r.answer == ("1" if chosen == "m" else "2")
    assert gen.held == set() and gen.handed_out > 0


def test_phi_prunes_in_width_before_any_foresight():
    # at the first step "weak" is far less likely per token than the others: it is pruned and never rolled out
    def model(steps):
        if not steps:
            return {"s1": 0.3, "s2": 0.3, "s3": 0.2, "weak": 0.2}
        return {"Answer: " + steps[0]: 1.0}

    gen = ScriptedSteps(model, {"s1": -0.1, "s2": -0.1, "s3": -0.1, "weak": -3.0})
    calls = []
    for seed in range(4, 14):  # these seeds draw one, two and three weak steps
        r = run(gen, "phi-decoding", 8, seed=seed)
        first = r.trace[0]["foresight"]
        steps = {n["id"]: n["step"].strip() for n in r.trace[0]["nodes"]}
        logps = np.array([f["logp"] for f in first])
        cut = logps.mean() - logps.std()  # sigma = 1; one beam, so no refill is ever needed
        for f in first:
            assert f["pruned"] == (f["logp"] < cut)
            assert (f["value"] is None) == f["pruned"] and (f["p"] == 0.0) == f["pruned"]
        weak = sum(steps[f["id"]] == "weak" for f in first)
        if weak == 1:  # one weak step among three likely ones: -3.0 < -0.825 - 1.256
            assert [f["pruned"] for f in first] == [steps[f["id"]] == "weak" for f in first]
        calls.append(weak)
        assert gen.held == set()
    assert calls.count(1) > 0  # the seeds did draw a lone weak step


def test_phi_calls_no_scorer_and_continues_text_where_the_generator_cannot_fork():
    model = FakeStepModel(foresight_model)
    model.logp = PHI_LOGP
    gen = ScriptedSteps(foresight_model, PHI_LOGP)
    gen.capabilities = dataclasses.replace(gen.capabilities, kv_fork=False)
    scorer = FakePotential(lambda before, step: 0.0)
    r = run(gen, "phi-decoding", 8, scorer=scorer)
    assert r.answer in ("1", "2") and scorer.calls == 0
    assert gen.handed_out == 0


@pytest.mark.parametrize("calls", [1, 2, 3, 5, 8, 13])
def test_phi_frees_every_handle_when_the_budget_stops_it(calls):
    gen = ScriptedSteps(foresight_model, PHI_LOGP)
    r = run(gen, "phi-decoding", 8, budget=Budget(calls=calls))
    assert r.usage.calls <= calls
    assert gen.held == set()


@pytest.mark.slow
def test_phi_decoding_on_the_engine_forks_its_foresight_answers_and_keeps_its_budget(engine):
    r = _real(engine, "phi-decoding")
    print("phi-decoding on the engine:", r.answer, r.usage, r.info)
    assert r.candidates and r.info["foresight_rounds"] >= 1
    assert r.answer is not None
    assert _all_freed(engine)
    cap = r.usage.generated_tokens // 2
    capped = _real(engine, "phi-decoding", budget=Budget(generated_tokens=cap))
    print("capped at", cap, ":", capped.usage)
    # the meter caps each request at what is left; requests of one batch (here 2 candidates, or
    # their rollouts) may together overshoot by up to one batch (README, Budgets)
    assert capped.usage.generated_tokens <= cap + 2 * 64 and capped.stopped_early
    assert _all_freed(engine)
