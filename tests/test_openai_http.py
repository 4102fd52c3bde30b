"""The OpenAI HTTP generator against the stdlib fake server (fast, deterministic)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import httpx
import pytest

from infscale.backends.http import error_message as _error_message
from infscale.backends.http import normalise_base_url
from infscale.backends.openai_http import OpenAIGenerator
from infscale.backends.probe import map_finish_reason as _map_finish_reason
from infscale.errors import BackendError, ConfigError
from infscale.params import SamplingParams
from infscale.testing.fake_openai import FakeOpenAIServer
from infscale.types import GenRequest

FAST = {"backoff_base": 0.01, "backoff_cap": 0.05}


def chat(content: str, **params) -> GenRequest:
    seed = params.pop("req_seed", None)
    prefix = params.pop("prefix", "")
    return GenRequest(SamplingParams(**params), messages=[{"role": "user", "content": content}], seed=seed, prefix=prefix)


def last_user(body: dict) -> str:
    return next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")


def infscale_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "infscale" and r.levelno == logging.WARNING]


def generation_bodies(srv: FakeOpenAIServer, marker: str) -> list[dict]:
    """Bodies of real (non-probe) requests: those whose text contains ``marker``."""
    out = []
    for b in srv.requests:
        text = b.get("prompt") if "prompt" in b else " ".join(m["content"] for m in b["messages"])
        if marker in text:
            out.append(b)
    return out


# ---------------------------------------------------------------- ordering


@pytest.mark.asyncio
async def test_order_preserved_and_concurrency_bounded():
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def delay(body):
        msgs = body.get("messages") or []
        if not msgs or not msgs[-1]["content"].startswith("q"):
            return 0.0
        i = int(msgs[-1]["content"][1:])
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.02 * (8 - i))  # later requests answer first
        with lock:
            state["now"] -= 1
        return 0.0

    def reply(messages, body, index):
        return "echo " + messages[-1]["content"]

    with FakeOpenAIServer(reply=reply, delay=delay) as srv:
        async with OpenAIGenerator(srv.base_url, max_concurrency=3) as gen:
            out = await gen.generate([chat(f"q{i}") for i in range(8)])
    assert [c.text for c in out] == [f"echo q{i}" for i in range(8)]
    assert 1 < state["max"] <= 3


@pytest.mark.asyncio
async def test_empty_batch_sends_nothing():
    with FakeOpenAIServer() as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            assert await gen.generate([]) == []
        assert srv.calls == []


# ----------------------------------------------------------- param mapping


@pytest.mark.asyncio
async def test_chat_param_mapping():
    with FakeOpenAIServer() as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            await gen.generate([
                chat("full", temperature=0.3, top_p=0.9, top_k=40, min_p=0.05, max_tokens=17,
                     stop=("\n\n", "END"), seed=5, logprobs=True, top_logprobs=3, req_seed=123),
                chat("plain", temperature=0.0, seed=9, logprobs=False),
            ])
        (full,) = generation_bodies(srv, "full")
        (plain,) = generation_bodies(srv, "plain")
    assert full["model"] == "fake-model"
    assert full["temperature"] == 0.3 and full["top_p"] == 0.9
    assert full["top_k"] == 40 and full["min_p"] == 0.05
    assert full["max_completion_tokens"] == 17 and "max_tokens" not in full  # the fake honours it
    assert full["stop"] == ["\n\n", "END"]
    assert full["seed"] == 123  # the request's own seed wins
    assert full["logprobs"] is True and full["top_logprobs"] == 3
    assert "n" not in full and full["stream"] is False
    assert "top_k" not in plain and "min_p" not in plain and "stop" not in plain
    assert plain["seed"] == 9  # params.seed when the request has none
    assert "logprobs" not in plain and "top_logprobs" not in plain
    assert plain["temperature"] == 0.0


@pytest.mark.asyncio
async def test_completions_param_mapping_and_prefix():
    with FakeOpenAIServer() as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            out = await gen.generate([
                GenRequest(SamplingParams(max_tokens=7, logprobs=True, top_logprobs=0), prompt="p1 Q:", prefix=" A:"),
                GenRequest(SamplingParams(logprobs=True, top_logprobs=4), prompt="p2"),
                GenRequest(SamplingParams(logprobs=False, seed=None), prompt="p3"),
            ])
        bodies = {b["prompt"]: b for b in srv.requests if "prompt" in b}
    assert bodies["p1 Q: A:"]["logprobs"] == 1  # logprobs without top -> 1
    assert bodies["p1 Q: A:"]["max_tokens"] == 7 and "max_completion_tokens" not in bodies["p1 Q: A:"]
    assert bodies["p2"]["logprobs"] == 4
    assert "logprobs" not in bodies["p3"] and "seed" not in bodies["p3"]
    assert out[0].text == "Answer: 42"  # the continuation only, not the prefix


# --------------------------------------------------------------- probing


@pytest.mark.asyncio
async def test_honouring_server_probe_no_warning(caplog):
    caplog.set_level(logging.WARNING, logger="infscale")
    with FakeOpenAIServer() as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            await gen.generate([chat("x")])
            caps, probe = gen.capabilities, gen.probe
    assert caps.native_n and caps.logprobs and caps.top_logprobs and caps.prefill and caps.chat_template
    assert not caps.kv_fork
    assert probe["max_tokens_param"] == "max_completion_tokens"
    assert infscale_warnings(caplog) == []


@pytest.mark.asyncio
async def test_ignored_n_and_max_completion_tokens_detected_once_and_compensated(caplog):
    caplog.set_level(logging.WARNING, logger="infscale")

    def reply(source, body, index):
        return "one two three four five six seven eight"

    with FakeOpenAIServer(reply=reply, ignore_n=True, ignore_max_completion_tokens=True) as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            out = await gen.generate([chat(f"ask{i}", max_tokens=3) for i in range(3)])
            out += await gen.generate([chat("again", max_tokens=2)])
            assert gen.capabilities.native_n is False
            assert gen.probe["n"] is False and gen.probe["n_choices"] == 1
            assert gen.probe["max_completion_tokens"] is False
            assert gen.probe["max_tokens_param"] == "max_tokens"
        real = generation_bodies(srv, "ask") + generation_bodies(srv, "again")
        probes_with_n = [b for b in srv.requests if b.get("n") == 2]
    warnings = infscale_warnings(caplog)
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "ignores n" in msg and "one request per sample" in msg
    assert "ignores max_completion_tokens" in msg and "max_tokens instead" in msg
    assert len(probes_with_n) == 1  # probed once
    assert len(real) == 4 and all("n" not in b for b in real)  # one request per sample
    assert all("max_completion_tokens" not in b and "max_tokens" in b for b in real)
    assert [c.generated_tokens for c in out] == [3, 3, 3, 2]  # the cap really holds
    assert all(c.finish_reason == "length" for c in out)


@pytest.mark.asyncio
async def test_probe_runs_once_under_concurrent_first_calls():
    with FakeOpenAIServer() as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            await asyncio.gather(gen.generate([chat("a")]), gen.generate([chat("b")]), gen.generate([chat("c")]))
        assert sum(1 for b in srv.requests if b.get("n") == 2) == 1
        assert sum(1 for m, p, _ in srv.calls if p == "/v1/models") == 1


@pytest.mark.asyncio
async def test_model_taken_from_models_endpoint():
    with FakeOpenAIServer(models=("first-model", "second-model")) as srv:
        async with OpenAIGenerator(srv.base_url, mode="basic") as gen:
            await gen.generate([chat("x")])
            assert gen.model == "first-model"
        assert srv.requests[-1]["model"] == "first-model"


@pytest.mark.asyncio
async def test_modes_skip_the_probe():
    with FakeOpenAIServer() as srv:
        async with OpenAIGenerator(srv.base_url, model="fake-model", mode="basic") as gen:
            await gen.generate([chat("x", max_tokens=5)])
            assert gen.capabilities.native_n is False and gen.capabilities.prefill is False
        async with OpenAIGenerator(srv.base_url, model="fake-model", mode="full") as gen:
            await gen.generate([chat("y", max_tokens=5)])
        bodies = srv.requests
    assert len(bodies) == 2
    assert bodies[0]["max_tokens"] == 5 and bodies[1]["max_completion_tokens"] == 5
    with pytest.raises(ConfigError, match="mode"):
        OpenAIGenerator("http://127.0.0.1:1", mode="fast")


@pytest.mark.asyncio
async def test_server_without_chat_serves_prompts_only(caplog):
    caplog.set_level(logging.WARNING, logger="infscale")

    def reject(path, body):
        return (404, "no chat template") if path.endswith("/chat/completions") else None

    with FakeOpenAIServer(reject=reject) as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            (c,) = await gen.generate([GenRequest(SamplingParams(), prompt="Q: 1+1?\nA:")])
            assert gen.probe["endpoint"] == "completions" and gen.capabilities.chat_template is False
            assert gen.capabilities.native_n is True and gen.capabilities.logprobs is True
            with pytest.raises(ConfigError, match="no working chat endpoint"):
                await gen.generate([chat("x")])
    assert c.text == "Answer: 42"
    (warning,) = infscale_warnings(caplog)
    assert "chat endpoint fails" in warning.getMessage()


@pytest.mark.asyncio
async def test_feature_probe_failing_with_500_means_unsupported():
    def reject(path, body):
        return (500, "n is not supported") if body.get("n") == 2 else None

    with FakeOpenAIServer(reject=reject) as srv:
        async with OpenAIGenerator(srv.base_url, **FAST) as gen:
            (c,) = await gen.generate([chat("x")])
            assert gen.capabilities.native_n is False and "n is not supported" in gen.probe["errors"]["n"]
    assert c.text == "Answer: 42"


# ----------------------------------------------------------------- errors


@pytest.mark.asyncio
async def test_retry_on_503_then_success():
    with FakeOpenAIServer(fail_times=2, fail_status=503) as srv:
        async with OpenAIGenerator(srv.base_url, model="fake-model", mode="basic", **FAST) as gen:
            out = await gen.generate([chat("x")])
        assert out[0].text == "Answer: 42"
        assert len(srv.requests) == 3  # two failures, one success


@pytest.mark.asyncio
async def test_retry_on_429_with_retry_after_during_probe():
    with FakeOpenAIServer(fail_times=1, fail_status=429, retry_after=0) as srv:
        async with OpenAIGenerator(srv.base_url, **FAST) as gen:
            out = await gen.generate([chat("x")])
        assert out[0].text == "Answer: 42"
        assert srv.requests[0] == srv.requests[1]  # the failed probe request was repeated


@pytest.mark.asyncio
async def test_no_retry_on_400_with_server_message():
    with FakeOpenAIServer() as srv:
        async with OpenAIGenerator(srv.base_url, model="fake-model", mode="basic", **FAST) as gen:
            with pytest.raises(BackendError) as info:
                await gen.generate([chat("x", temperature=3.0)])
        assert len(srv.requests) == 1
    err = info.value
    assert err.retryable is False and err.status == 400
    assert str(err).startswith(f"400 from {srv.base_url}/chat/completions: ")
    assert "temperature must be between 0 and 2" in str(err)


@pytest.mark.asyncio
async def test_unknown_model_is_fatal():
    with FakeOpenAIServer() as srv:
        async with OpenAIGenerator(srv.base_url, model="nope", mode="basic", **FAST) as gen:
            with pytest.raises(BackendError, match="404 from .*: The model 'nope' does not exist") as info:
                await gen.generate([chat("x")])
    assert info.value.retryable is False


@pytest.mark.asyncio
async def test_retries_exhausted_is_retryable():
    with FakeOpenAIServer(fail_times=100, fail_status=503) as srv:
        async with OpenAIGenerator(srv.base_url, model="fake-model", mode="basic", max_retries=2, **FAST) as gen:
            with pytest.raises(BackendError) as info:
                await gen.generate([chat("x")])
        assert len(srv.requests) == 3  # 1 + max_retries
    assert info.value.retryable is True and info.value.status == 503
    assert "scripted failure" in str(info.value) and "3 attempts" in str(info.value)


@pytest.mark.asyncio
async def test_connection_refused_is_retryable():
    with FakeOpenAIServer() as srv:
        url = srv.base_url
    # the server is gone: nothing listens on the port any more
    async with OpenAIGenerator(url, model="m", mode="basic", max_retries=1, **FAST) as gen:
        with pytest.raises(BackendError) as info:
            await gen.generate([chat("x")])
    assert info.value.retryable is True and "ConnectError" in str(info.value)


@pytest.mark.asyncio
async def test_one_failure_cancels_the_rest_of_the_batch():
    def reject(path, body):
        return (400, "bad question") if last_user(body) == "bad" else None

    def delay(body):
        return 2.0 if body.get("messages") and last_user(body) == "slow" else 0.0

    with FakeOpenAIServer(reject=reject, delay=delay) as srv:
        async with OpenAIGenerator(srv.base_url, model="fake-model", mode="basic", **FAST) as gen:
            t0 = time.monotonic()
            with pytest.raises(BackendError, match="bad question"):
                await gen.generate([chat("slow"), chat("bad")])
            assert time.monotonic() - t0 < 1.5
            assert gen.transport.semaphore._value == gen.max_concurrency


def test_retry_delay_is_bounded_and_honours_retry_after():
    gen = OpenAIGenerator("http://127.0.0.1:1")
    assert [gen.transport.retry_delay(a, None) for a in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert gen.transport.retry_delay(0, 3.0) == 3.0
    assert gen.transport.retry_delay(0, 60.0) == 8.0


def test_error_message_extraction():
    req = httpx.Request("POST", "http://x/v1/chat/completions")
    openai = httpx.Response(400, json={"error": {"message": "bad temperature", "type": "x"}}, request=req)
    fastapi = httpx.Response(422, json={"detail": [{"msg": "field required"}]}, request=req)
    plain = httpx.Response(500, text="boom", request=req)
    assert _error_message(openai) == "bad temperature"
    assert "field required" in _error_message(fastapi)
    assert _error_message(plain) == "boom"


def test_finish_reason_mapping():
    assert _map_finish_reason("stop")[0] == "stop"
    assert _map_finish_reason(None)[0] == "stop"
    assert _map_finish_reason("eos")[0] == "stop"
    assert _map_finish_reason("length")[0] == "length"
    assert _map_finish_reason("abort")[0] == "cancelled"
    assert _map_finish_reason("content_filter") == ("error", "the server's content filter stopped the completion")


# ---------------------------------------------------------------- results


@pytest.mark.asyncio
async def test_logprobs_usage_and_seed_parsed():
    with FakeOpenAIServer() as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            c_chat, c_plain, c_comp = await gen.generate([
                chat("x", top_logprobs=2, req_seed=77),
                chat("y", logprobs=True, top_logprobs=0),
                GenRequest(SamplingParams(top_logprobs=3), prompt="one two three"),
            ])
    assert c_chat.text == "Answer: 42" and c_chat.finish_reason == "stop"
    assert c_chat.generated_tokens == 2 and c_chat.prompt_tokens > 0
    assert c_chat.logprobs == [-0.1, -0.1] and c_chat.sampled_logprobs == c_chat.logprobs
    assert c_chat.logprob == pytest.approx(-0.2)
    assert c_chat.top_logprobs == [{"Answer:": -0.1, " alt1": -3.0}, {" 42": -0.1, " alt1": -3.0}]
    assert c_chat.seed == 77
    assert c_plain.logprobs == [-0.1, -0.1] and c_plain.top_logprobs is None
    assert c_comp.prompt_tokens == 3 and c_comp.logprobs == [-0.1, -0.1]
    assert c_comp.top_logprobs is not None and len(c_comp.top_logprobs[0]) == 3


@pytest.mark.asyncio
async def test_stop_and_length_finish_reasons():
    def reply(source, body, index):
        return "alpha beta END gamma delta"

    with FakeOpenAIServer(reply=reply) as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            stopped, capped = await gen.generate([chat("a", stop=("END",)), chat("b", max_tokens=2)])
    assert stopped.text == "alpha beta" and stopped.finish_reason == "stop"
    assert capped.text == "alpha beta" and capped.finish_reason == "length" and capped.generated_tokens == 2


@pytest.mark.asyncio
async def test_missing_usage_estimated_with_one_warning(caplog):
    caplog.set_level(logging.WARNING, logger="infscale")
    with FakeOpenAIServer(usage=False, reply=lambda s, b, i: "x" * 40) as srv:
        async with OpenAIGenerator(srv.base_url, model="fake-model", mode="basic") as gen:
            with_lp, without_lp = await gen.generate([chat("a"), chat("b", logprobs=False)])
            await gen.generate([chat("c")])
    assert with_lp.generated_tokens == 1  # one logprob entry
    assert without_lp.generated_tokens == 10  # len(text) // 4
    assert with_lp.prompt_tokens == 0
    warnings = infscale_warnings(caplog)
    assert len(warnings) == 1 and "no usage" in warnings[0].getMessage()


# ----------------------------------------------------------------- prefill


@pytest.mark.asyncio
async def test_prefill_via_continue_final_message():
    with FakeOpenAIServer(reply=lambda s, b, i: " so the answer is 7.") as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            (c,) = await gen.generate([chat("what?", prefix="Let me think")])
            assert gen.capabilities.prefill is True
        (body,) = generation_bodies(srv, "what?")[-1:]
    assert body["messages"][-1] == {"role": "assistant", "content": "Let me think"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert c.text == " so the answer is 7."


@pytest.mark.asyncio
async def test_prefill_unsupported_raises_for_chat_but_prompt_still_works(caplog):
    caplog.set_level(logging.WARNING, logger="infscale")
    with FakeOpenAIServer(ignore_continue_final_message=True) as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            with pytest.raises(ConfigError, match="continue_final_message"):
                await gen.generate([chat("q", prefix="Let me think")])
            assert gen.capabilities.prefill is False
            (c,) = await gen.generate([GenRequest(SamplingParams(), prompt="Q: q\nA:", prefix=" Let me think")])
        assert srv.requests[-1]["prompt"] == "Q: q\nA: Let me think"
        assert not generation_bodies(srv, "Let me think")[:-1]  # the chat request was never sent
    assert c.text == "Answer: 42"
    assert len(infscale_warnings(caplog)) == 1


# ------------------------------------------------------------------- misc


@pytest.mark.parametrize(
    "given",
    [
        "http://127.0.0.1:8080",
        "http://127.0.0.1:8080/",
        "http://127.0.0.1:8080/v1",
        "http://127.0.0.1:8080/v1/",
        "http://127.0.0.1:8080/v1/chat/completions",
        "127.0.0.1:8080",
    ],
)
def test_base_url_normalisation(given):
    assert normalise_base_url(given) == "http://127.0.0.1:8080/v1"


@pytest.mark.asyncio
@pytest.mark.parametrize("suffix", ["", "/", "/v1/"])
async def test_generator_accepts_url_with_or_without_v1(suffix):
    with FakeOpenAIServer() as srv:
        async with OpenAIGenerator(srv.root_url + suffix, mode="basic") as gen:
            (c,) = await gen.generate([chat("x")])
    assert gen.base_url == srv.base_url and c.text == "Answer: 42"


@pytest.mark.asyncio
async def test_cancellation_releases_the_semaphore():
    def delay(body):
        return 1.0 if body.get("messages") and last_user(body) == "slow" else 0.0

    with FakeOpenAIServer(delay=delay) as srv:
        async with OpenAIGenerator(srv.base_url, max_concurrency=1) as gen:
            await gen.generate([chat("warm up")])  # probe out of the way
            task = asyncio.create_task(gen.generate([chat("slow")]))
            for _ in range(200):
                if generation_bodies(srv, "slow"):
                    break
                await asyncio.sleep(0.005)
            assert generation_bodies(srv, "slow"), "the slow request never reached the server"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert gen.transport.semaphore._value == 1
            (c,) = await asyncio.wait_for(gen.generate([chat("fast")]), timeout=3)
    assert c.text == "Answer: 42"


@pytest.mark.asyncio
async def test_api_key_sent_as_bearer():
    with FakeOpenAIServer() as srv:
        async with OpenAIGenerator(srv.base_url, api_key="sk-test", model="fake-model", mode="basic") as gen:
            await gen.generate([chat("x")])
        headers = srv.headers
    assert headers and all(h.get("Authorization") == "Bearer sk-test" for h in headers)


def test_kept_trajectories_are_refused():
    gen = OpenAIGenerator("http://127.0.0.1:1", model="m", mode="basic")
    with pytest.raises(ConfigError, match="kv_fork"):
        gen._build(GenRequest(SamplingParams(), parent=object()))


@pytest.mark.parametrize(
    "kwargs",
    [{"timeout": 0}, {"max_retries": -1}, {"max_concurrency": 0}, {"mode": "x"}],
)
def test_constructor_validation(kwargs):
    with pytest.raises(ConfigError):
        OpenAIGenerator("http://127.0.0.1:1", **kwargs)


def test_one_generator_serves_several_event_loops():
    """Each infscale.ask call runs its own event loop; the generator must follow it."""
    import infscale

    with FakeOpenAIServer() as srv:
        gen = OpenAIGenerator(srv.base_url)
        answers = [infscale.ask("What is 6 * 7?", "majority", n=2, generator=gen).answer for _ in range(3)]
    assert answers == ["42", "42", "42"]


# ------------------------------------------------------------ the shared transport


@pytest.mark.parametrize(
    ("given", "root"),
    [("http://h:8000/v1/chat/completions", "http://h:8000"), ("http://h:8000/pooling", "http://h:8000"),
     ("http://h:8000/v1/score", "http://h:8000"), ("h:8000/v1/models/", "http://h:8000"),
     ("https://h/api/v1", "https://h/api"), ("http://h:8000/classify", "http://h:8000")],
)
def test_server_root_is_one_reading_for_generator_and_scorer(given, root):
    from infscale.backends.http import server_root  # noqa: PLC0415
    from infscale.scorers.reward_http import PRMHttpScorer  # noqa: PLC0415

    assert server_root(given) == root
    assert normalise_base_url(given) == root + "/v1" == OpenAIGenerator(given, mode="basic").base_url
    assert PRMHttpScorer(given).root_url == root


def test_generator_and_reward_scorer_share_one_transport():
    from infscale.backends.http import HttpTransport  # noqa: PLC0415
    from infscale.scorers.reward_http import PRMHttpScorer  # noqa: PLC0415

    gen = OpenAIGenerator("http://h:1", mode="basic", max_retries=2, backoff_base=0.25, backoff_cap=1.0)
    scorer = PRMHttpScorer("http://h:1", max_retries=2, backoff_base=0.25, backoff_cap=1.0)
    for t in (gen.transport, scorer.transport):
        assert type(t) is HttpTransport
        assert [t.retry_delay(a, None) for a in range(4)] == [0.25, 0.5, 1.0, 1.0]


def test_transport_client_follows_the_event_loop():
    """One pool per running loop: reused within a loop, fresh in the next (``infscale.ask`` runs
    one loop per question, and a client cannot outlive its loop)."""
    from infscale.backends.http import HttpTransport  # noqa: PLC0415

    t = HttpTransport(max_concurrency=3)

    async def clients():
        a, b = t.client(), t.client()
        assert t.semaphore._value == 3
        return a, b

    a1, b1 = asyncio.run(clients())
    a2, _ = asyncio.run(clients())
    assert a1 is b1 and a2 is not a1


@pytest.mark.asyncio
async def test_transport_first_model_and_retries():
    from infscale.backends.http import HttpTransport  # noqa: PLC0415

    with FakeOpenAIServer(models=("m-1", "m-2")) as srv:
        t = HttpTransport(**FAST)
        assert await t.first_model(srv.base_url + "/models") == "m-1"
        await t.aclose()
    with FakeOpenAIServer(models=()) as srv:
        t = HttpTransport(**FAST)
        with pytest.raises(BackendError, match="lists no model; pass model= explicitly"):
            await t.first_model(srv.base_url + "/models")
        await t.aclose()
    with FakeOpenAIServer(fail_times=2, fail_status=503) as srv:  # retryable: retried, then answered
        t = HttpTransport(max_retries=2, **FAST)
        data = await t.request("POST", srv.base_url + "/completions", {"model": "fake-model", "prompt": "x"})
        assert data["choices"] and len([c for c in srv.calls if c[1] == "/v1/completions"]) == 3
        await t.aclose()
    with FakeOpenAIServer() as srv:  # not retryable: one attempt, the server's own message
        t = HttpTransport(max_retries=3, **FAST)
        with pytest.raises(BackendError, match="404") as err:
            await t.request("POST", srv.base_url + "/nowhere", {})
        assert not err.value.retryable and len(srv.calls) == 1
        await t.aclose()
