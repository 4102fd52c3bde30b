"""temperature-mix and RPC (weighted by=prob) on fakes with known answers."""

from __future__ import annotations

import math

import pytest

import infscale
from infscale import Problem
from infscale.errors import ConfigError
from infscale.strategies.sample import parse_temperatures, rpc_log_weights
from infscale.testing import FakeGenerator
from infscale.types import Candidate, Completion

PROBLEM = Problem(id="t", question="What is 6 * 7?", reference="42")


async def test_temperature_mix_cycles_the_temperatures_and_votes():
    seen = []

    def reply(req, rng):
        seen.append((req.seed, req.params.temperature))
        return "Answer: 42" if req.params.temperature < 0.5 else "Answer: 7"

    r = await infscale.run(PROBLEM, FakeGenerator(reply), "temperature-mix", n=5,
                           options={"temperatures": "0.2, 0.9"})
    assert [t for _, t in seen] == [0.2, 0.9, 0.2, 0.9, 0.2]
    assert r.answer == "42" and r.usage.calls == 5  # 3 of 5 at 0.2; no scorer for a count vote
    # rule=best asks the scorer (self-eval by default): one more call per sample
    gen = FakeGenerator(reply, yes_prob=lambda req: 0.9 if "Answer: 7" in str(req.messages) else 0.2)
    r = await infscale.run(PROBLEM, gen, "temperature-mix", n=4, options={"rule": "best"})
    assert r.answer == "7" and r.usage.calls == 8


@pytest.mark.parametrize("raw", ["", "a,b", "0.5,3", "-1"])
def test_bad_temperatures_name_the_parameter(raw):
    with pytest.raises(ConfigError, match="param temperatures"):
        parse_temperatures(raw)
    with pytest.raises(ConfigError, match="param temperatures"):
        infscale.strategies.get_strategy("temperature-mix").options({"temperatures": raw})


def cand(i, p, text=None, answer="1"):
    tokens = 10
    return Candidate(text=text or f"path {i}", answer=answer, index=i, logprob=tokens * math.log(p),
                     generated_tokens=tokens)


def test_rpc_prunes_the_low_probability_cluster_below_the_mean():
    high = [0.90, 0.88, 0.92, 0.91, 0.89, 0.87]
    low = [0.30, 0.28, 0.33, 0.31]
    cands = [cand(i, p) for i, p in enumerate(high + low)]
    logw, pruned = rpc_log_weights(cands)
    assert pruned == [6, 7, 8, 9]
    assert all(w == -math.inf for w in logw[6:])
    assert logw[:6] == pytest.approx([math.log(p) for p in high])


def test_rpc_counts_a_repeated_path_once_and_needs_four_distinct_values_to_prune():
    cands = [cand(0, 0.5, "same"), cand(1, 0.5, "same"), cand(2, 0.2, "other"), cand(3, 0.5, "third")]
    logw, pruned = rpc_log_weights(cands)
    assert pruned == []  # 2 distinct probabilities: no mixture is fitted
    assert logw == pytest.approx([math.log(0.5), -math.inf, math.log(0.2), math.log(0.5)])


async def test_weighted_by_prob_is_rpc_by_default():
    texts = {0: "a\nAnswer: 7", 1: "a\nAnswer: 7", 2: "b\nAnswer: 42", 3: "c\nAnswer: 42"}

    class Gen(FakeGenerator):
        def _one(self, r):
            self.calls += 1
            i = int(r.key.split("/")[-1])
            return Completion(text=texts[i], finish_reason="stop", generated_tokens=2, logprobs=[-0.1, -0.1],
                              seed=r.seed)

    r = await infscale.run(PROBLEM, Gen(), "weighted", n=4, options={"by": "prob"})
    assert r.answer == "42" and r.info["pruned"] == []  # the repeated "7" path counts once: 1 vs 2
    r = await infscale.run(PROBLEM, Gen(), "weighted", n=4, options={"by": "prob", "prune": False})
    assert {m.answer: m.weight for m in r.distribution} == pytest.approx({"7": 0.5, "42": 0.5})
