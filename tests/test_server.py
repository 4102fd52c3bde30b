"""The OpenAI-compatible server against fake generators (fast, deterministic, no downloads).

Servers run with uvicorn on 127.0.0.1 in a thread (:class:`infscale.server.ServerThread`), so
every test speaks real HTTP: the official ``openai`` client, raw httpx and server-sent events.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from contextlib import contextmanager

import httpx
import pytest

pytest.importorskip("fastapi", reason="needs the server extra: pip install 'infscale[server]'")
openai = pytest.importorskip("openai")

from infscale.errors import BackendError  # noqa: E402
from infscale.server import ServerThread, create_app, parse_model_name  # noqa: E402
from infscale.server.serving import Admission  # noqa: E402
from infscale.server.metrics import Metrics  # noqa: E402
from infscale.testing import FakeGenerator, answer_model  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

USER = [{"role": "user", "content": "What is 6 * 7?"}]


def fake(reply=None, *, delay: float = 0.0, name: str = "fake") -> FakeGenerator:
    g = FakeGenerator(reply or answer_model(0.6), delay=delay)
    g.model_name = name
    return g


@contextmanager
def serving(gen, *, grace: float = 5.0, **kw):
    with ServerThread(create_app(gen, **kw), timeout_graceful_shutdown=grace) as srv:
        yield srv


def wait_until(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


@pytest.fixture(scope="module")
def server():
    gen = fake()
    with serving(gen) as srv:
        srv.gen = gen
        yield srv


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.root_url, timeout=30) as c:
        yield c


def chat(http, model="majority-8:fake", messages=USER, **body):
    return http.post("/v1/chat/completions", json={"model": model, "messages": messages, **body})


# ---------------------------------------------------------------------- model names


def test_model_name_grammar():
    names = {"majority": 0, "best": 0, "best-of-n": 0, "particle-filter": 0}
    assert parse_model_name("majority-8:smollm2-135m", names) == ("majority", 8, "smollm2-135m")
    assert parse_model_name("majority:smollm2-135m", names) == ("majority", None, "smollm2-135m")
    assert parse_model_name("particle-filter-16:m", names) == ("particle-filter", 16, "m")
    # the longest registered name wins, and a budget is digits only
    assert parse_model_name("best-of-n-4:m", names) == ("best-of-n", 4, "m")
    assert parse_model_name("best-4:m", names) == ("best", 4, "m")
    assert parse_model_name("best-of-n-x:m", names) == (None, None, "best-of-n-x:m")
    # plain names, including names with a colon of their own
    assert parse_model_name("smollm2-135m", names) == (None, None, "smollm2-135m")
    assert parse_model_name("llama3:8b", names) == (None, None, "llama3:8b")
    assert parse_model_name("majority:llama3:8b", names) == ("majority", None, "llama3:8b")
    assert parse_model_name("majority:", names) == (None, None, "majority:")


def test_every_registered_strategy_is_reachable_by_model_name(http):
    from infscale import STRATEGIES

    ids = {m["id"] for m in http.get("/v1/models").json()["data"]}
    assert "fake" in ids
    for name in STRATEGIES:
        assert f"{name}:fake" in ids
        assert parse_model_name(f"{name}-3:fake") == (name, 3, "fake")


# ------------------------------------------------------------------------ responses


def test_strategy_response_carries_n_best_answers_and_the_distribution(http):
    r = chat(http, n=3, seed=1)
    assert r.status_code == 200, r.text
    d = r.json()
    ext = d["infscale"]
    assert d["object"] == "chat.completion" and d["model"] == "majority-8:fake"
    assert ext["strategy"] == "majority" and ext["budget"] == 8 and ext["candidates"] == 8
    assert abs(sum(m["weight"] for m in ext["distribution"]) - 1) < 1e-9
    top = [m["answer"] for m in ext["distribution"]][:3]
    assert ext["answers"] == top and ext["answer"] == top[0]
    assert len(d["choices"]) == len(top)
    for i, (choice, answer) in enumerate(zip(d["choices"], top)):
        assert choice["index"] == i
        assert choice["message"]["content"].endswith(f"Answer: {answer}")  # the full text of a member
    # usage counts every internal call
    assert ext["usage"]["calls"] == 8
    assert d["usage"]["completion_tokens"] == ext["usage"]["generated_tokens"] > 0
    assert d["usage"]["total_tokens"] == d["usage"]["prompt_tokens"] + d["usage"]["completion_tokens"]


def test_plain_model_samples_n_completions(http):
    d = chat(http, model="fake", n=3, seed=5).json()
    assert d["infscale"]["strategy"] == "sample" and d["infscale"]["budget"] == 3
    assert len(d["choices"]) == 3 and d["infscale"]["usage"]["calls"] == 3
    g = chat(http, model="fake", temperature=0).json()
    assert g["infscale"]["strategy"] == "greedy" and len(g["choices"]) == 1


def test_infscale_field_overrides_the_model_name_and_limits_apply(http):
    d = chat(http, model="fake", infscale={"strategy": "majority", "budget": 5}).json()
    assert d["infscale"]["strategy"] == "majority" and d["infscale"]["usage"]["calls"] == 5
    d = chat(http, model="majority-8:fake", infscale={"budget": 3}).json()
    assert d["infscale"]["budget"] == 3
    d = chat(http, infscale={"limits": {"calls": 2}}).json()
    assert d["infscale"]["usage"]["calls"] <= 2 and d["infscale"]["stopped_early"]
    d = chat(http, model="adaptive-16:fake", infscale={"params": {"threshold": 0.6, "min_samples": 2}}).json()
    assert d["infscale"]["strategy"] == "adaptive"


def test_same_seed_same_answer(http):
    a = chat(http, seed=11).json()
    b = chat(http, seed=11).json()
    assert a["infscale"]["distribution"] == b["infscale"]["distribution"]
    assert a["choices"] == b["choices"]


def test_max_tokens_bounds_each_sample():
    gen = fake(lambda req, rng: " ".join(["word"] * 50) + "\nAnswer: 42")
    with serving(gen) as srv, httpx.Client(base_url=srv.root_url) as http:
        d = chat(http, model="majority-4:fake", max_tokens=5).json()
        assert d["infscale"]["usage"]["generated_tokens"] <= 4 * 5
        assert d["choices"][0]["finish_reason"] == "length"


def test_multi_turn_messages_reach_the_generator_as_messages():
    seen = []

    def reply(req, rng):
        seen.append((req.messages, req.prompt))
        return "Answer: 4"

    convo = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": [{"type": "text", "text": "And 2 + "}, {"type": "text", "text": "2 again?"}]},
    ]
    with serving(fake(reply)) as srv, httpx.Client(base_url=srv.root_url) as http:
        assert chat(http, model="fake", messages=convo).status_code == 200
        msgs, prompt = seen[-1]
        assert prompt is None
        assert msgs == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 2 + 2 again?"},
        ]
        r = http.post("/v1/completions", json={"model": "majority-2:fake", "prompt": "Once upon a time"})
        assert r.status_code == 200 and r.json()["object"] == "text_completion"
        assert seen[-1] == (None, "Once upon a time")  # raw text, no chat template


def test_text_task_compares_by_normalised_exact_match():
    replies = ["Answer: Paris.", "answer:   PARIS", "Answer: paris!"]

    def reply(req, rng):
        return replies[int(rng.integers(3))]

    with serving(fake(reply)) as srv, httpx.Client(base_url=srv.root_url) as http:
        d = chat(http, model="majority-6:fake", infscale={"task": "text"}).json()
        assert [(m["answer"], m["count"]) for m in d["infscale"]["distribution"]] == [("paris", 6)]


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("body,status,param", [
    ({"messages": USER}, 400, "model"),
    ({"model": "fake", "messages": []}, 400, "messages"),
    ({"model": "fake", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
    ({"model": "fake", "messages": USER, "temperature": 3}, 400, "temperature"),
    ({"model": "fake", "messages": USER, "n": 0}, 400, "n"),
    ({"model": "fake", "messages": USER, "max_tokens": 10**6}, 400, "max_tokens"),
    ({"model": "fake", "messages": USER, "stop": ""}, 400, "stop"),
    ({"model": "other", "messages": USER}, 404, "model"),
    ({"model": "nope-3:fake", "messages": USER}, 400, "model"),
    ({"model": "majority-1000:fake", "messages": USER}, 400, "model"),
    ({"model": "fake", "messages": USER, "infscale": {"budget": 4}}, 400, "infscale.budget"),
    ({"model": "fake", "messages": USER, "infscale": {"strategy": "nope"}}, 400, "infscale.strategy"),
    ({"model": "majority:fake", "messages": USER, "infscale": {"budget": 65}}, 400, "infscale.budget"),
    ({"model": "majority:fake", "messages": USER, "infscale": {"params": {"x": 1}}}, 400, "infscale.params"),
    ({"model": "adaptive:fake", "messages": USER, "infscale": {"params": {"threshold": 2}}}, 400,
     "infscale.params.threshold"),
    ({"model": "majority:fake", "messages": USER, "infscale": {"scorer": "nope"}}, 400, "infscale.scorer"),
    ({"model": "majority:fake", "messages": USER, "infscale": {"task": "poetry"}}, 400, "infscale.task"),
    ({"model": "majority:fake", "messages": USER, "infscale": {"bugdet": 3}}, 400, "infscale.bugdet"),
])
def test_caller_faults_are_4xx_in_openai_shape_naming_the_parameter(http, body, status, param):
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and err["message"].startswith(param)


def test_malformed_bodies_and_unknown_routes(http):
    r = http.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = http.post("/v1/chat/completions", json=[1, 2])
    assert r.status_code == 400 and "error" in r.json()
    r = http.post("/v1/completions", json={"model": "fake", "prompt": ["a", "b"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = http.post("/v1/completions", json={"model": "fake", "prompt": "a", "best_of": 4})
    assert r.status_code == 400 and "best-of-n-4:fake" in r.json()["error"]["message"]
    r = http.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


class _Failing(FakeGenerator):
    def __init__(self, exc):
        super().__init__()
        self.exc = exc
        self.model_name = "fake"

    async def generate(self, requests):
        raise self.exc


@pytest.mark.parametrize("exc,status,code", [
    (BackendError("503 from http://b/v1: overloaded (gave up after 4 attempts)", retryable=True, status=503), 502,
     "backend_error"),
    (BackendError("ReadTimeout from http://b/v1: timed out", retryable=True), 504, "backend_timeout"),
    (RuntimeError("a bug of ours"), 500, "internal_error"),
])
def test_backend_faults_are_502_or_504_and_ours_500(exc, status, code):
    with serving(_Failing(exc)) as srv, httpx.Client(base_url=srv.root_url) as http:
        r = chat(http, model="majority-2:fake")
        assert r.status_code == status
        assert r.json()["error"]["code"] == code
        assert "a bug of ours" not in r.text  # internals are logged, not sent
        assert http.get("/health").json()["in_flight"] == 0


# ------------------------------------------------------------------- safety, limits


def test_api_key_is_required_when_set():
    with serving(fake(), api_key="sekret") as srv, httpx.Client(base_url=srv.root_url) as http:
        r = http.get("/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert r.headers["www-authenticate"] == "Bearer"
        assert http.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert chat(http).status_code == 401
        assert http.get("/metrics").status_code == 401
        assert http.get("/health").status_code == 200  # liveness stays open
        assert http.get("/v1/models", headers={"Authorization": "Bearer sekret"}).status_code == 200
        client = openai.OpenAI(base_url=srv.base_url, api_key="sekret", max_retries=0)
        assert client.chat.completions.create(model="fake", messages=USER).choices[0].message.content
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.base_url, api_key="wrong", max_retries=0).models.list()


def test_body_size_limit():
    with serving(fake(), max_body_bytes=4096) as srv, httpx.Client(base_url=srv.root_url) as http:
        big = [{"role": "user", "content": "x" * 5000}]
        r = chat(http, messages=big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

        def chunks():  # no Content-Length: counted as it arrives
            for _ in range(10):
                yield b" " * 1000

        r = http.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert chat(http).status_code == 200


def test_overload_answers_429_with_retry_after_not_failures():
    gen = fake(delay=0.4)
    with serving(gen, max_concurrency=2, max_queue=2) as srv:

        async def burst():
            async with httpx.AsyncClient(base_url=srv.root_url, timeout=30,
                                         limits=httpx.Limits(max_connections=20)) as c:
                body = {"model": "majority-1:fake", "messages": USER}
                return await asyncio.gather(*[c.post("/v1/chat/completions", json=body) for _ in range(10)])

        rs = asyncio.run(burst())
        codes = sorted(r.status_code for r in rs)
        assert codes == [200] * 4 + [429] * 6, codes  # 2 running + 2 queued; the rest refused at once
        refused = next(r for r in rs if r.status_code == 429)
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["type"] == "rate_limit_error"
        with httpx.Client(base_url=srv.root_url) as http:
            samples = scrape(http.get("/metrics").text)
            assert samples["infscale_requests_total", ("endpoint", "/v1/chat/completions"), ("status", "429")] == 6
            assert http.get("/health").json() == {"status": "ok", "model": "fake", "in_flight": 0, "queued": 0}


def test_admission_hands_slots_over_in_order_and_survives_cancellation():
    async def go():
        adm = Admission(1, 2, Metrics())
        await adm.acquire()
        order = []

        async def waiter(tag):
            await adm.acquire()
            order.append(tag)

        a = asyncio.ensure_future(waiter("a"))
        b = asyncio.ensure_future(waiter("b"))
        await asyncio.sleep(0)
        assert adm.queued == 2
        a.cancel()  # a queued request whose client left gives up its place
        await asyncio.sleep(0)
        adm.release()
        await b
        assert order == ["b"] and adm.active == 1 and adm.queued == 0
        adm.release()
        assert adm.active == 0

    asyncio.run(go())


def test_client_disconnect_cancels_outstanding_generation():
    gen = fake(delay=30)
    with serving(gen) as srv:
        with httpx.Client(base_url=srv.root_url, timeout=0.5) as http:
            with pytest.raises(httpx.ReadTimeout):
                chat(http, model="majority-4:fake")
        assert wait_until(lambda: gen.cancelled >= 4), gen.cancelled
        with httpx.Client(base_url=srv.root_url) as http:
            assert wait_until(lambda: http.get("/health").json()["in_flight"] == 0)
            assert scrape(http.get("/metrics").text)["infscale_cancelled_requests_total", ("reason", "disconnect")] == 1


def test_streaming_client_disconnect_cancels_outstanding_generation():
    gen = fake(delay=30)
    with serving(gen) as srv:
        with httpx.Client(base_url=srv.root_url, timeout=10) as http:
            with http.stream("POST", "/v1/chat/completions",
                             json={"model": "majority-4:fake", "messages": USER, "stream": True}) as r:
                assert r.status_code == 200
                first = next(r.iter_lines())
                assert first.startswith("data: ")
        assert wait_until(lambda: gen.cancelled >= 4), gen.cancelled
        with httpx.Client(base_url=srv.root_url) as http:
            assert wait_until(lambda: http.get("/health").json()["in_flight"] == 0)


def test_graceful_shutdown_finishes_in_flight_work():
    gen = fake(delay=0.5)
    srv = ServerThread(create_app(gen), timeout_graceful_shutdown=10).start()
    out = {}

    def call():
        with httpx.Client(base_url=srv.root_url, timeout=10) as http:
            out["r"] = chat(http, model="majority-2:fake")

    t = threading.Thread(target=call)
    t.start()
    # stop only once the request is in flight (a loaded machine may take a while to send it)
    deadline = time.monotonic() + 10
    while not gen_started(gen) and time.monotonic() < deadline:
        time.sleep(0.02)
    srv.stop()
    t.join(15)
    assert out["r"].status_code == 200 and out["r"].json()["infscale"]["usage"]["calls"] == 2


def test_shutdown_cancels_what_does_not_finish_in_time():
    gen = fake(delay=60)
    srv = ServerThread(create_app(gen, shutdown_timeout=0.2), timeout_graceful_shutdown=0.3).start()

    def call():
        try:
            with httpx.Client(base_url=srv.root_url, timeout=20) as http:
                chat(http, model="majority-3:fake")
        except httpx.HTTPError:
            pass

    t = threading.Thread(target=call, daemon=True)
    t.start()
    assert wait_until(lambda: gen.started >= 3)  # generating (a fixed sleep raced a loaded machine)
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 5
    assert wait_until(lambda: gen.cancelled >= 3), gen.cancelled


# --------------------------------------------------------------------------- streaming


def sse_events(text: str) -> list:
    out = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_stream_sends_the_answer_as_chunks_then_the_extension_usage_and_done(http):
    body = {"model": "majority-4:fake", "messages": USER, "stream": True, "seed": 3,
            "stream_options": {"include_usage": True}}
    events = sse_events(http.post("/v1/chat/completions", json=body).text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    whole = chat(http, model="majority-4:fake", seed=3).json()
    assert text == whole["choices"][0]["message"]["content"]
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finals[-1]["infscale"]["distribution"] == whole["infscale"]["distribution"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


class _Staggered(FakeGenerator):
    """Sample i finishes after 0.05 * (i + 1) seconds."""

    async def generate(self, requests):
        await asyncio.sleep(0.05 * (1 + int(requests[0].key.rsplit("/", 1)[-1])))
        return [self._one(r) for r in requests]


def test_stream_progress_for_clients_that_ask():
    gen = _Staggered(answer_model(0.6))
    gen.model_name = "fake"
    with serving(gen) as srv, httpx.Client(base_url=srv.root_url) as http:
        body = {"model": "majority-4:fake", "messages": USER, "stream": True, "infscale": {"progress": True}}
        events = sse_events(http.post("/v1/chat/completions", json=body).text)
        progress = [e["infscale"]["progress"] for e in events[:-1] if "progress" in e.get("infscale", {})]
        assert len(progress) >= 3 and progress[-1]["budget"] == 4 and progress[-1]["calls"] == 4
        assert all(e["choices"][0]["delta"] == {} for e in events[:-1] if "progress" in e.get("infscale", {}))
        assert [p["calls"] for p in progress] == sorted(p["calls"] for p in progress)
        plain = sse_events(http.post("/v1/chat/completions", json={**body, "infscale": {}}).text)
        assert not [e for e in plain[:-1] if "progress" in e.get("infscale", {})]


def test_stream_errors_after_start_are_an_error_event():
    with serving(_Failing(BackendError("boom", status=500))) as srv, httpx.Client(base_url=srv.root_url) as http:
        r = http.post("/v1/chat/completions", json={"model": "fake", "messages": USER, "stream": True})
        events = sse_events(r.text)
        assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "backend_error"
        with pytest.raises(openai.APIError):
            client = openai.OpenAI(base_url=srv.base_url, api_key="-", max_retries=0)
            list(client.chat.completions.create(model="fake", messages=USER, stream=True))


# ----------------------------------------------------------------- the official client


def test_openai_client_sync_async_and_streaming(server):
    client = openai.OpenAI(base_url=server.base_url, api_key="-", max_retries=0)
    ids = [m.id for m in client.models.list().data]
    assert "fake" in ids and "majority:fake" in ids
    assert client.models.retrieve("majority-8:fake").model_extra["infscale"]["budget"] == 8
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("majority-8:other")

    r = client.chat.completions.create(model="majority-8:fake", messages=USER, n=2, seed=7)
    ext = r.model_extra["infscale"]
    assert r.choices[0].message.content.endswith("Answer: " + ext["answer"])
    assert len(r.choices) == 2 and r.usage.completion_tokens == ext["usage"]["generated_tokens"]

    r = client.chat.completions.create(model="fake", messages=USER,
                                       extra_body={"infscale": {"strategy": "majority", "budget": 3}})
    assert r.model_extra["infscale"]["candidates"] == 3

    c = client.completions.create(model="majority-2:fake", prompt="Q: 6 * 7?\nA:", max_tokens=16)
    assert c.choices[0].text and c.model_extra["infscale"]["budget"] == 2

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="majority-999:fake", messages=USER)
    assert e.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=USER)

    stream = client.chat.completions.create(model="majority-4:fake", messages=USER, stream=True, seed=7,
                                            stream_options={"include_usage": True})
    parts, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    whole = client.chat.completions.create(model="majority-4:fake", messages=USER, seed=7)
    assert "".join(parts) == whole.choices[0].message.content and usage.total_tokens == whole.usage.total_tokens

    async def go():
        aclient = openai.AsyncOpenAI(base_url=server.base_url, api_key="-", max_retries=0)
        rs = await asyncio.gather(*[aclient.chat.completions.create(model="majority-4:fake", messages=USER, seed=s)
                                    for s in range(8)])
        texts = []
        async for chunk in await aclient.completions.create(model="fake", prompt="x", stream=True):
            texts.append(chunk.choices[0].text if chunk.choices else "")
        await aclient.close()
        return rs, "".join(texts)

    rs, streamed = asyncio.run(go())
    assert all(r.model_extra["infscale"]["candidates"] == 4 for r in rs)
    assert streamed.startswith("some work")


def scrape(text: str) -> dict[tuple, float]:
    """Every sample of a /metrics page, parsed by prometheus_client's own exposition parser:
    ``{(name, (label, value), ...): value}`` with the labels sorted."""
    return {(s.name, *sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_tokens_by_strategy_and_latency():
    with serving(fake()) as srv, httpx.Client(base_url=srv.root_url) as http:
        spent = [chat(http, model="majority-4:fake", seed=s).json()["infscale"]["usage"] for s in range(3)]
        resp = http.get("/metrics")
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = scrape(resp.text)
        gen_tokens = sum(u["generated_tokens"] for u in spent)
        assert gen_tokens > 0
        assert samples["infscale_tokens_total", ("kind", "generated"), ("strategy", "majority")] == gen_tokens
        assert samples["infscale_tokens_total", ("kind", "prompt"), ("strategy", "majority")] == sum(
            u["prompt_tokens"] for u in spent)
        assert samples["infscale_model_calls_total", ("strategy", "majority")] == 12
        chat_latency = (("endpoint", "/v1/chat/completions"), ("strategy", "majority"))
        assert samples[("infscale_request_duration_seconds_count", *chat_latency)] == 3
        assert samples[("infscale_request_duration_seconds_bucket", *chat_latency[:1], ("le", "+Inf"),
                        *chat_latency[1:])] == 3
        assert samples["infscale_requests_total", ("endpoint", "/v1/chat/completions"), ("status", "200")] == 3
        assert samples["infscale_queue_depth",] == 0 and samples["infscale_requests_in_flight",] == 0
        # exactly the documented series (docs/server.md), no `_created` timestamps
        names = {k[0] for k in samples}
        assert not [n for n in names if n.endswith("_created")]
        assert "# TYPE infscale_requests_total counter" in resp.text
        assert "# TYPE infscale_request_duration_seconds histogram" in resp.text


def test_metrics_registry_per_app():
    """Two apps in one process count separately (a registry per app, no duplicate registration)."""
    with serving(fake()) as a, serving(fake()) as b, httpx.Client() as http:
        http.post(a.root_url + "/v1/chat/completions", json={"model": "majority-2:fake", "messages": USER})
        sa, sb = scrape(http.get(a.root_url + "/metrics").text), scrape(http.get(b.root_url + "/metrics").text)
    key = ("infscale_model_calls_total", ("strategy", "majority"))
    assert sa[key] == 2 and key not in sb


def test_every_registered_strategy_answers_chat_and_completions(http):
    from infscale import STRATEGIES

    for name in STRATEGIES:
        r = chat(http, model=f"{name}-2:fake", seed=1, max_tokens=32)
        assert r.status_code == 200, (name, r.text)
        ext = r.json()["infscale"]
        assert ext["strategy"] == name and ext["usage"]["calls"] >= 1
        assert r.json()["usage"]["completion_tokens"] == ext["usage"]["generated_tokens"]
        r = http.post("/v1/completions", json={"model": f"{name}-2:fake", "prompt": "Q: 6 * 7?\nA:", "seed": 1,
                                               "max_tokens": 32})
        assert r.status_code == 200, (name, r.text)


def gen_started(gen) -> bool:
    """True once the fake generator has begun a request (its pending sleep counts)."""
    return getattr(gen, "started", 0) > 0
