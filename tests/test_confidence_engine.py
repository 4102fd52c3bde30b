"""Token confidence and the confidence stop rule: the shared rule, the sampler's formula, the
scripted fake, the HTTP generator against the fake OpenAI server (streamed logprobs) and the
embedded engine (slow)."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from infscale.backends.openai_http import OpenAIGenerator
from infscale.backends.sampling import log_softmax, token_confidence
from infscale.errors import ConfigError
from infscale.meter import Meter
from infscale.params import Budget, SamplingParams
from infscale.testing import FakeGenerator
from infscale.testing.fake_openai import FakeOpenAIServer, fake_tokens
from infscale.types import ConfidenceStop, GenRequest

# ---------------------------------------------------------------- the formula and the rule


def test_token_confidence_is_minus_the_mean_top_k_logprob():
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(5, 3000)) * 3).astype(np.float32)
    for k in (1, 5, 20):
        got = token_confidence(z, k)
        for i in range(5):
            ls = log_softmax(z[i])
            want = -np.sort(ls)[-k:].mean()
            assert got[i] == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_token_confidence_extremes():
    # k equally likely tokens holding all the mass: the smallest value, log k
    z = np.full((1, 100), -1e4, dtype=np.float32)
    z[0, :4] = 0.0
    assert token_confidence(z, 4)[0] == pytest.approx(math.log(4), abs=1e-4)
    # a sure model: the top token near 0, the others far below -> large
    z = np.zeros((1, 100), dtype=np.float32)
    z[0, 7] = 30.0
    assert token_confidence(z, 4)[0] > 20


def test_first_stop_is_the_first_full_window_below_the_threshold():
    rule = ConfidenceStop(window=3, threshold=5.0)
    assert rule.first_stop([9, 9, 1, 9, 9]) is None  # windows: 19/3, 19/3, 19/3
    assert rule.first_stop([9, 1, 1, 9]) == 3  # 11/3 < 5 at the third token
    assert rule.first_stop([1, 1]) is None  # never a full window
    assert rule.first_stop([6, 6, 6, 6, 2, 2]) == 5  # 14/3 at tokens 3..5
    assert rule.first_stop([5, 5, 5]) is None  # strictly below


@pytest.mark.parametrize("kw, param", [({"window": 0, "threshold": 1.0}, "stop_rule.window"),
                                        ({"window": 2.5, "threshold": 1.0}, "stop_rule.window"),
                                        ({"window": 4, "threshold": float("nan")}, "stop_rule.threshold")])
def test_rule_validation_names_the_parameter(kw, param):
    with pytest.raises(ConfigError, match=param):
        ConfidenceStop(**kw)


def test_a_stop_rule_needs_confidence_and_k_is_bounded():
    p = SamplingParams()
    with pytest.raises(ConfigError, match="stop_rule"):
        GenRequest(params=p, prompt="x", stop_rule=ConfidenceStop(4, 1.0))
    with pytest.raises(ConfigError, match="confidence"):
        GenRequest(params=p, prompt="x", confidence=21)


# ---------------------------------------------------------------- the scripted fake


def words_reply(n):
    return lambda req, rng: " ".join(f"w{i}" for i in range(n))


def test_the_fake_stops_exactly_where_the_rule_says_and_is_charged_only_that():
    script = [9.0] * 10 + [1.0] * 10  # window 4, threshold 5: (9 + 1 + 1 + 1) / 4 = 3 at token 13
    gen = FakeGenerator(words_reply(20), confidence=lambda req, words: script[: len(words)])
    rule = ConfidenceStop(window=4, threshold=5.0)
    p = SamplingParams(max_tokens=50)
    meter = Meter(gen, Budget())
    ruled, free = asyncio.run(meter.generate([GenRequest(params=p, prompt="q", confidence=5, stop_rule=rule),
                                              GenRequest(params=p, prompt="q", confidence=5)]))
    assert rule.first_stop(script) == 13
    assert ruled.finish_reason == "confidence" and ruled.generated_tokens == 13
    assert ruled.text.split() == [f"w{i}" for i in range(13)] and ruled.confidences == script[:13]
    assert free.finish_reason == "stop" and free.generated_tokens == 20 and free.confidences == script
    assert meter.usage.generated_tokens == 33


def test_the_fake_has_no_confidence_unless_asked():
    c = asyncio.run(FakeGenerator(words_reply(3)).generate([GenRequest(params=SamplingParams(), prompt="q")]))[0]
    assert c.confidences is None


# ---------------------------------------------------------------- HTTP: streamed logprobs

LONG = " ".join(f"w{i}" for i in range(120))


def long_reply(src, body, i):
    return LONG


def script(tokens, body):
    return [9.0 if i < 30 else 1.0 for i in range(len(tokens))]


@pytest.mark.parametrize("shape", ["chat", "completions"])
async def test_http_streams_and_closes_the_stream_when_the_rule_holds(shape):
    rule = ConfidenceStop(window=5, threshold=4.0)  # (9 + 9 + 1 + 1 + 1) / 5 = 4.2, (9 + 4) / 5 = 2.6: 34 tokens
    with FakeOpenAIServer(reply=long_reply, token_confidence=script, stream_delay=0.003) as srv:
        gen = OpenAIGenerator(srv.base_url, backoff_base=0.01, backoff_cap=0.05)
        kw = {"messages": [{"role": "user", "content": "go"}]} if shape == "chat" else {"prompt": "go"}
        p = SamplingParams(max_tokens=500)
        ruled, free = await gen.generate([GenRequest(params=p, confidence=3, stop_rule=rule, **kw),
                                          GenRequest(params=p, confidence=3, **kw)])
        await gen.aclose()
        for _ in range(100):  # the server notices the closed connection at its next writes
            if srv.streams:
                break
            await asyncio.sleep(0.02)
        streams = srv.streams
        bodies = [b for b in srv.requests if b.get("stream")]
    assert gen.capabilities.confidence
    assert ruled.finish_reason == "confidence" and ruled.generated_tokens == 34
    assert ruled.confidences == pytest.approx([9.0] * 30 + [1.0] * 4)
    assert fake_tokens(ruled.text) == fake_tokens(LONG)[:34]
    assert free.finish_reason == "stop" and free.generated_tokens == 120 and len(free.confidences) == 120
    assert len(bodies) == 1 and bodies[0]["stream_options"] == {"include_usage": True}
    top_key = "top_logprobs" if shape == "chat" else "logprobs"
    assert bodies[0][top_key] == 3
    assert len(streams) == 1 and streams[0]["closed_early"] and streams[0]["sent"] < 120


async def test_http_stream_to_the_end_reports_the_servers_usage():
    rule = ConfidenceStop(window=5, threshold=0.5)  # never holds
    with FakeOpenAIServer(reply=long_reply, token_confidence=script) as srv:
        gen = OpenAIGenerator(srv.base_url)
        c = (await gen.generate([GenRequest(params=SamplingParams(max_tokens=50, stop=("w40",)), prompt="go",
                                            confidence=2, stop_rule=rule)]))[0]
        await gen.aclose()
    assert c.finish_reason == "stop" and c.stop == "w40"
    assert c.generated_tokens == 40 and len(c.confidences) == 40 and c.text.endswith("w39")
    assert c.prompt_tokens == 1


async def test_http_without_top_logprobs_refuses_confidence_in_one_line():
    with FakeOpenAIServer(logprobs=False) as srv:
        gen = OpenAIGenerator(srv.base_url)
        await gen.ensure_ready()
        assert not gen.capabilities.confidence
        with pytest.raises(ConfigError) as e:
            await gen.generate([GenRequest(params=SamplingParams(), prompt="go", confidence=5)])
        await gen.aclose()
    msg = str(e.value)
    assert "\n" not in msg and "confidence" in msg and "top_logprobs" in msg
    meter = Meter(gen)
    with FakeOpenAIServer(logprobs=False) as srv:
        gen = OpenAIGenerator(srv.base_url)
        meter = Meter(gen)
        with pytest.raises(ConfigError, match="per-token confidence"):
            await meter.require("confidence", who="strategy 'x'", param="strategy")
        await gen.aclose()


# ---------------------------------------------------------------- the embedded engine (slow)

MSGS = [{"role": "user", "content": "What is 17 times 23? Think step by step."}]


@pytest.mark.slow
def test_engine_confidence_matches_the_formula_and_the_rule_stops_and_frees(engine):
    p = SamplingParams(temperature=1.0, max_tokens=48)
    free_before = engine.stats()["free_sequences"]
    outs = asyncio.run(engine.generate([GenRequest(params=p, messages=MSGS, seed=i, confidence=20) for i in range(3)]))
    for o in outs:
        assert len(o.confidences) == o.generated_tokens and all(c >= math.log(20) - 1e-6 for c in o.confidences)
    # a threshold between the first trace's lowest and highest window mean: the rule must fire
    w = 4
    means = [sum(outs[0].confidences[i:i + w]) / w for i in range(len(outs[0].confidences) - w + 1)]
    rule = ConfidenceStop(window=w, threshold=(min(means) + max(means)) / 2)
    before = engine.evaluated_tokens
    stopped = asyncio.run(engine.generate([GenRequest(params=p, messages=MSGS, seed=i, confidence=20, stop_rule=rule)
                                           for i in range(3)]))
    assert any(o.finish_reason == "confidence" for o in stopped)
    for o in stopped:
        if o.finish_reason == "confidence":
            assert rule.first_stop(o.confidences) == o.generated_tokens < p.max_tokens
        else:  # an end of text or a stop string at the token where the rule first holds takes precedence
            assert rule.first_stop(o.confidences[:-1]) is None
    # the stopped sequences were freed at once and read nothing after their last token
    assert engine.stats()["free_sequences"] == free_before
    prompt = stopped[0].prompt_tokens
    assert engine.evaluated_tokens - before == prompt + sum(o.generated_tokens - 1 for o in stopped)
