"""vLLM's and SGLang's own features, against fakes of each that follow their documentation
(infscale.testing.fake_servers; no GPU and no vLLM here): step-level search continues chat
answers through /v1/completions with the server's templated prompt text (vLLM) or keeps
continue_final_message (SGLang, whose /tokenize takes text only); samples of one prompt are drawn
with n; prompt logprobs score a given text."""

from __future__ import annotations

import pytest

from infscale.backends.openai_http import OpenAIGenerator
from infscale.errors import BackendError
from infscale.params import Budget, SamplingParams
from infscale.strategies.runner import run
from infscale.testing.fake_servers import FakeSGLangServer, FakeVLLMServer, render_chat
from infscale.types import GenRequest, Problem

STEPS = "6 * 7 = 42\nAnswer: 42"


def step_reply(source, body, index):
    """The next line of a two-step solution, whichever way the steps so far arrive."""
    if isinstance(source, list):
        done = source[-1]["content"] if body.get("continue_final_message") else ""
    else:
        done = source.split("<|assistant|>", 1)[-1] if "<|assistant|>" in source else ""
    return STEPS[len(done):] if STEPS.startswith(done) else "Answer: 42"


def _generation(srv):
    """The generation requests (not the probe's one-token ones)."""
    return [(p, b) for m, p, b in srv.calls if m == "POST" and p.startswith("/v1/") and isinstance(b, dict)
            and "6 * 7" in str(b.get("messages") or b.get("prompt"))]


async def test_vllm_step_search_continues_through_completions_with_the_templated_prefix():
    problem = Problem(question="What is 6 * 7?")
    with FakeVLLMServer(reply=step_reply) as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            result = await run(problem, gen, "particle-filter", n=4, seed=0, scorer="arith-check")
            assert gen.probe["continuation"]["templated"] is True
            assert gen.probe["continuation"]["path"].startswith("completions")
        assert result.answer == "42"
        gen_reqs = _generation(srv)
        first = [b for p, b in gen_reqs if p == "/v1/chat/completions"]
        continued = [b for p, b in gen_reqs if p == "/v1/completions"]
        assert continued, "no step was continued through /v1/completions"
        assert not any(b.get("continue_final_message") for p, b in gen_reqs)
        # the prefix is the server's own rendering of the conversation, byte for byte
        messages = first[0]["messages"]
        templated = render_chat(messages, add_generation_prompt=True)
        assert all(b["prompt"].startswith(templated) for b in continued)
        assert {b["prompt"] for b in continued} == {templated + "6 * 7 = 42\n"}
        assert all(b["add_special_tokens"] is False for b in continued)
        # the conversation was templated once (tokenize, detokenize, check), plus the probe's
        assert len(srv.calls_to("/tokenize")) == 2 * 2 and len(srv.calls_to("/detokenize")) == 2


async def test_sglang_keeps_continue_final_message_its_tokenize_takes_text_only():
    with FakeSGLangServer(reply=step_reply) as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            result = await run(Problem(question="What is 6 * 7?"), gen, "particle-filter", n=4, seed=0,
                               scorer="arith-check")
            assert gen.probe["continuation"]["templated"] is False
            assert "'prompt' is a required string" in gen.probe["continuation"]["why"]
        assert result.answer == "42"
        continued = [b for p, b in _generation(srv) if b.get("continue_final_message")]
        assert continued and all(b["messages"][-1] == {"role": "assistant", "content": "6 * 7 = 42\n"}
                                 for b in continued)
        assert not [p for p, b in _generation(srv) if p == "/v1/completions"]


async def test_templated_continuation_can_be_turned_off():
    with FakeVLLMServer(reply=step_reply) as srv:
        async with OpenAIGenerator(srv.base_url, templated_continuation=False) as gen:
            result = await run(Problem(question="What is 6 * 7?"), gen, "particle-filter", n=4, seed=0,
                               scorer="arith-check")
            assert gen.probe["continuation"]["templated"] is False
        assert result.answer == "42" and not srv.calls_to("/tokenize")
        assert any(b.get("continue_final_message") for _, b in _generation(srv))


def seeded_reply(source, body, index):
    """Choice ``index`` of a request seeded ``seed``: a function of both (as a server's draws are)."""
    return "x " * (index + 1) + f"Answer: {(body.get('seed', 0) + index) % 7}"


def _samples(srv):
    return [b for m, p, b in srv.calls if m == "POST" and p.startswith("/v1/") and isinstance(b, dict)
            and "17" in str(b.get("messages") or b.get("prompt"))]


@pytest.mark.parametrize("server", [FakeVLLMServer, FakeSGLangServer])
async def test_samples_of_one_prompt_are_drawn_with_n(server):
    with server(reply=seeded_reply) as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            result = await run(Problem(question="What is 17 + 1?"), gen, "majority", n=5, seed=3)
        (body,) = _samples(srv)
        assert body["n"] == 5 and isinstance(body["seed"], int)
        # every completion is counted: five calls, each choice's own tokens, the prompt once
        assert result.usage.calls == 5 and len(result.candidates) == 5
        assert sorted(c.generated_tokens for c in result.candidates) == [3, 4, 5, 6, 7]
        assert result.usage.generated_tokens == 25
        assert {c.seed for c in result.candidates} == {body["seed"]}  # the set's seed, not a sample's own
        assert sorted(c.text for c in result.candidates) == sorted(seeded_reply(None, body, i) for i in range(5))


