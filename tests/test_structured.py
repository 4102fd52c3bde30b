"""Tools and structured output through the server (issue 16, item 5), and the tasks that fold them.

Fast tests run the server on fake generators and speak to it with the official ``openai``
client; the slow test runs a tool request on the real embedded model.
"""

from __future__ import annotations

import dataclasses
import itertools
import json

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs the server extra: pip install 'infscale[server]'")
openai = pytest.importorskip("openai")

from infscale.backends.openai_http import OpenAIGenerator  # noqa: E402
from infscale.errors import ConfigError  # noqa: E402
from infscale.params import SamplingParams  # noqa: E402
from infscale.server import ServerThread, create_app  # noqa: E402
from infscale.tasks import get_task  # noqa: E402
from infscale.tasks.structured import parse_tool_answer  # noqa: E402
from infscale.testing import FakeGenerator, record_requests  # noqa: E402
from infscale.testing.fake_openai import FakeOpenAIServer  # noqa: E402
from infscale.types import GenRequest  # noqa: E402

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                   "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]

# The same call written four ways (key order, spacing, arguments as a JSON string, bare JSON):
PARIS = ['<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}</tool_call>',
         '<tool_call>\n{"arguments": {"unit": "c", "city": "Paris"}, "name": "get_weather"}\n</tool_call>',
         '<tool_call>{"name":"get_weather","arguments":"{\\"city\\": \\"Paris\\", \\"unit\\": \\"c\\"}"}</tool_call>',
         '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "c"}}']
LONDON = '<tool_call>{"name": "get_weather", "arguments": {"city": "London"}}</tool_call>'


def tool_model(p_paris: float = 0.6):
    def reply(req: GenRequest, rng: np.random.Generator) -> str:
        if rng.random() < p_paris:
            return PARIS[int(rng.integers(len(PARIS)))]
        return LONDON
    return reply


JSON_VARIANTS = ['{"name": "Ada", "age": 36}', '```json\n{"age": 36, "name": "Ada"}\n```', '{"age":36,"name":"Ada"}']


def json_model(req: GenRequest, rng: np.random.Generator) -> str:
    if rng.random() < 0.7:
        return JSON_VARIANTS[int(rng.integers(len(JSON_VARIANTS)))]
    return '{"name": "Bob", "age": 40}'


def fake(reply, *, response_format: bool = False) -> FakeGenerator:
    g = FakeGenerator(reply)
    g.model_name = "fake"
    g.capabilities = dataclasses.replace(g.capabilities, response_format=response_format)
    return g


@pytest.fixture
def serve():
    servers = []

    def start(gen):
        srv = ServerThread(create_app(gen), timeout_graceful_shutdown=5)
        srv.__enter__()
        servers.append(srv)
        return srv, openai.OpenAI(base_url=srv.base_url, api_key="none", max_retries=0)

    yield start
    for srv in servers:
        srv.__exit__(None, None, None)


# --------------------------------------------------------------------------- the tasks


def test_tool_call_task_folds_calls_by_name_and_canonical_arguments():
    task = get_task("tool-call")
    answers = {task.extract(t) for t in PARIS}
    assert len(answers) == 1
    (answer,) = answers
    assert parse_tool_answer(answer) == [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}]
    assert task.extract(LONDON) != answer
    # a plain reply is read as the text task reads it; it is not a call
    assert task.extract("It is sunny.\nAnswer: Sunny") == "sunny"
    assert parse_tool_answer(task.extract("Answer: Sunny")) is None
    # a JSON reply that is not a call is a plain reply; broken call JSON is no call
    assert parse_tool_answer(task.extract('{"city": "Paris"}')) is None
    assert parse_tool_answer(task.extract('<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>')) is None
    # two calls in one reply: one answer, in the order written
    two = task.extract(PARIS[0] + "\n" + LONDON)
    assert [c["arguments"]["city"] for c in parse_tool_answer(two)] == ["Paris", "London"]
    assert task.ends_answer('<tool_call>{"name": "x"}</tool_call>') and not task.ends_answer("thinking")


