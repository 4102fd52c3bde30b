"""Reasoning models: <think> blocks kept in candidates but not read as answers, reasoning_content
from servers that split it, reasoning tokens in usage, and the thinking budget (think_tokens,
s1 budget forcing) on a fake reasoning model with a scripted trace and on the real engine."""

from __future__ import annotations

import pytest

from infscale.backends.openai_http import OpenAIGenerator
from infscale.errors import ConfigError
from infscale.params import SamplingParams
from infscale.strategies.runner import run
from infscale.tasks import get_task
from infscale.tasks.base import split_thinking
from infscale.testing import FakeGenerator, record_requests
from infscale.testing.fake_openai import FakeOpenAIServer
from infscale.types import GenRequest, Problem

THOUGHTS = " ".join(f"t{i}" for i in range(1, 11))  # ten words of thinking


def reasoner(thinking_words: int = 10, answer: str = "42"):
    """A scripted reasoning model: '<think> t1 .. tK </think> Answer: X'; continued after a
    closed thinking (a prefix holding </think>) it writes only the answer."""
    def reply(req: GenRequest, rng) -> str:
        if "</think>" in req.prefix:
            return f"Answer: {answer}"
        words = " ".join(f"t{i}" for i in range(1, thinking_words + 1))
        return f"<think> {words} </think>\nAnswer: {answer}"
    return reply


def test_split_thinking():
    assert split_thinking("no tags here") == ("", "no tags here")
    assert split_thinking("<think>a b</think>\nAnswer: 4") == ("a b", "Answer: 4")
    assert split_thinking("inside already</think>Answer: 4") == ("inside already", "Answer: 4")
    assert split_thinking("<think>never closed Answer: 3") == ("never closed Answer: 3", "")
    assert split_thinking("<think>a</think>x<think>b</think>y") == ("a\n\nb", "xy")


@pytest.mark.parametrize("task", ["math", "text", "mcq", "json", "tool-call"])
def test_no_task_reads_an_answer_inside_thinking(task):
    t = get_task(task)
    assert t.extract("<think>Answer: 7\n{\"a\": 1}</think>") is None
    assert t.extract("<think>Answer: 7</think>\n" + {"math": "Answer: 42", "text": "Answer: 42", "mcq": "Answer: B",
                                                     "json": '{"b": 2}', "tool-call": "Answer: 42"}[task]) \
        == {"math": "42", "text": "42", "mcq": "B", "json": '{"b":2}', "tool-call": "42"}[task]


async def test_thinking_budget_forces_the_answer_on_a_scripted_trace():
    gen = FakeGenerator(reasoner(10))
    seen = record_requests(gen)
    r = await run(Problem(question="6 * 7?"), gen, "majority", n=2, seed=0,
                  params=SamplingParams(max_tokens=64), options={"think_tokens": 4})
    assert r.answer == "42"
    # part 1 of each sample: at most 4 tokens, stopped at </think>; part 2 continues after the forced close
    firsts, seconds = [q for q in seen if not q.prefix], [q for q in seen if q.prefix]
    assert len(firsts) == len(seconds) == 2
    first, second = firsts[0], seconds[0]
    assert first.params.max_tokens == 4 and "</think>" in first.params.stop and first.params.think_tokens is None
    assert second.prefix == "<think> t1 t2 t3\n</think>\n\n" and second.params.max_tokens == 60
    c = r.candidates[0]
    assert c.text == "<think> t1 t2 t3\n</think>\n\nAnswer: 42" and c.generated_tokens == 6
    assert r.usage.reasoning_tokens == 8 and r.usage.calls == 2


async def test_thinking_that_ends_within_the_budget_is_not_cut():
    gen = FakeGenerator(reasoner(2))
    r = await run(Problem(question="6 * 7?"), gen, "majority", n=1, seed=0,
                  params=SamplingParams(max_tokens=64), options={"think_tokens": 10})
    assert r.candidates[0].text == "<think> t1 t2 </think>Answer: 42"
    assert r.usage.reasoning_tokens == 3 and r.answer == "42"


async def test_thinking_budget_is_refused_where_it_cannot_work():
    with pytest.raises(ConfigError, match="think_tokens"):
        await run(Problem(question="q"), FakeGenerator(reasoner()), "particle-filter", n=2,
                  options={"think_tokens": 4})
    with pytest.raises(ConfigError, match="think_tokens"):
        await run(Problem(question="q"), FakeGenerator(reasoner()), "majority", n=2, options={"think_tokens": 0})


async def test_reasoning_content_from_a_server_becomes_a_think_block():
    reply = lambda source, body, i: "<think>6 times 7 is 42</think>Answer: 42"  # noqa: E731
    with FakeOpenAIServer(reply=reply, reasoning_parser=True) as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            r = await run(Problem(question="6 * 7?"), gen, "majority", n=2, seed=0)
    assert r.answer == "42"
    assert r.candidates[0].text == "<think>6 times 7 is 42</think>Answer: 42"


def test_server_returns_the_answer_without_thinking_and_counts_reasoning_tokens():
    pytest.importorskip("fastapi", reason="needs the server extra: pip install 'infscale[server]'")
    openai = pytest.importorskip("openai")
    from infscale.server import ServerThread, create_app

    gen = FakeGenerator(reasoner(10))
    gen.model_name = "fake"
    with ServerThread(create_app(gen), timeout_graceful_shutdown=5) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="-", max_retries=0)
        r = client.chat.completions.create(model="majority-2:fake", messages=[{"role": "user", "content": "6*7?"}],
                                           seed=0, max_tokens=64, extra_body={"infscale": {"params": {"think_tokens": 4}}})
        msg = r.choices[0].message
        assert msg.content == "Answer: 42"
        assert msg.model_extra["reasoning_content"] == "t1 t2 t3"
        assert r.usage.completion_tokens_details.reasoning_tokens == 8
        stream = client.chat.completions.create(model="majority-2:fake", messages=[{"role": "user", "content": "6*7?"}],
                                                seed=0, max_tokens=64, stream=True,
                                                extra_body={"infscale": {"params": {"think_tokens": 4}}})
        chunks = [c.choices[0].delta for c in stream if c.choices]
        assert "".join(d.content or "" for d in chunks) == "Answer: 42"
        assert any((d.model_extra or {}).get("reasoning_content") == "t1 t2 t3" for d in chunks)


@pytest.mark.slow
async def test_thinking_budget_on_the_real_engine(engine):
    r = await run(Problem(question="What is 6 * 7?"), engine, "majority", n=2, seed=0,
                  params=SamplingParams(max_tokens=48), options={"think_tokens": 8})
    for c in r.candidates:
        # SmolLM2 does not think by itself: after 8 tokens the meter closes the thinking and the
        # engine continues the answer from there (a prefill of the same sequence)
        assert "\n</think>\n\n" in c.text and c.generated_tokens > 8
    assert r.usage.reasoning_tokens == 16
