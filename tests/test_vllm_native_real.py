"""Samples drawn with ``n`` on a real model (slow): the OpenAI HTTP generator against ``infscale
serve`` on the embedded SmolLM2-135M, a server that honours ``n`` for a plain model (there is no
vLLM or SGLang on this machine; their own routes are tested against fakes in test_vllm_native.py).
``infscale serve`` returns no logprobs, so each choice's generated tokens are the usage's
completion tokens shared by text length."""

from __future__ import annotations

import os

import pytest
from served_model import MODEL, serve_model

from infscale.backends.openai_http import OpenAIGenerator
from infscale.params import SamplingParams
from infscale.strategies.runner import run
from infscale.types import Problem

pytest.importorskip("llama_cpp", reason="needs the embedded engine: pip install 'infscale[embedded]'")
pytest.importorskip("fastapi", reason="needs the server extra: pip install 'infscale[server]'")

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def served():
    with serve_model(max_tokens=48, env={"INFSCALE_THREADS": os.environ.get("INFSCALE_THREADS", "1")}) as (_, root):
        yield root


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
