"""Bounded work per request (issue 17, item 4) and a clean shutdown (item 7, the server part):
every setting that scales work has a documented, server-configurable maximum; the CLI refuses
absurd widths before it loads anything; a request has a wall-time limit after which it answers
from what it has (or 504s); 250 clients get 429s with Retry-After and no 5xx; a shutdown answers
OpenAI-shaped 503 ``shutting_down`` (streams end with that error event)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

import infscale
from infscale.cli.main import main
from infscale.errors import ConfigError
from infscale.params import MAX_SETTING, MAX_WIDTH
from infscale.server import ServerThread, create_app
from infscale.strategies import STRATEGIES
from infscale.strategies.base import ParamSpec
from infscale.testing import FakeGenerator, answer_model
from infscale.types import Completion

USER = [{"role": "user", "content": "What is 6 * 7?"}]


def fake(*, delay: float = 0.0) -> FakeGenerator:
    g = FakeGenerator(answer_model(0.6), delay=delay)
    g.model_name = "fake"
    return g


def chat(http, model="majority-4:fake", **body):
    return http.post("/v1/chat/completions", json={"model": model, "messages": USER, **body})


# ------------------------------------------------------------------------- the limits


def test_every_integer_setting_of_every_strategy_has_a_maximum():
    """Strategies added later get one too: an integer ParamSpec without ``hi`` gets
    MAX_SETTING."""
    for name, strat in STRATEGIES.items():
        for key, spec in strat.params.items():
            if spec.type is int and spec.choices is None:
                assert spec.hi is not None or spec.max is not None, (name, key)
    assert ParamSpec(int, 2, "sweeps", lo=1).max == MAX_SETTING
    assert ParamSpec(int, 2, "sweeps", lo=1, max=16).max == 16
    assert ParamSpec(float, 0.5, "a share", lo=0, hi=1).max is None


def test_a_setting_past_its_maximum_is_one_line():
    strat = STRATEGIES["particle-gibbs"]
    with pytest.raises(ConfigError, match=r"param iterations: 1000000 exceeds the work limit 1024"):
        strat.options({"iterations": "1000000"})
    assert strat.options({"iterations": "1000000"}, {"iterations": 2_000_000})["iterations"] == 1_000_000
    with pytest.raises(ConfigError, match=r"exceeds the work limit 4"):
        strat.options({"iterations": 5}, {"iterations": 4})
    with pytest.raises(ConfigError, match="cannot read"):
        strat.options({"iterations": 2.5})


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["ask", "x", "--n", "1000000"], ["n: got 1000000", str(MAX_WIDTH)]),
        (["ask", "x", "-s", "particle-gibbs", "--param", "iterations=1000000"], ["param iterations", "work limit"]),
        (["eval", "-d", "arith", "--budgets", "1,1000000"], ["budgets", str(MAX_WIDTH)]),
        (["eval", "-d", "arith", "--seeds", "100000"], ["seeds", str(MAX_SETTING)]),
    ],
)
def test_the_cli_refuses_absurd_work_before_loading_anything(argv, names, capsys, monkeypatch, tmp_path):
    import infscale.api

    def no_load(*a, **kw):
        raise AssertionError("a model was loaded before the limits were checked")

    monkeypatch.setattr(infscale.api, "load_generator", no_load)
    monkeypatch.setenv("INFSCALE_HOME", str(tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("infscale: error:"), err
    for n in names:
        assert n in err


def test_the_python_api_bounds_n():
    with pytest.raises(ConfigError, match="work limit"):
        infscale.ask("What is 2+2?", n=MAX_WIDTH + 1, generator=fake())


# ---------------------------------------------------------------------------- the server


def test_the_server_refuses_unbounded_work_and_its_limits_are_configurable():
    body = {"infscale": {"strategy": "particle-gibbs", "budget": 2, "params": {"iterations": 1_000_000}}}
    with ServerThread(create_app(fake())) as srv, httpx.Client(base_url=srv.root_url, timeout=30) as http:
        r = chat(http, model="fake", **body)
        assert r.status_code == 400 and r.json()["error"]["param"] == "infscale.params.iterations"
        assert "work limit" in r.json()["error"]["message"]
        card = next(c for c in http.get("/v1/models").json()["data"] if c["id"] == "particle-gibbs:fake")
        assert card["infscale"]["params"]["iterations"]["max"] == MAX_SETTING
    app = create_app(fake(), param_limits={"iterations": 3})
    with ServerThread(app) as srv, httpx.Client(base_url=srv.root_url, timeout=30) as http:
        body["infscale"]["params"]["iterations"] = 4
        r = chat(http, model="fake", **body)
        assert r.status_code == 400 and "exceeds the work limit 3" in r.json()["error"]["message"]
        body["infscale"]["params"]["iterations"] = 3
        assert chat(http, model="fake", **body).status_code == 200
    with pytest.raises(ConfigError, match="max-param"):
        create_app(fake(), param_limits={"no_such_setting": 3})
    with pytest.raises(ConfigError, match="max-request-seconds"):
        create_app(fake(), max_request_seconds=0)


class _Slow(FakeGenerator):
    """Sample i takes 0.1 * (i + 1) seconds (a slow model serving one sample after another)."""

    async def generate(self, requests):
        index = int(str(requests[0].key).rsplit("/", 1)[-1])
        await asyncio.sleep(0.1 * (index + 1))
        return await super().generate(requests)


def test_a_request_past_its_wall_time_answers_from_what_it_has():
    """64 samples would take 6.4 s; the server's 1 s limit stops the strategy, which answers
    from the samples it has."""
    gen = _Slow(answer_model(0.6))
    gen.model_name = "fake"
    app = create_app(gen, max_request_seconds=1.0)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.root_url, timeout=30) as http:
        t0 = time.monotonic()
        r = chat(http, model="majority-64:fake")
        elapsed = time.monotonic() - t0
    assert r.status_code == 200, r.text
    ext = r.json()["infscale"]
    assert ext["stopped_early"] and 1 <= ext["candidates"] < 64 and ext["answer"] is not None
    assert elapsed < 4.0


class _Stubborn(FakeGenerator):
    """A backend call that ignores the first cancellation (a stuck client library)."""

    async def generate(self, requests):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(30)
        return [Completion(text="Answer: 1", finish_reason="stop") for _ in requests]


def test_a_request_that_cannot_answer_in_time_gets_a_504(monkeypatch):
    import infscale.server.serving as serving

    monkeypatch.setattr(serving, "REQUEST_GRACE_SECONDS", 0.5)
    gen = _Stubborn(answer_model(0.6))
    gen.model_name = "fake"
    with ServerThread(create_app(gen, max_request_seconds=0.5)) as srv, \
            httpx.Client(base_url=srv.root_url, timeout=30) as http:
        t0 = time.monotonic()
        r = chat(http)
        assert r.status_code == 504 and r.json()["error"]["code"] == "request_timeout"
        assert time.monotonic() - t0 < 5


def test_250_clients_get_429_with_retry_after_and_no_5xx():
    """The probe campaign's load case: 250 clients at once against 2 slots and a queue of 8."""
    app = create_app(fake(delay=0.05), max_concurrency=2, max_queue=8)
    statuses: list[int] = []
    retry_after: list[str | None] = []
    lock = threading.Lock()

    async def one(http):
        r = await http.post("/v1/chat/completions", json={"model": "majority-2:fake", "messages": USER})
        with lock:
            statuses.append(r.status_code)
            if r.status_code == 429:
                retry_after.append(r.headers.get("retry-after"))

    async def crowd(url):
        limits = httpx.Limits(max_connections=250)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
            await asyncio.gather(*(one(http) for _ in range(250)))

    with ServerThread(app) as srv:
        asyncio.run(crowd(srv.root_url))
    assert len(statuses) == 250
    assert not any(s >= 500 for s in statuses)
    assert statuses.count(200) >= 10 and statuses.count(429) >= 100
    assert set(statuses) <= {200, 429}
    assert all(v is not None and int(v) >= 1 for v in retry_after)


