"""Step-level search support: self-evaluation of the latest step (fake model and SmolLM2), the
process_capable flags, and whether a generator reports which stop string ended a completion."""

from __future__ import annotations

import logging
import math

import pytest

import infscale
from infscale import Budget, ConfigError, Problem, SamplingParams
from infscale.tasks import get_task
from infscale.backends.base import Capabilities
from infscale.backends.openai_http import OpenAIGenerator
from infscale.scorers import SCORERS, Scorer
from infscale.scorers.arith_check import ArithCheckScorer
from infscale.scorers.self_eval import QUESTION, STEP_QUESTION, SelfEvalScorer
from infscale.meter import Meter
from infscale.testing import FakeGenerator
from infscale.testing.fake_openai import FakeOpenAIServer
from infscale.types import GenRequest

PROBLEM = Problem(id="p", question="Tom has 3 boxes with 4 apples each. How many apples?", reference="12")


def context(gen, budget: Budget | None = None) -> Meter:
    return Meter(gen, budget or Budget())


def text_of(req) -> str:
    return "\n".join(m["content"] for m in req.messages) if req.messages is not None else req.prompt


def judge_steps(req) -> float:
    """A fake self-evaluator that only believes the step 3 * 4 = 12 (and needs to see it)."""
    t = text_of(req)
    assert STEP_QUESTION in t and QUESTION not in t
    last = t.split("Last step:\n", 1)[1]
    return 0.9 if last.startswith("3 * 4 = 12\n") else 0.2


def is_process_scorer(scorer) -> bool:
    """The search core's test for a scorer it can weigh steps with."""
    return getattr(scorer, "process_capable", False) or scorer.kind == "process"


# ---------------------------------------------------------------- self-eval, fake model


@pytest.mark.parametrize("chat", [True, False])
async def test_self_eval_scores_each_step_from_p_yes(chat):
    gen = FakeGenerator(yes_prob=judge_steps, chat=chat)
    ctx = context(gen)
    scores = await SelfEvalScorer().score_steps(
        PROBLEM, ["", "3 * 4 = 12\n", "3 * 4 = 12\n"], ["3 * 4 = 12", "12 - 1 = 11", "3 * 4 = 12\n"], ctx)
    assert scores == pytest.approx([math.log(0.9), math.log(0.2), math.log(0.9)])
    assert ctx.usage.calls == 3 and ctx.usage.generated_tokens == 3  # one greedy token per step
    assert gen.calls == 3


async def test_self_eval_step_prompt_shows_question_prefix_and_step():
    seen = []

    def yes_prob(req):
        seen.append(req)
        return 0.7

    gen = FakeGenerator(yes_prob=yes_prob)
    await SelfEvalScorer().score_steps(PROBLEM, ["", "3 * 4 = 12\n12 - 2 = 10\n"], ["3 * 4 = 12", "Answer: 10"],
                                       context(gen))
    first, second = (text_of(r) for r in seen)
    assert PROBLEM.question in first and "Previous steps:\n(none)\nLast step:\n3 * 4 = 12\n" in first
    assert "Previous steps:\n3 * 4 = 12\n12 - 2 = 10\nLast step:\nAnswer: 10\n" in second
    assert second.endswith(STEP_QUESTION)
    for r in seen:  # greedy, one token, top logprobs: the shape p_yes needs
        assert r.params.temperature == 0.0 and r.params.max_tokens == 1 and r.params.top_logprobs == 20


async def test_self_eval_plain_prompt_for_base_models():
    seen = []
    gen = FakeGenerator(yes_prob=lambda r: seen.append(r) or 0.5, chat=False)
    (s,) = await SelfEvalScorer().score_steps(PROBLEM, [""], ["3 * 4 = 12"], context(gen))
    assert seen[0].messages is None and seen[0].prompt.endswith(STEP_QUESTION + "\nReply:")
    assert s == pytest.approx(math.log(0.5))


async def test_self_eval_outcome_score_unchanged():
    def yes_prob(req):
        t = text_of(req)
        assert QUESTION in t and STEP_QUESTION not in t
        return 0.95 if "Answer: 12" in t else 0.05

    gen = FakeGenerator(yes_prob=yes_prob)
    ctx = context(gen)
    scores = await SelfEvalScorer().score(PROBLEM, ["3 * 4 = 12\nAnswer: 12", "3 * 4 = 13\nAnswer: 13"], ctx)
    assert scores == pytest.approx([math.log(0.95), math.log(0.05)])
    assert ctx.usage.calls == 2


async def test_self_eval_steps_empty_batch_and_mismatch():
    gen = FakeGenerator()
    assert await SelfEvalScorer().score_steps(PROBLEM, [], [], context(gen)) == []
    with pytest.raises(ValueError, match="one prefix per step"):
        await SelfEvalScorer().score_steps(PROBLEM, ["", ""], ["x"], context(gen))


def test_p_yes_sums_spellings_and_defaults_to_half():
    p = SelfEvalScorer.p_yes({" yes": math.log(0.3), "Yes": math.log(0.3), "NO": math.log(0.2), "x": -0.1})
    assert p == pytest.approx(0.75)
    assert SelfEvalScorer.p_yes({"maybe": -0.1}) == 0.5
    assert SelfEvalScorer.p_yes(None) == 0.5


