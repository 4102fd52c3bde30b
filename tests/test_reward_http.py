"""The HTTP reward-model scorer (prm-http) against the fake server's vLLM-shaped pooling routes."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from infscale import Budget, Problem
from infscale.errors import BackendError, ConfigError
from infscale.scorers import get_scorer
from infscale.backends.http import server_root as _root_url
from infscale.meter import Meter
from infscale.scorers.reward_http import PRMHttpScorer
from infscale.testing import FakeGenerator
from infscale.testing.fake_openai import FakeOpenAIServer

FAST = {"backoff_base": 0.01, "backoff_cap": 0.05}
PROBLEM = Problem(id="p", question="Tom has 3 boxes with 4 apples each. He eats 2. How many are left?")
Q = PROBLEM.question


def context(budget: Budget | None = None) -> Meter:
    return Meter(FakeGenerator(), budget or Budget())


def step_prob(step: str) -> float:
    """The fake PRM's belief in one step: right arithmetic is good, the rest is not."""
    return {"3 * 4 = 12": 0.9, "12 - 2 = 10": 0.8, "Answer: 10": 0.95}.get(step.strip(), 0.1)


def qwen_prm(text: str) -> list[float]:
    """A fake Qwen2.5-Math-PRM: one good-probability per <extra_0> (the question has none)."""
    _, _, solution = text.partition("\n\n")
    return [step_prob(s) for s in solution.split("<extra_0>")[:-1]]


def whole_text_prm(text: str) -> list[float]:
    """For classify/score: the text's last line decides."""
    return [step_prob(text.strip().split("\n")[-1])]


# ------------------------------------------------------------------ the pooling API


async def test_pooling_reads_the_last_step_probability_as_a_log():
    with FakeOpenAIServer(prm=qwen_prm) as srv:
        ctx = context()
        scorer = PRMHttpScorer(srv.root_url, **FAST)
        scores = await scorer.score_steps(
            PROBLEM, ["", "3 * 4 = 12\n", "3 * 4 = 12\n12 - 2 = 10\n", "3 * 4 = 12\n"],
            ["3 * 4 = 12", "12 - 2 = 10", "Answer: 10", "12 - 2 = 9"], ctx)
        bodies = srv.requests
        paths = [p for _, p, _ in srv.calls]
    assert scores == pytest.approx([math.log(0.9), math.log(0.8), math.log(0.95), math.log(0.1)])
    assert paths[0] == "/v1/models" and paths[1:] == ["/pooling"] * 4  # model resolved once
    assert scorer.model == "fake-model"
    by_input = {b["input"]: b for b in bodies}
    body = by_input[f"{Q}\n\n3 * 4 = 12<extra_0>12 - 2 = 10<extra_0>Answer: 10<extra_0>"]
    assert body == {"model": "fake-model", "input": body["input"], "task": "token_classify"}
    assert f"{Q}\n\n3 * 4 = 12<extra_0>" in by_input
    # one call per scored step, the PRM's prompt tokens as reported, nothing generated
    assert ctx.usage.calls == 4 and ctx.usage.prompt_tokens > 0 and ctx.usage.generated_tokens == 0


async def test_pooling_batch_order_kept_when_answers_arrive_reversed():
    steps = [f"{i} + 1 = {i + 1}" for i in range(6)]

    def delay(body):
        i = int(body["input"].split("\n\n", 1)[1].split(" ", 1)[0])
        return 0.03 * (6 - i)  # later requests answer first

    def prm(text):
        i = int(text.split("\n\n", 1)[1].split(" ", 1)[0])
        return [(i + 1) / 10]

    with FakeOpenAIServer(prm=prm, delay=delay) as srv:
        scores = await PRMHttpScorer(srv.root_url, model="fake-model", max_concurrency=6).score_steps(
            PROBLEM, [""] * 6, steps, context())
    assert scores == pytest.approx([math.log((i + 1) / 10) for i in range(6)])