def test_json_task_folds_by_parsed_value():
    task = get_task("json")
    assert {task.extract(t) for t in JSON_VARIANTS} == {'{"age":36,"name":"Ada"}'}
    assert task.extract("Here it is: [1, 2.5, \"x\"] done") == '[1,2.5,"x"]'
    assert task.extract("no json here") is None
    assert task.extract('{"a": ') is None
    assert task.equivalent('{"b": 1, "a": "é"}', '{"a":"é","b":1}')


def test_response_format_is_validated_in_sampling_params():
    SamplingParams(response_format='{"type": "json_object"}')
    with pytest.raises(ConfigError, match="response_format"):
        SamplingParams(response_format='{"type": "yaml"}')
    with pytest.raises(ConfigError, match="response_format"):
        SamplingParams(response_format="not json")


# --------------------------------------------------------------------------- tools


def test_tools_vote_returns_the_winning_call_as_tool_calls(serve):
    gen = fake(tool_model(0.6))
    seen = record_requests(gen)
    _, client = serve(gen)
    r = client.chat.completions.create(model="majority-16:fake", messages=ASK, tools=[WEATHER, CLOCK], seed=3)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "c"}
    ext = r.model_extra["infscale"]
    assert ext["task"] == "tool-call" and ext["candidates"] == 16
    counts = {parse_tool_answer(m["answer"])[0]["arguments"]["city"]: m["count"] for m in ext["distribution"]}
    assert sum(counts.values()) == 16 and counts["Paris"] > counts["London"]
    # the model was shown the functions in a system turn, and asked for <tool_call> blocks
    system = seen[0].messages[0]
    assert system["role"] == "system" and "get_weather" in system["content"] and "<tool_call>" in system["content"]