# ------------------------------------------------------------------ capability flags


class OutcomeOnly(Scorer):
    name = "outcome-only"

    async def score(self, problem, texts, ctx):
        return [0.0] * len(texts)


def test_process_capable_flags():
    assert Scorer.process_capable is False and OutcomeOnly.process_capable is False
    assert SelfEvalScorer.process_capable is True and SelfEvalScorer.kind == "outcome"
    assert ArithCheckScorer.process_capable is True and ArithCheckScorer.kind == "process"
    assert is_process_scorer(SelfEvalScorer()) and is_process_scorer(ArithCheckScorer())
    assert not is_process_scorer(OutcomeOnly())


def test_every_process_capable_registered_scorer_implements_score_steps(monkeypatch):
    monkeypatch.setenv("INFSCALE_PRM_URL", "http://127.0.0.1:1")
    for name, factory in SCORERS.items():
        scorer = factory()
        assert scorer.name == name
        if is_process_scorer(scorer):
            assert type(scorer).score_steps is not Scorer.score_steps, name


def test_prm_http_registered_and_needs_its_url(monkeypatch):
    monkeypatch.delenv("INFSCALE_PRM_URL", raising=False)
    with pytest.raises(ConfigError, match="INFSCALE_PRM_URL"):
        SCORERS["prm-http"]()


# ------------------------------------------------------------------ the real model


@pytest.mark.slow
async def test_self_eval_steps_on_smollm2():
    pytest.importorskip("llama_cpp", reason="needs the embedded engine: pip install 'infscale[embedded]'")
    try:
        gen = infscale.load_generator("smollm2-135m")
    except ConfigError as e:
        pytest.skip(str(e))
    ctx = context(gen)
    prefixes = ["", "3 * 4 = 12\n", "3 * 4 = 12\n"]
    steps = ["3 * 4 = 12", "Answer: 12", "Answer: 7"]
    scores = await SelfEvalScorer().score_steps(PROBLEM, prefixes, steps, ctx)
    assert len(scores) == 3
    assert all(math.isfinite(s) and s <= 0.0 for s in scores), scores
    assert ctx.usage.calls == 3  # one call per step, charged through the meter
    assert ctx.usage.generated_tokens == 3 and ctx.usage.prompt_tokens > 0


# ------------------------------------------- stop reporting (read by the search core)


def stop_chat(content: str, **params) -> GenRequest:
    return GenRequest(SamplingParams(**params), messages=[{"role": "user", "content": content}])


async def test_server_reporting_stop_reason_fills_completion_stop(caplog):
    caplog.set_level(logging.WARNING, logger="infscale")
    with FakeOpenAIServer(reply=lambda s, b, i: "3 * 4 = 12\n12 - 2 = 10\nAnswer: 10") as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            line, whole = await gen.generate([stop_chat("q", stop=("\n",)), stop_chat("q", stop=("Question:",))])
            assert gen.capabilities.reports_stop is True and gen.probe["stop_reason"] is True
        probes = [b for b in srv.requests if b.get("stop") == [" 4", "\n"]]
    assert len(probes) == 1 and probes[0]["max_tokens"] == 8  # probed once, cheaply
    assert line.text == "3 * 4 = 12" and line.finish_reason == "stop" and line.stop == "\n"
    assert whole.finish_reason == "stop" and whole.stop is None  # the end of the text
    assert [r for r in caplog.records if r.levelno == logging.WARNING] == []


async def test_server_without_stop_reason_is_detected_and_warned(caplog):
    caplog.set_level(logging.WARNING, logger="infscale")
    with FakeOpenAIServer(stop_reason=False, reply=lambda s, b, i: "a\nb") as srv:
        async with OpenAIGenerator(srv.base_url) as gen:
            (c,) = await gen.generate([stop_chat("q", stop=("\n",))])
            assert gen.capabilities.reports_stop is False and gen.probe["stop_reason"] is False
    assert c.text == "a" and c.finish_reason == "stop" and c.stop is None  # cannot tell
    (warning,) = [r for r in caplog.records if r.name == "infscale" and r.levelno == logging.WARNING]
    assert "returns no stop_reason" in warning.getMessage() and "reports_stop is False" in warning.getMessage()


async def test_modes_assume_stop_reporting():
    assert OpenAIGenerator("http://127.0.0.1:1", model="m", mode="full").capabilities.reports_stop is True
    assert OpenAIGenerator("http://127.0.0.1:1", model="m", mode="basic").capabilities.reports_stop is False
    assert OpenAIGenerator("http://127.0.0.1:1").capabilities.reports_stop is False  # until probed
    assert Capabilities().reports_stop is True  # the embedded engine reports its stops
    assert FakeGenerator().capabilities.reports_stop is True


def test_sglang_matched_stop_is_read_too():
    gen = OpenAIGenerator("http://127.0.0.1:1", model="m", mode="full")
    req = stop_chat("q", stop=("\n", "END"))
    data = {"choices": [{"message": {"content": "a"}, "finish_reason": "stop", "matched_stop": "END"}]}
    assert gen._parse(data, req, "/chat/completions", None).stop == "END"
    data["choices"][0]["matched_stop"] = 151643  # a stop token id: not a stop string
    assert gen._parse(data, req, "/chat/completions", None).stop is None
