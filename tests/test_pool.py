"""Many backends at once (BackendPool): least outstanding requests, ejection of a failing
backend and its return, no request lost when one dies mid-run; --backend-url given twice."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from infscale.api import load_generator
from infscale.backends.pool import BackendPool
from infscale.cli.main import main
from infscale.errors import ConfigError
from infscale.params import SamplingParams
from infscale.strategies.runner import run
from infscale.testing.fake_openai import FakeOpenAIServer
from infscale.types import GenRequest, Problem

MSG = [{"role": "user", "content": "What is 6 * 7?"}]


def reqs(k: int, max_tokens: int = 4) -> list[GenRequest]:
    return [GenRequest(params=SamplingParams(max_tokens=max_tokens, seed=i), messages=MSG) for i in range(k)]


def generations(srv: FakeOpenAIServer) -> int:
    return sum(1 for b in srv.requests if isinstance(b, dict) and (b.get("max_completion_tokens") or
                                                                   b.get("max_tokens") or 0) == 4)


async def test_requests_spread_by_least_outstanding():
    with FakeOpenAIServer(delay=0.02) as a, FakeOpenAIServer(delay=0.2) as b:
        async with BackendPool.from_urls([a.base_url, b.base_url]) as pool:
            outs = await pool.generate(reqs(40))
            assert [o.text for o in outs] == ["Answer: 42"] * 40
            served = {s["url"]: s["served"] for s in pool.stats()}
        # all 40 at once: each backend gets half at first; the fast one finishes its half first
        assert served[a.base_url] + served[b.base_url] == 40 and min(served.values()) >= 10
        # one at a time (nothing outstanding), the least recently used alternates
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        async with BackendPool.from_urls([a.base_url, b.base_url]) as pool:
            for r in reqs(6):
                await pool.generate([r])
        assert generations(a) == 3 and generations(b) == 3


async def test_slow_backend_gets_a_smaller_share_of_a_steady_stream():
    with FakeOpenAIServer(delay=0.01) as fast, FakeOpenAIServer(delay=0.3) as slow:
        async with BackendPool.from_urls([fast.base_url, slow.base_url]) as pool:
            sem = asyncio.Semaphore(4)

            async def one(r):
                async with sem:
                    return await pool.generate([r])

            await asyncio.gather(*(one(r) for r in reqs(40)))
        assert generations(fast) > 3 * generations(slow)


async def test_a_backend_that_dies_mid_run_loses_nothing():
    a = FakeOpenAIServer(delay=0.02).start()
    with FakeOpenAIServer(delay=0.02) as b:
        async with BackendPool.from_urls([a.base_url, b.base_url], eject_after=2, eject_seconds=60,
                                         connect_timeout=1.0, read_timeout=2.0) as pool:
            sem = asyncio.Semaphore(4)
            done = []

            async def one(r):
                async with sem:
                    (c,) = await pool.generate([r])
                    done.append(c)
                    if len(done) == 10:
                        a.kill()  # dies mid-run
                    return c

            outs = await asyncio.gather(*(one(r) for r in reqs(60)))
            assert len(outs) == 60 and all(o.text == "Answer: 42" for o in outs)
            stats = {s["url"]: s for s in pool.stats()}
            assert stats[a.base_url]["ejections"] >= 1 and stats[a.base_url]["out"]
            assert stats[b.base_url]["served"] >= 45  # a's share went to b


async def test_an_ejected_backend_is_tried_again_later_and_comes_back():
    down = {"on": True}
    reject = lambda path, body: (503, "scripted outage") if down["on"] and "messages" in body else None  # noqa: E731
    with FakeOpenAIServer(reject=reject) as a, FakeOpenAIServer() as b:
        async with BackendPool.from_urls([a.base_url, b.base_url], eject_after=1, eject_seconds=0.5,
                                         mode="full", max_retries=0) as pool:
            outs = await pool.generate(reqs(4))
            assert all(o.text == "Answer: 42" for o in outs)
            assert {s["url"]: s["out"] for s in pool.stats()}[a.base_url]
            down["on"] = False
            outs = await pool.generate(reqs(4))  # still out: everything goes to b
            assert {s["url"]: s["served"] for s in pool.stats()}[a.base_url] == 0
            await asyncio.sleep(0.6)
            await pool.generate(reqs(4))
            stats = {s["url"]: s for s in pool.stats()}
            assert stats[a.base_url]["served"] >= 1 and not stats[a.base_url]["out"]


async def test_a_refused_request_is_not_retried_elsewhere():
    reject = lambda path, body: (400, "bad request") if "messages" in body else None  # noqa: E731
    with FakeOpenAIServer(reject=reject) as a, FakeOpenAIServer(reject=reject) as b:
        async with BackendPool.from_urls([a.base_url, b.base_url], mode="full") as pool:
            with pytest.raises(Exception, match="bad request"):
                await pool.generate(reqs(1))
        assert generations(a) + generations(b) == 1


async def test_capabilities_are_the_intersection():
    with FakeOpenAIServer() as a, FakeOpenAIServer(ignore_continue_final_message=True) as b:
        async with BackendPool.from_urls([a.base_url, b.base_url]) as pool:
            await pool.ensure_ready()
            assert not pool.capabilities.prefill and pool.capabilities.logprobs


def test_pool_settings_are_checked():
    with pytest.raises(ConfigError, match="backend_url"):
        BackendPool.from_urls(["http://127.0.0.1:1/v1", "http://127.0.0.1:1/v1"])
    with pytest.raises(ConfigError, match="eject_after"):
        BackendPool.from_urls(["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"], eject_after=0)
    assert isinstance(load_generator(backend_url=["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]), BackendPool)


async def test_a_strategy_runs_over_two_backends():
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        async with BackendPool.from_urls([a.base_url, b.base_url]) as pool:
            result = await run(Problem(question="What is 6 * 7?"), pool, "majority", n=8, seed=0)
        assert result.answer == "42" and generations(a) + generations(b) == 0  # max_tokens is the default
        assert len(result.candidates) == 8


def test_cli_eval_with_two_backend_urls_one_dying(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": f"{i} + 1?", "answer": "42"}) + "\n" for i in range(6)))
    a = FakeOpenAIServer(delay=0.05).start()
    with FakeOpenAIServer(delay=0.05) as b:
        def kill():
            time.sleep(0.3)
            a.kill()
        import threading
        t = threading.Thread(target=kill)
        t.start()
        code = main(["eval", "--dataset", str(data), "--backend-url", a.base_url, "--backend-url", b.base_url,
                     "--strategies", "majority", "--budgets", "4", "--no-progress", "--no-html", "--json",
                     "--db", str(tmp_path / "runs.sqlite"), "--read-timeout", "2", "--connect-timeout", "1"])
        t.join()
    out = capsys.readouterr().out
    assert code == 0, out
    res = json.loads(out)
    row = res["results"][0]
    assert row["accuracy"] == 1.0


def test_serve_over_two_backends():
    pytest.importorskip("fastapi", reason="needs the server extra: pip install 'infscale[server]'")
    import httpx

    from infscale.server import ServerThread, create_app

    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        pool = BackendPool.from_urls([a.base_url, b.base_url])
        with ServerThread(create_app(pool), timeout_graceful_shutdown=5) as srv:
            r = httpx.post(srv.base_url + "/chat/completions", timeout=30,
                           json={"model": "majority-6:fake-model", "messages": MSG, "seed": 0})
        assert r.status_code == 200, r.text
        assert r.json()["infscale"]["answer"] == "42"
        assert len([x for x in a.requests if "messages" in x]) > 1 and len([x for x in b.requests if "messages" in x]) > 1
