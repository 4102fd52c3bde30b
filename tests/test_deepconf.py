"""DeepConf offline and online on scripted fakes: exact filters, thresholds and stops."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import infscale
from infscale import Problem
from infscale.backends.openai_http import OpenAIGenerator
from infscale.errors import ConfigError
from infscale.strategies.confidence import (consensus, group_confidences, keep_top, online_threshold,
                                            trace_confidence)
from infscale.testing import FakeGenerator, answer_model
from infscale.testing.fake_openai import FakeOpenAIServer

SEED = 4
PROBLEM = Problem(id="p", question="What is 6 * 7?", reference="42")


# ---------------------------------------------------------------- the pieces, exactly


def test_keep_top_keeps_exactly_the_top_eta_percent():
    vals = [3.0, 1.0, 2.0, 5.0, 4.0]
    assert keep_top(vals, 40) == [False, False, False, True, True]
    assert keep_top(vals, 10) == [False, False, False, True, False]  # ceil(0.5) = 1
    assert keep_top(vals, 100) == [True] * 5
    assert keep_top([2.0, 2.0, 2.0, 1.0], 50) == [True, True, False, False]  # ties by order
    assert keep_top([math.nan, 1.0, 0.5], 34) == [False, True, True]  # NaN ranks last; ceil(1.02) = 2
    for m in range(1, 30):
        for eta in (10, 25, 50, 90):
            assert sum(keep_top(list(np.random.default_rng(m).random(m)), eta)) == max(1, math.ceil(m * eta / 100))


def test_group_and_trace_confidences():
    c = [4.0, 2.0, 6.0, 8.0, 1.0, 3.0]
    assert group_confidences(c, 2) == pytest.approx([3, 4, 7, 4.5, 2])
    assert group_confidences(c, 10) == pytest.approx([4.0])  # shorter than the window: one group
    assert trace_confidence(c, "lowest", 2) == pytest.approx(2.0)
    assert trace_confidence(c, "bottom10", 2) == pytest.approx(2.0)  # ceil(0.5) = 1 group
    assert trace_confidence(list(range(1, 22)), "bottom10", 1) == pytest.approx(2.0)  # lowest 3 of 21: 1, 2, 3
    assert trace_confidence(c, "tail", 2) == pytest.approx(2.0)
    assert trace_confidence(c, "mean", 2) == pytest.approx(4.0)
    assert math.isnan(trace_confidence([], "lowest", 2))


def test_online_threshold_is_the_stated_percentile():
    lows = [5.0, 1.0, 3.0, 9.0]
    assert online_threshold(lows, 10) == pytest.approx(np.percentile(lows, 90))
    assert online_threshold(lows, 90) == pytest.approx(1.0 + 0.1 * 3 * 2.0)  # 10th percentile, interpolated
    assert online_threshold([], 50) == -math.inf


# ---------------------------------------------------------------- scripted confidences

WRONG_ANSWER = "7"  # hesitant
SURE_WRONG = "8"  # wrong but sure of itself


def scripted(req, words):
    """Right traces (and "8") are sure throughout; "7" hesitates at its second token."""
    wrong = words and words[-1] == WRONG_ANSWER
    return [1.0 if wrong and i == 1 else 9.0 for i in range(len(words))]


def fake(p_correct=0.3, wrong=(WRONG_ANSWER,), **kw):
    return FakeGenerator(answer_model(p_correct, wrong=wrong), confidence=scripted, **kw)


async def test_offline_filter_and_weights_overturn_a_wrong_majority():
    maj = await infscale.run(PROBLEM, fake(), "majority", n=20, seed=1)
    assert maj.answer == WRONG_ANSWER
    r = await infscale.run(PROBLEM, fake(), "deepconf", n=20, seed=1, options={"eta": 25, "window": 2})
    n_right = sum(c.answer == "42" for c in r.candidates)
    assert 5 <= n_right < 10 and r.answer == "42"
    # exactly ceil(25% of 20) = 5 traces vote, and they are the confident (right) ones
    assert r.info["voting"] == 5 and all(r.candidates[[c.index for c in r.candidates].index(i)].answer == "42"
                                         for i in r.info["kept"])
    assert r.distribution[0].answer == "42" and r.distribution[0].weight == pytest.approx(1.0)
    assert r.usage.calls == 20  # the filter costs no call
    by = {c.index: c for c in r.candidates}
    assert all(by[i].confidence == pytest.approx(9.0 if by[i].answer == "42" else 5.0) for i in by)


async def test_offline_with_every_trace_kept_is_a_confidence_weighted_vote():
    r = await infscale.run(PROBLEM, fake(), "deepconf", n=20, seed=1, options={"eta": 100, "window": 2})
    right = sum(c.answer == "42" for c in r.candidates)
    share = 9.0 * right / (9.0 * right + 5.0 * (20 - right))
    w = {m.answer: m.weight for m in r.distribution}
    assert w["42"] == pytest.approx(share)


async def test_online_threshold_stops_and_consensus():
    gen = fake(p_correct=0.4, wrong=(WRONG_ANSWER, SURE_WRONG))
    r = await infscale.run(PROBLEM, gen, "deepconf-online", n=16, seed=SEED,
                           options={"eta": 50, "window": 2, "warmup": 4, "tau": 1.0})
    warm = [c for c in r.candidates if c.index < 4]
    assert {c.answer for c in warm} == {"42", "7", "8"}  # the seed gives a warm-up of all three
    lows = [5.0 if c.answer == WRONG_ANSWER else 9.0 for c in warm]
    assert r.info["threshold"] == pytest.approx(np.percentile(lows, 50))
    assert 5.0 < r.info["threshold"] <= 9.0  # the warm-up held both kinds
    later = [c for c in r.candidates if c.index >= 4]
    assert len(later) == 12 and r.info["waves"] == 4
    for c in later:  # "7" traces stop at their second token (window mean (9 + 1) / 2 = 5 < s)
        if c.finish_reason == "confidence":
            assert c.generated_tokens == 2 and c.answer is None
        else:
            assert c.answer in ("42", SURE_WRONG)
    stopped = [c for c in later if c.finish_reason == "confidence"]
    assert stopped and r.info["stopped_by_confidence"] == len(stopped)
    w = {m.answer: m.weight for m in r.distribution}
    assert w[WRONG_ANSWER] == 0.0 and w["42"] + w[SURE_WRONG] == pytest.approx(1.0)  # the warm-up "7" is filtered
    # the budget is charged only what was generated: 2 tokens per stopped trace
    assert r.usage.generated_tokens == sum(c.generated_tokens for c in r.candidates)


async def test_online_stops_sampling_at_consensus():
    gen = fake(p_correct=1.0)
    r = await infscale.run(PROBLEM, gen, "deepconf-online", n=16, seed=0, options={"warmup": 4, "tau": 0.95})
    assert gen.calls == 4 and r.stopped_early and r.answer == "42" and r.info["consensus"] == 1.0


async def test_deepconf_refuses_a_generator_without_confidence_in_one_line():
    gen = fake()
    gen.capabilities = dataclasses.replace(gen.capabilities, confidence=False)
    for name in ("deepconf", "deepconf-online"):
        with pytest.raises(ConfigError) as e:
            await infscale.run(PROBLEM, gen, name, n=4)
        assert "\n" not in str(e.value) and "per-token confidence" in str(e.value) and name in str(e.value)
    assert gen.calls == 0


async def test_deepconf_online_over_http_streams_and_without_logprobs_refuses():
    def reply(src, body, i):
        return "some work\nAnswer: " + ("7", "42", "8")[body.get("seed", 0) % 3]

    def conf(tokens, body):
        wrong = tokens and tokens[-1].strip() == "7"
        return [1.0 if wrong and i == 1 else 9.0 for i in range(len(tokens))]

    with FakeOpenAIServer(reply=reply, token_confidence=conf) as srv:
        # replies are a function of the request's seed: one request per sample (no n)
        gen = OpenAIGenerator(srv.base_url, native_n=False)
        r = await infscale.run(PROBLEM, gen, "deepconf-online", n=8, seed=2,
                               options={"eta": 50, "window": 2, "warmup": 4, "tau": 1.0})
        await gen.aclose()
        streamed = [b for b in srv.requests if b.get("stream")]
    assert {c.answer for c in r.candidates if c.index < 4} == {"7", "42", "8"}  # the seed's warm-up
    assert len(streamed) == 4
    assert all(c.answer in ("42", "8") for c in r.candidates if c.finish_reason != "confidence" and c.index >= 4)
    assert any(c.finish_reason == "confidence" for c in r.candidates)
    with FakeOpenAIServer(logprobs=False) as srv:
        gen = OpenAIGenerator(srv.base_url)
        with pytest.raises(ConfigError) as e:
            await infscale.run(PROBLEM, gen, "deepconf", n=4)
        await gen.aclose()
        generation = [b for b in srv.requests if "6 * 7" in str(b)]
    assert "\n" not in str(e.value) and "per-token confidence" in str(e.value) and not generation


def test_consensus_of_no_votes_is_zero():
    assert consensus([]) == 0.0
