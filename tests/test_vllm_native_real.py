"""Samples drawn with ``n`` on a real model (slow): the OpenAI HTTP generator against ``infscale
serve`` on the embedded SmolLM2-135M, a server that honours ``n`` for a plain model (there is no
vLLM or SGLang on this machine; their own routes are tested against fakes in test_vllm_native.py).
``infscale serve`` returns no logprobs, so each choice's generated tokens are the usage's
completion tokens shared by text length."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from infscale.backends.openai_http import OpenAIGenerator
from infscale.params import SamplingParams
from infscale.strategies.runner import run
from infscale.types import Problem

pytest.importorskip("llama_cpp", reason="needs the embedded engine: pip install 'infscale[embedded]'")
pytest.importorskip("fastapi", reason="needs the server extra: pip install 'infscale[server]'")

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"


@pytest.fixture(scope="module")
def served():
    from infscale.models import model_status

    if not any(s["name"] == MODEL and s["installed"] for s in model_status()):
        pytest.skip(f"infscale models install {MODEL}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "infscale.cli.main", "serve", "--model", MODEL, "--port", str(port),
           "--max-tokens", "48", "--shutdown-timeout", "5"]
    env = dict(os.environ, INFSCALE_THREADS=os.environ.get("INFSCALE_THREADS", "1"))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(root + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"infscale serve did not start: {proc.communicate()[1][-2000:]}")
        time.sleep(0.2)
    yield root
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


async def test_majority_draws_its_samples_in_one_request_with_n_on_a_real_model(served):
    problem = Problem(question="Tom has 4 apples and buys 3 more. How many apples does he have?")
    async with OpenAIGenerator(served + "/v1", model=MODEL, read_timeout=300) as gen:
        await gen.ensure_ready()
        assert gen.capabilities.native_n, gen.probe
        sent = gen.requests_sent
        result = await run(problem, gen, "majority", n=4, seed=1, params=SamplingParams(max_tokens=48, logprobs=False))  # it returns none
        assert gen.requests_sent - sent == 1  # four samples, one request
    assert len(result.candidates) == 4 and result.usage.calls == 4
    assert all(c.text and c.generated_tokens > 0 for c in result.candidates)
    assert result.usage.generated_tokens == sum(c.generated_tokens for c in result.candidates)
    assert len({c.seed for c in result.candidates}) == 1
    assert len({c.text for c in result.candidates}) > 1  # four draws, not one answer repeated (temperature 0.7)