async def test_outcome_score_splits_the_solution_and_reads_the_last_step():
    with FakeOpenAIServer(prm=qwen_prm) as srv:
        scores = await PRMHttpScorer(srv.root_url, model="fake-model").score(
            PROBLEM, ["3 * 4 = 12\n\n12 - 2 = 10\nAnswer: 10", "3 * 4 = 12\n12 - 2 = 9"], context())
        inputs = sorted(b["input"] for b in srv.requests)
    assert scores == pytest.approx([math.log(0.95), math.log(0.1)])
    assert f"{Q}\n\n3 * 4 = 12<extra_0>12 - 2 = 10<extra_0>Answer: 10<extra_0>" in inputs  # empty step dropped


async def test_step_token_good_index_and_task_are_configurable():
    def shepherd(text):  # math-shepherd style: rows are [p_good, p_bad], steps end with "ки"
        return [1.0 - step_prob(s) for s in text.split("\n\n", 1)[1].split(" ки")[:-1]]

    with FakeOpenAIServer(prm=shepherd) as srv:
        scorer = PRMHttpScorer(srv.root_url, model="fake-model", step_token=" ки", good_index=0, pooling_task=None)
        (s,) = await scorer.score_steps(PROBLEM, ["3 * 4 = 12\n"], ["12 - 2 = 10"], context())
        (body,) = srv.requests
    assert s == pytest.approx(math.log(0.8))
    assert body["input"] == f"{Q}\n\n3 * 4 = 12 ки12 - 2 = 10 ки" and "task" not in body


async def test_probability_zero_is_minus_infinity():
    with FakeOpenAIServer(prm=lambda text: [0.0]) as srv:
        (s,) = await PRMHttpScorer(srv.root_url, model="fake-model").score_steps(PROBLEM, [""], ["x"], context())
    assert s == -math.inf


# --------------------------------------------------------- classify and score APIs


async def test_classify_api():
    with FakeOpenAIServer(prm=whole_text_prm) as srv:
        scorer = PRMHttpScorer(srv.base_url, model="fake-model", api="classify")
        scores = await scorer.score_steps(PROBLEM, ["3 * 4 = 12\n", ""], ["12 - 2 = 10", "7 * 7 = 50"], context())
        bodies = srv.requests
        paths = {p for _, p, _ in srv.calls}
    assert scores == pytest.approx([math.log(0.8), math.log(0.1)])
    assert paths == {"/classify"}
    assert {b["input"] for b in bodies} == {f"{Q}\n\n3 * 4 = 12\n12 - 2 = 10", f"{Q}\n\n7 * 7 = 50"}


async def test_reward_api_uses_the_score_endpoint():
    with FakeOpenAIServer(prm=whole_text_prm) as srv:
        scorer = PRMHttpScorer(srv.root_url + "/v1", model="fake-model", api="reward")
        (s,) = await scorer.score_steps(PROBLEM, ["3 * 4 = 12\n"], ["Answer: 10"], context())
        (call,) = srv.calls
    assert s == pytest.approx(math.log(0.95))
    assert call[1] == "/score"
    assert call[2] == {"model": "fake-model", "text_1": Q, "text_2": "3 * 4 = 12\nAnswer: 10"}


# ------------------------------------------------------------------------ faults


async def test_retry_on_503_then_success():
    with FakeOpenAIServer(prm=qwen_prm, fail_times=2, fail_status=503) as srv:
        (s,) = await PRMHttpScorer(srv.root_url, model="fake-model", **FAST).score_steps(
            PROBLEM, [""], ["3 * 4 = 12"], context())
        assert len(srv.requests) == 3  # two failures, one success
    assert s == pytest.approx(math.log(0.9))


async def test_retries_exhausted_is_retryable_error():
    with FakeOpenAIServer(prm=qwen_prm, fail_times=100, fail_status=503) as srv:
        with pytest.raises(BackendError) as info:
            await PRMHttpScorer(srv.root_url, model="fake-model", max_retries=1, **FAST).score_steps(
                PROBLEM, [""], ["3 * 4 = 12"], context())
        assert len(srv.requests) == 2
    assert info.value.retryable is True and "2 attempts" in str(info.value)