async def test_a_budget_that_cannot_pay_for_n_cuts_the_request():
    with FakeVLLMServer(reply=seeded_reply) as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            result = await run(Problem(question="What is 17 + 1?"), gen, "majority", n=5, seed=3,
                               budget=Budget(calls=3))
        (body,) = _samples(srv)
        assert body["n"] == 3
        assert result.usage.calls == 3 and len(result.candidates) == 3


async def test_n_draws_are_a_reproducible_set_per_seed_and_n():
    with FakeVLLMServer(reply=seeded_reply) as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            reqs = [GenRequest(params=SamplingParams(), prompt="17?", seed=11 + i) for i in range(4)]
            a = await gen.generate(reqs)
            b = await gen.generate(reqs)
            c = await gen.generate(reqs[:2])
        assert [x.text for x in a] == [x.text for x in b]  # same (seed, n): the same set
        assert [x.seed for x in a] == [11] * 4
        assert [x.text for x in c] == [x.text for x in a[:2]]  # in this fake; a server's n=2 draws may differ
        assert [b["n"] for b in _samples(srv)] == [4, 4, 2]


async def test_one_request_per_sample_keeps_per_sample_seeds():
    with FakeVLLMServer(reply=seeded_reply) as srv:
        async with OpenAIGenerator(srv.base_url, native_n=False) as gen:
            result = await run(Problem(question="What is 17 + 1?"), gen, "majority", n=4, seed=3)
        bodies = _samples(srv)
        assert len(bodies) == 4 and all("n" not in b for b in bodies)
        assert len({b["seed"] for b in bodies}) == 4
        assert sorted(c.seed for c in result.candidates) == sorted(b["seed"] for b in bodies)


async def test_requests_that_differ_are_not_grouped():
    with FakeVLLMServer(reply=seeded_reply) as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            reqs = [GenRequest(params=SamplingParams(), prompt="17?", seed=1),
                    GenRequest(params=SamplingParams(temperature=0.3), prompt="17?", seed=2),
                    GenRequest(params=SamplingParams(), prompt="17? ", seed=3),
                    GenRequest(params=SamplingParams(), prompt="17?", seed=4)]
            await gen.ensure_ready()
            assert gen.groups(reqs) == [[0, 3], [1], [2]]
            outs = await gen.generate_settled(reqs)
        assert [o.finish_reason for o in outs] == ["stop"] * 4
        # the three requests run at once: the server logs them in whatever order they arrive
        assert sorted(b.get("n", 1) for b in _samples(srv)) == [1, 1, 2]


# ------------------------------------------------------------ the log-probability of a given text


def _position_logprob(tokens, i):
    """The fake model's log-probability of prompt token i: -0.1 * i (a different value at every position)."""
    return -0.1 * i


async def test_vllm_scores_a_given_text_from_prompt_logprobs():
    with FakeVLLMServer(prompt_logprob=_position_logprob) as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            await gen.ensure_ready()
            assert gen.capabilities.prompt_logprobs and gen.probe["prompt_logprobs"] is True
            raw, chat = await gen.text_logprobs([
                GenRequest(params=SamplingParams(top_logprobs=2), prompt="Q: 2 + 3?", prefix=" A: 5"),
                GenRequest(params=SamplingParams(), messages=[{"role": "user", "content": "2 + 3?"}],
                           prefix=" It is 5"),
            ])
            # a text that merges with the end of its context has no tokens of its own: refused
            with pytest.raises(BackendError, match="token boundary"):
                await gen.text_logprobs([GenRequest(params=SamplingParams(), prompt="Q: 2 + 3?", prefix="!")])
        # raw: "<bos>" "Q:" " 2" " +" " 3?" then the text's " A:" " 5" at positions 5 and 6
        assert raw.text == " A: 5" and raw.logprobs == pytest.approx([-0.5, -0.6])
        assert raw.top_logprobs[0] == {" A:": -0.5, " alt1": -3.0, " alt2": -4.0}
        # chat: the server's templated conversation (no BOS), then " It" " is" " 5"
        n = len(render_chat([{"role": "user", "content": "2 + 3?"}]).split())
        assert chat.logprobs == pytest.approx([-0.1 * (n + j) for j in range(3)]) and chat.top_logprobs is None
        # the two scoring requests run at once: keyed by what each asked for, not by arrival order
        scored = [b for _, p, b in srv.calls if p == "/v1/completions" and b.get("prompt_logprobs") is not None
                  and b["prompt"] != "1 2 3"]
        assert sorted(b["prompt_logprobs"] for b in scored) == [0, 2] and all(b["max_tokens"] == 1 for b in scored)
        asked = {b["prompt_logprobs"]: b for b in scored}
        assert asked[0]["prompt"] == render_chat([{"role": "user", "content": "2 + 3?"}]) + " It is 5"


@pytest.mark.parametrize("server", [FakeSGLangServer, None])
async def test_servers_without_prompt_logprobs_refuse_in_one_line(server):
    from infscale.errors import ConfigError
    from infscale.testing.fake_openai import FakeOpenAIServer

    with (server or FakeOpenAIServer)() as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            with pytest.raises(ConfigError) as e:
                await gen.text_logprobs([GenRequest(params=SamplingParams(), prompt="Q", prefix=" A")])
            assert not gen.capabilities.prompt_logprobs
        assert "prompt_logprobs" in str(e.value) and "\n" not in str(e.value)
        assert not any(isinstance(b, dict) and b.get("prompt_logprobs") is not None for b in srv.requests)
