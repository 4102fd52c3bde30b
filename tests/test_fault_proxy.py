"""The fault-injecting proxy (infscale.testing.FaultProxy), and the HTTP client behind it: each
fault kind is what it says, the retrying transport survives every retryable one, and its
timeouts and total retry time are configurable and bounded."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from infscale.backends.http import ENV_SETTINGS, HttpSettings, HttpTransport
from infscale.backends.openai_http import OpenAIGenerator
from infscale.errors import BackendError, ConfigError
from infscale.params import SamplingParams
from infscale.testing import FAULTS, FaultProxy
from infscale.testing.fake_openai import FakeOpenAIServer
from infscale.types import GenRequest

FAST = {"backoff_base": 0.01, "backoff_cap": 0.05}
BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def chat(content: str, seed: int = 0) -> GenRequest:
    return GenRequest(SamplingParams(max_tokens=8), messages=[{"role": "user", "content": content}], seed=seed)


@pytest.fixture
def upstream():
    with FakeOpenAIServer(reply=lambda src, body, i: f"Answer: {len(str(src))}") as srv:
        yield srv


_CLIENT: dict[str, httpx.Client] = {}


def _post(proxy: FaultProxy, timeout: float = 2.0) -> httpx.Response:
    # one client: making one costs ~0.1 s (a reset connection is dropped from its pool)
    if "c" not in _CLIENT:
        _CLIENT["c"] = httpx.Client()
    client = _CLIENT["c"]
    return client.post(proxy.base_url + "/chat/completions", json=BODY, timeout=timeout)


# ------------------------------------------------------------------ the proxy


def test_pass_through_forwards_and_records(upstream):
    with FaultProxy(upstream.root_url) as proxy:
        r = _post(proxy)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == upstream.behaviour.reply(
            BODY["messages"], BODY, 0)
        assert httpx.get(proxy.base_url + "/models").json()["data"][0]["id"] == "fake-model"
    assert proxy.events == [("/v1/chat/completions", "pass"), ("/v1/models", "pass")]
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("kind", ["500", "503", "429", "400"])
def test_status_faults_answer_without_reaching_the_upstream(upstream, kind):
    with FaultProxy(upstream.root_url, script=[kind], retry_after=2) as proxy:
        r = _post(proxy)
        assert r.status_code == int(kind)
        assert r.json()["error"]["type"] == "injected_fault"
        assert (r.headers.get("retry-after") == "2") == (kind in ("429", "503"))
        assert _post(proxy).status_code == 200  # the script is spent: the next one passes
    assert upstream.requests == [BODY]
    assert proxy.counts == {kind: 1, "pass": 1}


def test_reset_before_never_reaches_the_upstream(upstream):
    with FaultProxy(upstream.root_url, script=["reset_before"]) as proxy:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
            _post(proxy)
    assert upstream.requests == []


def test_reset_after_lets_the_upstream_answer_then_drops_it(upstream):
    with FaultProxy(upstream.root_url, script=["reset_after"]) as proxy:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            _post(proxy)
    assert upstream.requests == [BODY]  # the work was done upstream


def test_hang_holds_the_answer_until_the_client_gives_up(upstream):
    with FaultProxy(upstream.root_url, script=["hang"], hang_seconds=30) as proxy:
        t0 = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            _post(proxy, timeout=0.3)
        assert time.monotonic() - t0 < 2
    assert upstream.requests == []


def test_truncated_cut_and_empty_200s(upstream):
    with FaultProxy(upstream.root_url, script=["truncated", "empty", "cut"]) as proxy:
        r = _post(proxy)
        assert r.status_code == 200 and 0 < len(r.content) < 200
        with pytest.raises(ValueError):
            r.json()
        r = _post(proxy)
        assert r.status_code == 200 and r.content == b""
        with pytest.raises(httpx.RemoteProtocolError):  # the body ends before its Content-Length
            _post(proxy)


def test_shares_are_seeded_and_respected(upstream):
    shares = {"500": 0.2, "429": 0.1}

    def run() -> list[str]:
        with FaultProxy(upstream.root_url, shares, seed=7) as proxy:
            for _ in range(200):
                _post(proxy)
        return [k for _, k in proxy.events]

    kinds = run()
    assert kinds == run()  # one client in order: the same faults on every run
    # Binomial(200, p): 4 standard deviations either side
    for kind, p in shares.items():
        sd = (200 * p * (1 - p)) ** 0.5
        assert abs(kinds.count(kind) - 200 * p) <= 4 * sd


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultProxy("http://127.0.0.1:1", {"418": 0.1})
    with pytest.raises(ValueError, match="sum"):
        FaultProxy("http://127.0.0.1:1", {"500": 0.7, "503": 0.7})
    assert set(FAULTS) >= {"500", "503", "429", "400", "reset_before", "reset_after", "hang", "truncated", "empty"}


# --------------------------------------------------------- the client behind it


RETRYABLE_KINDS = ["500", "503", "429", "reset_before", "reset_after", "hang", "truncated", "cut", "empty"]


@pytest.mark.parametrize("kind", RETRYABLE_KINDS)
async def test_every_retryable_fault_is_retried_to_the_same_answer(upstream, kind):
    with FaultProxy(upstream.root_url, script=[kind], hang_seconds=30) as proxy:
        async with OpenAIGenerator(proxy.base_url, model="fake-model", mode="basic", read_timeout=0.5, **FAST) as gen:
            (c,) = await gen.generate([chat("what is 2+2?")])
    assert c.text == upstream.behaviour.reply([{"role": "user", "content": "what is 2+2?"}], {}, 0)
    assert proxy.counts == {kind: 1, "pass": 1}


async def test_a_400_is_not_retried(upstream):
    with FaultProxy(upstream.root_url, script=["400"]) as proxy:
        async with OpenAIGenerator(proxy.base_url, model="fake-model", mode="basic", **FAST) as gen:
            with pytest.raises(BackendError, match="400") as info:
                await gen.generate([chat("x")])
    assert not info.value.retryable
    assert proxy.counts == {"400": 1}


def test_settings_defaults_environment_and_arguments(monkeypatch):
    for var in ENV_SETTINGS.values():
        monkeypatch.delenv(var, raising=False)
    s = HttpSettings()
    assert (s.connect_timeout, s.read_timeout, s.max_retries, s.retry_seconds) == (10.0, 60.0, 3, 120.0)
    monkeypatch.setenv("INFSCALE_READ_TIMEOUT", "2.5")
    monkeypatch.setenv("INFSCALE_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("INFSCALE_MAX_RETRIES", "0")
    monkeypatch.setenv("INFSCALE_RETRY_SECONDS", "9")
    s = HttpSettings()
    assert (s.connect_timeout, s.read_timeout, s.max_retries, s.retry_seconds) == (1.0, 2.5, 0, 9.0)
    s = HttpSettings(read_timeout=7, max_retries=5)  # an argument beats the environment
    assert (s.read_timeout, s.max_retries) == (7.0, 5)
    t = HttpTransport(timeout=4)  # the older name of read_timeout
    assert t.httpx_timeout().read == 4 and t.httpx_timeout().connect == 1.0
    monkeypatch.setenv("INFSCALE_READ_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="INFSCALE_READ_TIMEOUT"):
        HttpSettings()
    monkeypatch.delenv("INFSCALE_READ_TIMEOUT")
    with pytest.raises(ConfigError, match="read_timeout"):
        HttpSettings(read_timeout=0)
    with pytest.raises(ConfigError, match="retry_seconds"):
        HttpSettings(retry_seconds=float("inf"))


async def test_total_retry_time_is_bounded(upstream):
    """Every attempt hangs: the request gives up after about retry_seconds, not
    (max_retries + 1) x read_timeout."""
    with FaultProxy(upstream.root_url, {"hang": 1.0}, hang_seconds=30) as proxy:
        async with OpenAIGenerator(proxy.base_url, model="fake-model", mode="basic", read_timeout=0.4,
                                   max_retries=50, retry_seconds=1.0, **FAST) as gen:
            t0 = time.monotonic()
            with pytest.raises(BackendError, match="retry time") as info:
                await gen.generate([chat("x")])
            elapsed = time.monotonic() - t0
    assert info.value.retryable
    assert 0.9 <= elapsed < 2.0
    assert 2 <= proxy.counts["hang"] <= 4


async def test_connect_timeout_applies_to_an_unreachable_server():
    # 10.255.255.1 is unroutable: the connection attempt hangs until the connect timeout
    gen = OpenAIGenerator("http://10.255.255.1:9/v1", model="m", mode="basic", connect_timeout=0.2, max_retries=0)
    t0 = time.monotonic()
    with pytest.raises(BackendError):
        await gen.generate([chat("x")])
    assert time.monotonic() - t0 < 2.0
    await gen.aclose()


async def test_twenty_percent_faults_with_hangs_lose_nothing(upstream):
    """20% injected faults (hangs among them) against the same requests clean: every
    completion equal, within 3x the clean wall time plus the hangs' bounded cost."""
    reqs = [chat(f"question {i}", seed=i) for i in range(60)]
    async with OpenAIGenerator(upstream.base_url, model="fake-model", mode="basic", **FAST) as gen:
        t0 = time.monotonic()
        clean = await gen.generate(reqs)
        clean_s = time.monotonic() - t0
    faults = {"500": 0.03, "503": 0.03, "429": 0.03, "reset_before": 0.02, "reset_after": 0.02, "hang": 0.03,
              "truncated": 0.02, "empty": 0.02}
    with FaultProxy(upstream.root_url, faults, seed=3, hang_seconds=30) as proxy:
        async with OpenAIGenerator(proxy.base_url, model="fake-model", mode="basic", read_timeout=0.3,
                                   max_retries=6, **FAST) as gen:
            t0 = time.monotonic()
            faulty = await gen.generate(reqs)
            faulty_s = time.monotonic() - t0
    assert [c.text for c in faulty] == [c.text for c in clean]
    assert [c.generated_tokens for c in faulty] == [c.generated_tokens for c in clean]
    assert proxy.faulted() >= 5
    # requests run 16 at once, so hangs overlap: a generous bound that 120 s x 4 attempts breaks
    assert faulty_s < 3 * clean_s + 2.0, (faulty_s, clean_s, proxy.counts)