async def test_4xx_is_not_retried_and_names_url_and_message():
    def reject(path, body):
        return (400, "This model's maximum context length is 4096 tokens")

    with FakeOpenAIServer(prm=qwen_prm, reject=reject) as srv:
        with pytest.raises(BackendError) as info:
            await PRMHttpScorer(srv.root_url, model="fake-model", **FAST).score_steps(
                PROBLEM, [""], ["3 * 4 = 12"], context())
        assert len(srv.requests) == 1
    err = info.value
    assert err.retryable is False and err.status == 400
    assert str(err).startswith(f"400 from {srv.root_url}/pooling: ") and "maximum context length" in str(err)


async def test_server_without_a_reward_model_is_a_clear_4xx():
    with FakeOpenAIServer() as srv:  # no prm: a generation model
        with pytest.raises(BackendError, match="400 from .*/pooling: The model does not support Pooling API"):
            await PRMHttpScorer(srv.root_url, model="fake-model", **FAST).score_steps(PROBLEM, [""], ["x"], context())


async def test_unknown_model_is_fatal():
    with FakeOpenAIServer(prm=qwen_prm) as srv:
        with pytest.raises(BackendError, match="404 .*The model 'nope' does not exist"):
            await PRMHttpScorer(srv.root_url, model="nope", **FAST).score_steps(PROBLEM, [""], ["x"], context())


@pytest.mark.parametrize(
    "api, broken, why",
    [
        ("pooling", {"object": "list"}, "no data list"),
        ("pooling", {"data": [{"index": 0, "data": []}]}, "no step scores (does the input contain"),
        ("pooling", {"data": [{"index": 0, "data": [[-3.2, 4.1]]}]}, "expected a probability in [0, 1], got 4.1"),
        ("pooling", {"data": [{"index": 0, "data": [["a", "b"]]}]}, "expected a probability"),
        ("classify", {"data": [{"index": 0, "probs": None}]}, "no label probabilities"),
        ("classify", {"data": [{"index": 0, "probs": [0.2, 1.7]}]}, "got 1.7"),
        ("reward", {"data": [{"index": 0, "score": None}]}, "expected a probability"),
        ("reward", {"data": "oops"}, "no data list"),
    ],
)
async def test_malformed_bodies_are_fatal_and_clear(api, broken, why):
    with FakeOpenAIServer(prm=whole_text_prm, prm_malformed=lambda path, body: broken) as srv:
        scorer = PRMHttpScorer(srv.root_url, model="fake-model", api=api, **FAST)
        with pytest.raises(BackendError) as info:
            await scorer.score_steps(PROBLEM, [""], ["x"], context())
        assert len(srv.requests) == 1  # never retried
    assert info.value.retryable is False
    assert str(info.value).startswith(f"malformed response from {scorer.url}: ") and why in str(info.value)


async def test_rows_of_any_width_and_one_label_rows():
    rows = {"three": [[0.1, 0.2, 0.7]], "one": [[0.1], [0.3]], "flat": [0.6, 0.4]}
    with FakeOpenAIServer(prm=qwen_prm, prm_malformed=lambda path, body: {
            "data": [{"index": 0, "data": rows[body["input"].split("\n\n")[1].split("<")[0]]}]}) as srv:
        scores = await PRMHttpScorer(srv.root_url, model="fake-model").score_steps(
            PROBLEM, ["", "", ""], ["three", "one", "flat"], context())
    # good_index 1 of the last row; a one-label row is P(good) itself; a flat list is one row
    assert scores == pytest.approx([math.log(0.2), math.log(0.3), math.log(0.4)])


async def test_good_index_beyond_the_labels_is_reported():
    with FakeOpenAIServer(prm=qwen_prm) as srv:
        with pytest.raises(BackendError, match="2 labels, but good_index is 5"):
            await PRMHttpScorer(srv.root_url, model="fake-model", good_index=5).score_steps(
                PROBLEM, [""], ["3 * 4 = 12"], context())


async def test_one_failure_cancels_the_rest_of_the_batch():
    def reject(path, body):
        return (400, "bad step") if "bad" in body["input"] else None

    def delay(body):
        return 2.0 if "slow" in body.get("input", "") else 0.0

    with FakeOpenAIServer(prm=lambda t: [0.5], reject=reject, delay=delay) as srv:
        t0 = time.monotonic()
        with pytest.raises(BackendError, match="bad step"):
            await PRMHttpScorer(srv.root_url, model="fake-model").score_steps(
                PROBLEM, ["", ""], ["slow", "bad"], context())
        assert time.monotonic() - t0 < 1.5


