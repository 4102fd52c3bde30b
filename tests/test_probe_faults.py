"""Capability probing is not fooled by one transient fault (issue 17, item 3): a feature is
unsupported only on a consistent answer; a probe request that fails is retried later; the
feature probes run concurrently."""

from __future__ import annotations

import logging
import threading
import time

import pytest

import infscale.backends.openai_http as openai_http
from infscale.backends.openai_http import OpenAIGenerator
from infscale.backends.probe import CONSISTENT_REFUSALS
from infscale.errors import BackendError
from infscale.params import SamplingParams
from infscale.testing import FaultProxy
from infscale.testing.fake_openai import FakeOpenAIServer
from infscale.types import GenRequest

FAST = {"backoff_base": 0.01, "backoff_cap": 0.05}


def chat(content: str) -> GenRequest:
    return GenRequest(SamplingParams(max_tokens=8), messages=[{"role": "user", "content": content}])


def warnings_of(caplog) -> str:
    return " ".join(r.getMessage() for r in caplog.records if r.name == "infscale" and r.levelno == logging.WARNING)


def once(match) -> callable:
    """A ``reject`` that refuses the first request ``match(path, body)`` accepts with a 400."""
    state = {"left": 1}
    lock = threading.Lock()

    def reject(path, body):
        with lock:
            if state["left"] and match(path, body):
                state["left"] -= 1
                return 400, "transient refusal"
        return None

    return reject


async def test_one_400_on_the_chat_probe_does_not_switch_to_completions():
    with FakeOpenAIServer(reject=once(lambda path, body: path.endswith("/chat/completions"))) as srv:
        async with OpenAIGenerator(srv.base_url, **FAST) as gen:
            probe = await gen.ensure_ready()
            assert probe["endpoint"] == "chat" and gen.capabilities.chat_template
            (c,) = await gen.generate([chat("hi")])
    assert c.text == "Answer: 42"
    assert not any(p == "/v1/completions" for _, p, _ in srv.calls)


async def test_one_400_on_the_logprobs_probe_is_not_no_logprobs(caplog):
    with FakeOpenAIServer(reject=once(lambda path, body: bool(body.get("logprobs")))) as srv:
        async with OpenAIGenerator(srv.base_url, **FAST) as gen:
            await gen.ensure_ready()
            assert gen.capabilities.logprobs and gen.capabilities.top_logprobs
    assert "no logprobs" not in warnings_of(caplog)


async def test_a_consistent_refusal_is_unsupported():
    with FakeOpenAIServer(reject=lambda path, body: (400, "logprobs are not supported") if body.get("logprobs")
                          else None) as srv:
        async with OpenAIGenerator(srv.base_url, **FAST) as gen:
            probe = await gen.ensure_ready()
    assert gen.capabilities.logprobs is False
    assert "not supported" in probe["unsupported"]["logprobs"] and probe["failed"] == {}
    assert sum(1 for b in srv.requests if b.get("logprobs")) == CONSISTENT_REFUSALS


async def test_a_hung_n_probe_is_not_ignores_n_and_is_probed_again(caplog, monkeypatch):
    monkeypatch.setattr(openai_http, "REPROBE_SECONDS", 0.0)
    hung = {"left": 1}
    lock = threading.Lock()

    def delay(body):
        with lock:
            if body.get("n") == 2 and hung["left"]:
                hung["left"] -= 1
                return 1.5
        return 0.0

    with FakeOpenAIServer(delay=delay) as srv:
        async with OpenAIGenerator(srv.base_url, read_timeout=0.3, max_retries=0, **FAST) as gen:
            probe = await gen.ensure_ready()
            assert "n" in probe["failed"] and "ReadTimeout" in probe["failed"]["n"]
            assert gen.capabilities.native_n is False  # assumed, for now
            text = warnings_of(caplog)
            assert "ignores n" not in text and "could not be checked for n" in text
            await gen.generate([chat("hi")])  # the next call probes again
            assert gen.probes == 2 and gen.capabilities.native_n is True and gen.probe["failed"] == {}
            await gen.generate([chat("hi")])
            assert gen.probes == 2  # settled: no more probes


async def test_a_failed_endpoint_probe_decides_nothing_and_is_tried_again():
    with FakeOpenAIServer() as srv, FaultProxy(srv.root_url, script=["503"] * 2) as proxy:
        async with OpenAIGenerator(proxy.base_url, model="fake-model", max_retries=1, **FAST) as gen:
            with pytest.raises(BackendError, match="could not probe") as info:
                await gen.ensure_ready()
            assert info.value.retryable
            probe = await gen.ensure_ready()
    assert probe["endpoint"] == "chat"
    assert not any(p == "/v1/completions" for p, _ in proxy.events)


async def test_feature_probes_run_concurrently():
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def delay(body):  # count the probe requests in flight at the server
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.3)
        with lock:
            state["now"] -= 1
        return 0.0

    with FakeOpenAIServer(delay=delay) as srv:
        async with OpenAIGenerator(srv.base_url, model="fake-model", **FAST) as gen:
            await gen.ensure_ready()
    assert len(srv.requests) >= 6
    assert state["max"] >= 5, state  # n, max_completion_tokens, logprobs, prefill (2), stop: at once


async def test_ten_percent_400s_do_not_downgrade_a_server():
    """The probe campaign's case: a proxy failing 10% of requests with 400. A probe decides
    "unsupported" only on CONSISTENT_REFUSALS (3) alike refusals, so each of the 5 decisions
    checked per generator (endpoint, n, logprobs, prefill, stop) is downgraded with probability
    0.1^3 = 0.001: over 20 generators 0.1 downgrades are expected, 3 or more with probability
    about 2e-4. A probe deciding on one 400 would downgrade about 10 (2 or fewer with
    probability about 0.2%). (The concurrent probes reach the proxy in an
    order that varies, so the exact count cannot be scripted.)"""
    downgrades = []
    with FakeOpenAIServer() as srv, FaultProxy(srv.root_url, {"400": 0.1}, seed=11) as proxy:
        for _ in range(20):
            async with OpenAIGenerator(proxy.base_url, model="fake-model", **FAST) as gen:
                await gen.ensure_ready()
                caps = gen.capabilities
                lost = {"endpoint": gen.probe["endpoint"] != "chat", "logprobs": not caps.logprobs,
                        "n": not caps.native_n, "prefill": not caps.prefill, "stop": not caps.reports_stop}
                downgrades += [name for name, bad in lost.items() if bad]
    assert proxy.counts.get("400", 0) >= 10
    assert len(downgrades) <= 2, downgrades