def test_tools_streamed_through_the_official_client(serve):
    _, client = serve(fake(tool_model(1.0)))
    stream = client.chat.completions.create(model="majority-4:fake", messages=ASK, tools=[WEATHER], stream=True,
                                            seed=1)
    calls, finish = [], None
    for chunk in stream:
        for ch in chunk.choices:
            calls += ch.delta.tool_calls or []
            finish = ch.finish_reason or finish
    assert finish == "tool_calls"
    assert [c.function.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris", "unit": "c"}


def test_tool_choice_named_and_required(serve):
    srv, client = serve(fake(tool_model(0.6)))
    r = client.chat.completions.create(model="majority-8:fake", messages=ASK, tools=[WEATHER, CLOCK], seed=3,
                                       tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert r.choices[0].message.tool_calls[0].function.name == "get_weather"
    # no candidate calls get_time: a loud 502 naming tool_choice, not a made-up call
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="majority-4:fake", messages=ASK, tools=[WEATHER, CLOCK], seed=3,
                                       tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert info.value.status_code == 502 and info.value.body["param"] == "tool_choice"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="majority-4:fake", messages=ASK, tools=[WEATHER],
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    assert info.value.body["param"] == "tool_choice"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="majority-4:fake", messages=ASK, tool_choice="required")
    assert info.value.body["param"] == "tool_choice"


def test_plain_reply_wins_when_the_model_does_not_call(serve):
    _, client = serve(fake(lambda req, rng: "It is sunny.\nAnswer: sunny"))
    r = client.chat.completions.create(model="majority-4:fake", messages=ASK, tools=[WEATHER], seed=0)
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.tool_calls is None
    assert "sunny" in r.choices[0].message.content
    # a call to a function that was not offered is passed over
    _, client = serve(fake(lambda req, rng: '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>'))
    r = client.chat.completions.create(model="majority-4:fake", messages=ASK, tools=[WEATHER], seed=0)
    assert r.choices[0].message.tool_calls is None


def test_multi_turn_tool_messages_are_rendered_for_the_model(serve):
    gen = fake(lambda req, rng: "Answer: 18 degrees")
    seen = record_requests(gen)
    _, client = serve(gen)
    messages = [*ASK,
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 18}'}]
    r = client.chat.completions.create(model="majority-2:fake", messages=messages, tools=[WEATHER], seed=0)
    assert r.choices[0].message.content == "Answer: 18 degrees"
    roles = [m["role"] for m in seen[0].messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert seen[0].messages[2]["content"] == '<tool_call>{"arguments":{"city":"Paris"},"name":"get_weather"}</tool_call>'
    assert seen[0].messages[3]["content"] == '<tool_response>{"celsius": 18}</tool_response>'


def test_plain_model_with_tools_returns_each_sample_as_a_call(serve):
    _, client = serve(fake(tool_model(1.0)))
    r = client.chat.completions.create(model="fake", messages=ASK, tools=[WEATHER], n=2, seed=0)
    assert [c.finish_reason for c in r.choices] == ["tool_calls", "tool_calls"]


# ------------------------------------------------------------------- response_format


SCHEMA = {"type": "json_schema", "json_schema": {"name": "person", "schema": {
    "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}}}


def test_json_schema_reaches_the_generator_and_answers_fold_by_parsed_json(serve):
    gen = fake(json_model, response_format=True)
    seen = record_requests(gen)
    _, client = serve(gen)
    r = client.chat.completions.create(model="majority-16:fake", messages=ASK, response_format=SCHEMA, seed=5)
    assert json.loads(r.choices[0].message.content.strip("`json\n")) == {"name": "Ada", "age": 36}
    ext = r.model_extra["infscale"]
    assert ext["task"] == "json" and ext["answer"] == '{"age":36,"name":"Ada"}'
    assert {m["answer"] for m in ext["distribution"]} == {'{"age":36,"name":"Ada"}', '{"age":40,"name":"Bob"}'}
    assert all(json.loads(q.params.response_format) == SCHEMA for q in seen)
    r = client.chat.completions.create(model="majority-4:fake", messages=ASK, response_format={"type": "json_object"},
                                       seed=5)
    assert r.model_extra["infscale"]["task"] == "json"


def test_response_format_refused_where_it_cannot_be_honoured(serve):
    _, client = serve(fake(json_model, response_format=False))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="majority-4:fake", messages=ASK, response_format=SCHEMA)
    assert info.value.body["param"] == "response_format" and "cannot constrain" in info.value.body["message"]
    _, client = serve(fake(json_model, response_format=True))
    with pytest.raises(openai.BadRequestError) as info:  # step-level search continues partial answers
        client.chat.completions.create(model="particle-filter-4:fake", messages=ASK, response_format=SCHEMA)
    assert info.value.body["param"] == "response_format"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="majority-4:fake", messages=ASK, response_format=SCHEMA, tools=[WEATHER])
    assert info.value.body["param"] == "response_format"
    r = client.chat.completions.create(model="majority-2:fake", messages=ASK, response_format={"type": "text"})
    assert r.model_extra["infscale"]["task"] == "math"


@pytest.mark.parametrize(("field", "value"), [
    ("logprobs", True), ("top_logprobs", 3), ("logit_bias", {"42": 5}), ("presence_penalty", 0.5),
    ("frequency_penalty", 1.0), ("functions", [{"name": "f"}]), ("function_call", "auto"),
    ("modalities", ["text", "audio"]), ("reasoning_effort", "high"),
])
def test_fields_the_server_cannot_honour_are_a_400_naming_them(serve, field, value):
    srv, _ = serve(fake(tool_model()))
    with httpx.Client(base_url=srv.root_url, timeout=30) as http:
        r = http.post("/v1/chat/completions", json={"model": "majority-2:fake", "messages": ASK, field: value})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == field
        assert r.json()["error"]["message"].startswith(f"{field}: not supported")
        # the values that mean "not used", and fields that do not change the answer, pass
        ok = {"logprobs": False, "top_logprobs": 0, "logit_bias": {}, "presence_penalty": 0, "frequency_penalty": 0.0,
              "user": "u1", "metadata": {"k": "v"}, "store": False}
        r = http.post("/v1/chat/completions", json={"model": "majority-2:fake", "messages": ASK, **ok})
        assert r.status_code == 200, r.text
        r = http.post("/v1/completions", json={"model": "majority-2:fake", "prompt": "x", "tools": [WEATHER]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "tools"


# ----------------------------------------------------------------- HTTP backends


async def test_http_backend_receives_response_format():
    with FakeOpenAIServer() as srv:
        async with OpenAIGenerator(srv.base_url, mode="full") as gen:
            assert gen.capabilities.response_format
            params = SamplingParams(max_tokens=8, response_format=json.dumps(SCHEMA))
            await gen.generate([GenRequest(params=params, messages=ASK), GenRequest(params=params, prompt="P:")])
        bodies = [b for b in srv.requests if isinstance(b, dict) and "model" in b]
        assert [b.get("response_format") for b in bodies[-2:]] == [SCHEMA, SCHEMA]


# ------------------------------------------------------------------ real model


@pytest.mark.slow
def test_tools_through_the_server_on_the_real_engine(serve, engine):
    _, client = serve(engine)
    r = client.chat.completions.create(model=f"majority-4:{engine.model_name}", messages=ASK, tools=[WEATHER],
                                       max_tokens=48, seed=0)
    choice = r.choices[0]
    ext = r.model_extra["infscale"]
    assert ext["task"] == "tool-call" and ext["candidates"] == 4
    if choice.finish_reason == "tool_calls":  # a 135M model may or may not call: either is a valid answer
        assert choice.message.tool_calls[0].function.name == "get_weather"
        json.loads(choice.message.tool_calls[0].function.arguments)
    else:
        assert choice.message.content
    # the embedded engine constrains decoding to the schema (tests/test_grammar.py covers it in depth)
    r = client.chat.completions.create(model=f"majority-2:{engine.model_name}", messages=ASK, response_format=SCHEMA,
                                       max_tokens=64, seed=0)
    assert r.model_extra["infscale"]["task"] == "json"


def test_streamed_request_without_the_required_call_ends_with_an_error_event(serve):
    _, client = serve(fake(tool_model(1.0)))
    stream = client.chat.completions.create(model="majority-2:fake", messages=ASK, tools=[WEATHER, CLOCK], stream=True,
                                            tool_choice={"type": "function", "function": {"name": "get_time"}})
    with pytest.raises(openai.APIError, match="tool_choice"):
        for _ in stream:
            pass


# ------------------------------------------------- LiteLLM and DSPy, as their docs describe


def test_litellm_gets_an_answer_through_a_strategy(serve, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of the price list
    litellm = pytest.importorskip("litellm")
    srv, _ = serve(fake(None))
    # LiteLLM's OpenAI-compatible provider: model "openai/<name>" with api_base
    r = litellm.completion(model="openai/majority-8:fake", api_base=srv.base_url, api_key="none",
                           messages=[{"role": "user", "content": "What is 6 * 7?"}], seed=0)
    assert r.choices[0].message.content == "some work\nAnswer: 42"
    r = litellm.completion(model="openai/majority-4:fake", api_base=srv.base_url, api_key="none", messages=ASK,
                           tools=[WEATHER], seed=0)
    assert r.choices[0].finish_reason == "stop"  # the fake answers without calling


def test_litellm_tool_call_through_a_strategy(serve, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    litellm = pytest.importorskip("litellm")
    srv, _ = serve(fake(tool_model(0.6)))
    r = litellm.completion(model="openai/majority-8:fake", api_base=srv.base_url, api_key="none", messages=ASK,
                           tools=[WEATHER], seed=3)
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"] == "Paris"


def test_dspy_predict_gets_an_answer_through_a_strategy(serve, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    dspy = pytest.importorskip("dspy")

    drawn = itertools.count()  # DSPy sends no seed: 5 of every 8 samples say 42, so the vote is fixed

    def reply(req, rng):  # DSPy's chat adapter reads fields between [[ ## name ## ]] markers
        answer = "42" if next(drawn) % 8 < 5 else "41"
        return f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"

    gen = fake(reply)
    seen = record_requests(gen)
    srv, _ = serve(gen)
    lm = dspy.LM("openai/majority-8:fake", api_base=srv.base_url, api_key="none", cache=False)
    with dspy.context(lm=lm):
        out = dspy.Predict("question -> answer")(question="What is 6 * 7?")
    assert out.answer == "42"
    assert len(seen) == 8  # one request, eight samples voted on by the server