# ------------------------------------------------------------------ configuration


def test_missing_url_names_the_variable(monkeypatch):
    monkeypatch.delenv("INFSCALE_PRM_URL", raising=False)
    with pytest.raises(ConfigError) as info:
        get_scorer("prm-http")
    assert info.value.param == "INFSCALE_PRM_URL"
    assert str(info.value).startswith("INFSCALE_PRM_URL: is not set")
    assert "INFSCALE_PRM_URL=http://" in str(info.value)


def test_factory_reads_url_model_and_api(monkeypatch):
    monkeypatch.setenv("INFSCALE_PRM_URL", "127.0.0.1:8000/v1")
    monkeypatch.setenv("INFSCALE_PRM_MODEL", "Qwen/Qwen2.5-Math-PRM-7B")
    monkeypatch.setenv("INFSCALE_PRM_API", "classify")
    scorer = get_scorer("prm-http")
    assert isinstance(scorer, PRMHttpScorer)
    assert scorer.name == "prm-http" and scorer.kind == "process" and scorer.process_capable
    assert scorer.url == "http://127.0.0.1:8000/classify" and scorer.model == "Qwen/Qwen2.5-Math-PRM-7B"
    monkeypatch.setenv("INFSCALE_PRM_API", "embed")
    with pytest.raises(ConfigError, match="api: got 'embed'.*pooling, classify, reward"):
        get_scorer("prm-http")


@pytest.mark.parametrize(
    "given",
    ["http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/", "http://h:8000/pooling",
     "http://h:8000/v1/score", "h:8000"],
)
def test_root_url(given):
    assert _root_url(given) == "http://h:8000"


@pytest.mark.parametrize(
    "kwargs",
    [{"api": "rerank"}, {"step_separator": ""}, {"step_token": ""}, {"good_index": -1}, {"timeout": 0},
     {"max_retries": -1}, {"max_concurrency": 0}, {"base_url": ""}],
)
def test_constructor_validation(kwargs):
    base_url = kwargs.pop("base_url", "http://127.0.0.1:1")
    with pytest.raises(ConfigError):
        PRMHttpScorer(base_url, **kwargs)


async def test_empty_batch_sends_nothing():
    with FakeOpenAIServer(prm=qwen_prm) as srv:
        assert await PRMHttpScorer(srv.root_url).score_steps(PROBLEM, [], [], context()) == []
        assert srv.calls == []


def test_one_scorer_serves_successive_event_loops():
    """``infscale.ask`` runs one event loop per question; the scorer's pool follows the loop."""
    with FakeOpenAIServer(prm=qwen_prm) as srv:
        scorer = PRMHttpScorer(srv.root_url, model="fake-model")
        first = asyncio.run(scorer.score_steps(PROBLEM, [""], ["3 * 4 = 12"], None))
        second = asyncio.run(scorer.score_steps(PROBLEM, [""], ["3 * 4 = 12"], None))  # meter None: nothing charged
        asyncio.run(scorer.aclose())
    assert first == second == pytest.approx([math.log(0.9)])


def test_transport_settings_come_from_the_environment_unless_given(monkeypatch):
    """The reward scorer's timeouts and retries follow INFSCALE_* as the generators' do."""
    monkeypatch.setenv("INFSCALE_READ_TIMEOUT", "7.5")
    monkeypatch.setenv("INFSCALE_CONNECT_TIMEOUT", "2.5")
    monkeypatch.setenv("INFSCALE_MAX_RETRIES", "1")
    s = PRMHttpScorer("http://127.0.0.1:9/v1").transport.settings
    assert (s.read_timeout, s.connect_timeout, s.max_retries) == (7.5, 2.5, 1)
    s = PRMHttpScorer("http://127.0.0.1:9/v1", timeout=3, max_retries=0).transport.settings
    assert (s.read_timeout, s.max_retries) == (3, 0)