# ------------------------------------------------------------------------------ shutdown


def test_shutdown_answers_503_shutting_down_and_ends_streams_with_an_error_event():
    gen = fake(delay=60)
    srv = ServerThread(create_app(gen, shutdown_timeout=0.5), timeout_graceful_shutdown=5).start()
    out: dict[str, httpx.Response | str] = {}

    def plain():
        with httpx.Client(base_url=srv.root_url, timeout=30) as http:
            out["plain"] = chat(http, model="majority-3:fake")

    def stream():
        with httpx.Client(base_url=srv.root_url, timeout=30) as http:
            with http.stream("POST", "/v1/chat/completions",
                             json={"model": "majority-3:fake", "messages": USER, "stream": True}) as r:
                out["stream"] = "".join(r.iter_text())

    threads = [threading.Thread(target=plain), threading.Thread(target=stream)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while gen.calls < 2 and time.monotonic() < deadline:  # both are generating
        time.sleep(0.02)
    t0 = time.monotonic()
    srv.stop()
    for t in threads:
        t.join(10)
    assert time.monotonic() - t0 < 5
    r = out["plain"]
    assert r.status_code == 503 and r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == "shutting_down" and r.headers.get("retry-after")
    events = [line[len("data: "):] for line in out["stream"].splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "shutting_down"
