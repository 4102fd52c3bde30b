"""vLLM and SGLang as backends, against fakes that behave like each (their documented routes and
choice fields; see infscale.testing.fake_openai.FLAVOURS): the probe recognises them, stops are
read from either field, step-level search continues partial answers on both endpoints, and
response_format reaches them."""

from __future__ import annotations

import json

import pytest

from infscale.backends.openai_http import OpenAIGenerator
from infscale.params import SamplingParams
from infscale.strategies.runner import run
from infscale.testing.fake_openai import FakeOpenAIServer
from infscale.types import GenRequest, Problem

STEPS = "6 * 7 = 42\nAnswer: 42"


def step_reply(source, body, index):
    """The first step, then (when continued) the answer line: a two-step solution."""
    if isinstance(source, list):
        done = source[-1]["content"] if body.get("continue_final_message") else ""
    else:
        done = source.split("SOLUTION:", 1)[-1]
    return STEPS[len(done):] if STEPS.startswith(done) else "Answer: 42"


@pytest.mark.parametrize(("flavour", "name"), [("vllm", "vllm"), ("sglang", "sglang"), ("generic", None)])
async def test_probe_recognises_the_server(flavour, name):
    with FakeOpenAIServer(flavour=flavour, version="0.9.1") as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            await gen.ensure_ready()
            assert gen.server == {"name": name, "version": "0.9.1" if name else None}
            assert gen.probe["server"]["name"] == name
            caps = gen.capabilities
            assert caps.prefill and caps.native_n and caps.logprobs and caps.top_logprobs and caps.reports_stop


@pytest.mark.parametrize("flavour", ["vllm", "sglang"])
async def test_stop_string_is_read_from_either_field(flavour):
    with FakeOpenAIServer(flavour=flavour, reply=lambda s, b, i: "one two three") as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            out = await gen.generate([GenRequest(params=SamplingParams(stop=(" three",)), prompt="x"),
                                      GenRequest(params=SamplingParams(stop=(" three",)),
                                                 messages=[{"role": "user", "content": "x"}])])
        # SGLang names the stop only in matched_stop, vLLM only in stop_reason: both are read
        assert [c.stop for c in out] == [" three", " three"] and [c.text for c in out] == ["one two"] * 2


@pytest.mark.parametrize("flavour", ["vllm", "sglang"])
async def test_step_level_search_continues_chat_answers_with_prefill(flavour):
    with FakeOpenAIServer(flavour=flavour, reply=step_reply) as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            result = await run(Problem(question="What is 6 * 7?"), gen, "particle-filter", n=4, seed=0,
                               scorer="arith-check")
        assert result.answer == "42"
        continued = [b for b in srv.requests if isinstance(b, dict) and b.get("continue_final_message")
                     and (b.get("max_completion_tokens") or b.get("max_tokens") or 0) > 1]  # not the probe's one-token requests
        assert continued, "no step was continued"
        assert all(b["messages"][-1] == {"role": "assistant", "content": "6 * 7 = 42\n"} for b in continued)


@pytest.mark.parametrize("flavour", ["vllm", "sglang"])
async def test_step_level_search_continues_raw_prompts_through_completions(flavour):
    with FakeOpenAIServer(flavour=flavour, reply=step_reply) as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            result = await run(Problem(prompt="What is 6 * 7?\nSOLUTION:"), gen, "particle-filter", n=4, seed=0,
                               scorer="arith-check")
        assert result.answer == "42"
        prompts = [b["prompt"] for b in srv.requests if isinstance(b, dict) and "prompt" in b
                   and b.get("max_tokens", 0) > 1]
        # every continuation is the raw prompt text plus the steps so far (a shared, cacheable prefix)
        assert "What is 6 * 7?\nSOLUTION:6 * 7 = 42\n" in prompts
        assert all(p.startswith("What is 6 * 7?\nSOLUTION:") for p in prompts)


@pytest.mark.parametrize("flavour", ["vllm", "sglang"])
async def test_response_format_reaches_the_server(flavour):
    rf = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    with FakeOpenAIServer(flavour=flavour, reply=lambda s, b, i: '{"a": 1}') as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            p = SamplingParams(response_format=json.dumps(rf))
            await gen.generate([GenRequest(params=p, messages=[{"role": "user", "content": "x"}])])
        assert srv.requests[-1]["response_format"] == rf
