"""``infscale serve`` on the real embedded model, driven by the official ``openai`` client (slow).

One server subprocess per module on a free port of 127.0.0.1; sync, async and streaming calls,
a disconnect that must free the engine's sequences, and SIGTERM shutdown.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import httpx
import pytest
from served_model import MODEL, serve_model

pytest.importorskip("llama_cpp", reason="needs the embedded engine: pip install 'infscale[embedded]'")
pytest.importorskip("fastapi", reason="needs the server extra: pip install 'infscale[server]'")
openai = pytest.importorskip("openai")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "Tom has 4 apples and buys 3 more. How many apples does he have?"}]


@pytest.fixture(scope="module")
def served():
    with serve_model(max_tokens=32) as (proc, root):
        yield proc, root


def test_openai_client_sync_async_and_streaming_on_the_embedded_model(served):
    _, root = served
    client = openai.OpenAI(base_url=root + "/v1", api_key="-", max_retries=0)
    assert f"majority:{MODEL}" in {m.id for m in client.models.list().data}

    r = client.chat.completions.create(model=f"majority-2:{MODEL}", messages=QUESTION, max_tokens=32, seed=1)
    ext = r.model_extra["infscale"]
    assert ext["strategy"] == "majority" and ext["candidates"] == 2 and ext["usage"]["calls"] == 2
    assert r.choices[0].message.content and r.usage.completion_tokens == ext["usage"]["generated_tokens"] > 0
    if ext["answer"] is not None:
        assert ext["answer"] == ext["distribution"][0]["answer"]

    parts = []
    for chunk in client.chat.completions.create(model=f"majority-2:{MODEL}", messages=QUESTION, max_tokens=32,
                                                seed=1, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    assert "".join(parts) == r.choices[0].message.content  # same seed, same text, now streamed

    async def go():
        aclient = openai.AsyncOpenAI(base_url=root + "/v1", api_key="-", max_retries=0)
        rs = await asyncio.gather(
            aclient.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=16, n=2, seed=2),
            aclient.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0),
        )
        await aclient.close()
        return rs

    chat, completion = asyncio.run(go())
    assert len(chat.choices) == 2 and chat.model_extra["infscale"]["strategy"] == "sample"
    assert completion.choices[0].text and completion.model_extra["infscale"]["strategy"] == "greedy"


def test_disconnect_frees_the_engine_and_sigterm_shuts_down(served):
    proc, root = served
    with httpx.Client(base_url=root, timeout=0.5) as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json={"model": f"majority-4:{MODEL}", "messages": QUESTION,
                                                "max_tokens": 400})
    with httpx.Client(base_url=root, timeout=10) as http:
        deadline = time.monotonic() + 10
        while http.get("/health").json()["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.1)
        health = http.get("/health").json()
        assert health["in_flight"] == 0
        deadline = time.monotonic() + 10
        while http.get("/health").json()["engine"]["live"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert http.get("/health").json()["engine"]["live"] == 0  # the engine freed every sequence
        cancelled = [s for f in text_string_to_metric_families(http.get("/metrics").text) for s in f.samples
                     if s.name == "infscale_cancelled_requests_total" and s.labels == {"reason": "disconnect"}]
        assert [s.value for s in cancelled] == [1]
    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught (exit by SIGTERM)
    assert proc.wait(20) in (0, -signal.SIGTERM)
    assert "serving smollm2-135m on http://127.0.0.1:" in proc.stderr.read()


def test_serve_mistakes_are_one_line_exit_2():
    out = subprocess.run([sys.executable, "-m", "infscale.cli.main", "serve", "--model", "no-such-model"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.splitlines()[-1].startswith("infscale: error: model: unknown model")
    assert "Traceback" not in out.stderr



@pytest.fixture(scope="module")
def served_engine():
    """The app on 127.0.0.1 in this process, serving an engine the test can inspect."""
    from infscale.backends.llamacpp import LlamaEngine
    from infscale.errors import ConfigError
    from infscale.models import resolve_model
    from infscale.server import ServerThread, create_app

    try:
        _, path, _ = resolve_model(MODEL)
    except ConfigError as e:
        pytest.skip(str(e))
    engine = LlamaEngine(path, model_name=MODEL, chat_template="auto", n_ctx=4096, n_seq_max=16)
    try:
        with ServerThread(create_app(engine, model_name=MODEL)) as srv, \
                httpx.Client(base_url=srv.root_url, timeout=300) as http:
            yield engine, http
    finally:
        engine.close()


@pytest.mark.parametrize("strategy", ["particle-filter", "beam-search", "best-first"])
def test_step_level_search_behind_the_server_frees_every_sequence(served_engine, strategy):
    """The served generator is the engine itself (the meter only observes), so the search's
    ``free`` of kept KV sequences reaches it: afterwards no sequence is live or held."""
    engine, http = served_engine
    resp = http.post("/v1/chat/completions", json={
        "model": f"{strategy}-2:{MODEL}", "messages": QUESTION, "max_tokens": 32, "seed": 1,
        "infscale": {"params": {"max_steps": 2, "step_tokens": 12}}})
    assert resp.status_code == 200, resp.text
    usage = resp.json()["infscale"]["usage"]
    assert usage["calls"] >= 2 and usage["generated_tokens"] > 0
    deadline = time.monotonic() + 10  # frees reach the scheduler thread asynchronously
    while time.monotonic() < deadline:
        stats = engine.stats()
        if stats["live"] == 0 and stats["free_sequences"] == engine.n_seq_max:
            break
        time.sleep(0.05)
    stats = engine.stats()
    assert stats["live"] == 0 and stats["queued"] == 0
    assert stats["free_sequences"] == engine.n_seq_max, f"{strategy} left sequences held: {stats}"
