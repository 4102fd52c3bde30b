"""The meter: one completion per request, in order; the budget; the callback; capabilities.

Also the logprob capability check on its three faces (Python, CLI, HTTP), against the fake
OpenAI server configured to return no logprobs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import subprocess
import sys

import httpx
import pytest

import infscale
from infscale import Budget, ConfigError, Problem, SamplingParams
from infscale.backends.base import Capabilities
from infscale.backends.openai_http import OpenAIGenerator
from infscale.errors import BackendError
from infscale.meter import BUDGET, BudgetExhausted, Meter
from infscale.scorers.reward_http import PRMHttpScorer
from infscale.scorers.self_eval import SelfEvalScorer
from infscale.testing import FakeGenerator, answer_model
from infscale.testing.fake_openai import FakeOpenAIServer
from infscale.types import GenRequest

PROBLEM = Problem(id="p", question="What is 6 * 7?", reference="42")


def req(i: int, max_tokens: int = 64) -> GenRequest:
    return GenRequest(SamplingParams(max_tokens=max_tokens), messages=[{"role": "user", "content": f"q{i}"}],
                      seed=i, key=f"r{i}")


def words(n: int):
    return lambda r, rng: " ".join(["w"] * n)


# ------------------------------------------------------------------ one completion per request


async def test_generate_returns_one_completion_per_request_and_budget_for_the_refused():
    gen = FakeGenerator(lambda r, rng: r.messages[0]["content"])
    seen = []
    meter = Meter(gen, Budget(calls=3), on_completion=seen.append)
    outs = await meter.generate([req(i) for i in range(5)])
    assert [c.text for c in outs] == ["q0", "q1", "q2", "", ""]  # in order, nothing dropped
    assert [c.finish_reason for c in outs[3:]] == [BUDGET, BUDGET]
    assert [c.seed for c in outs] == [0, 1, 2, 3, 4]
    assert all(c.generated_tokens == 0 and c.prompt_tokens == 0 for c in outs[3:])
    assert gen.calls == 3 and meter.usage.calls == 3  # refusals are not calls
    assert seen == outs[:3]  # the callback saw exactly the charged completions
    assert meter.stopped_by_budget
    with pytest.raises(BudgetExhausted):  # nothing admissible: the runner's stop signal
        await meter.generate([req(9)])
    assert gen.calls == 3


async def test_an_empty_batch_costs_nothing_even_when_exhausted():
    meter = Meter(FakeGenerator(), Budget(calls=1))
    await meter.generate([req(0)])
    assert await meter.generate([]) == []
    assert [x async for x in meter.stream([])] == []


async def test_the_token_budget_caps_each_request_at_what_is_left():
    gen = FakeGenerator(words(20))
    meter = Meter(gen, Budget(generated_tokens=25))
    (a,) = await meter.generate([req(0)])
    assert a.generated_tokens == 20
    b, c = await meter.generate([req(1), req(2)])
    assert b.generated_tokens == c.generated_tokens == 5 and b.finish_reason == "length"
    assert meter.usage.generated_tokens == 30  # the cap is per request, from what was left at the call
    with pytest.raises(BudgetExhausted):
        await meter.generate([req(3)])


class Flaky(FakeGenerator):
    async def generate(self, requests):
        if any(r.key == "bad" for r in requests):
            raise BackendError("boom")
        return await super().generate(requests)


async def test_generate_settled_charges_a_failure_as_a_call_and_keeps_the_order():
    seen = []
    meter = Meter(Flaky(), on_completion=seen.append)
    bad = dataclasses.replace(req(1), key="bad")
    outs = await meter.generate_settled([req(0), bad, req(2)])
    assert [c.finish_reason for c in outs] == ["stop", "error", "stop"]
    assert meter.usage.calls == 3 and len(seen) == 3


async def test_stream_yields_every_request_once_refused_ones_as_budget():
    gen = FakeGenerator(words(3), delay=0.001)
    meter = Meter(gen, Budget(calls=2))
    got = [(i, c.finish_reason) async for i, c in meter.stream([req(i) for i in range(4)])]
    assert sorted(i for i, _ in got) == [0, 1, 2, 3]
    assert dict(got)[2] == dict(got)[3] == BUDGET and dict(got)[0] == dict(got)[1] == "stop"
    assert meter.usage.calls == 2 == gen.calls


class Staggered(FakeGenerator):
    """Request i takes 0.03 * (i + 1) seconds: they finish one by one, in order."""

    async def generate(self, requests):
        self.started += 1
        outs = []
        for r in requests:
            await asyncio.sleep(0.03 * (r.seed + 1))
            outs.append(self._one(r))
        return outs


async def test_stream_stops_when_the_budget_runs_out_and_reports_the_cancelled_as_budget():
    gen = Staggered(words(4))
    seen = []
    meter = Meter(gen, Budget(generated_tokens=4), on_completion=seen.append)
    got = {}
    async for i, c in meter.stream([req(i) for i in range(6)]):
        got[i] = c
    assert sorted(got) == list(range(6))
    charged = [i for i, c in got.items() if c.finish_reason != BUDGET]
    assert charged == [0] and meter.usage.calls == 1 and seen == [got[0]]
    assert meter.stopped_by_budget
    await asyncio.sleep(0.2)
    assert gen.calls == 1  # the rest was cancelled, not run to the end


async def test_a_consumer_that_stops_reading_cancels_the_rest():
    gen = Staggered(words(2))
    meter = Meter(gen)
    stream = meter.stream([req(i) for i in range(5)])
    i, c = await stream.__anext__()
    await stream.aclose()
    await asyncio.sleep(0.2)
    assert i == 0 and meter.usage.calls == gen.calls == 1


async def test_run_counts_every_call_through_the_callback():
    gen = FakeGenerator(answer_model(0.7))
    seen = []
    r = await infscale.run(PROBLEM, gen, "best-of-n", n=4, on_completion=seen.append)
    assert len(seen) == r.usage.calls == gen.calls == 8  # 4 samples + 4 self-evaluations
    assert sum(c.generated_tokens for c in seen) == r.usage.generated_tokens


async def test_a_call_budget_that_refuses_scoring_leaves_candidates_unscored():
    gen = FakeGenerator(answer_model(0.7), yes_prob=lambda r: 0.9)
    r = await infscale.run(PROBLEM, gen, "best-of-n", n=4, budget=Budget(calls=6))
    assert r.usage.calls == 6 and len(r.candidates) == 4
    assert [c.score is None for c in r.candidates] == [False, False, True, True]
    assert r.stopped_early


# ------------------------------------------------------------------ the HTTP reward scorer


def qwen_prm(text: str) -> list[float]:
    _, _, solution = text.partition("\n\n")
    return [0.8 for _ in solution.split("<extra_0>")[:-1]]


async def test_reward_scorer_charges_through_the_meter_and_respects_the_call_budget():
    with FakeOpenAIServer(prm=qwen_prm) as srv:
        seen = []
        meter = Meter(FakeGenerator(), Budget(calls=2), on_completion=seen.append)
        scorer = PRMHttpScorer(srv.root_url, model="fake-model")
        scores = await scorer.score_steps(PROBLEM, ["", "", ""], ["1 + 1 = 2", "2 + 2 = 4", "3 + 3 = 6"], meter)
        assert scores[:2] == [pytest.approx(math.log(0.8))] * 2 and math.isnan(scores[2])
        assert meter.usage.calls == 2 == len(seen) and meter.usage.prompt_tokens > 0
        posts = [c for c in srv.calls if c[0] == "POST"]
        assert len(posts) == 2  # the refused text was never sent
        with pytest.raises(BudgetExhausted):
            await scorer.score_steps(PROBLEM, [""], ["x"], meter)
        await scorer.aclose()


# ------------------------------------------------------------------ capabilities


def no_logprobs(gen: FakeGenerator) -> FakeGenerator:
    gen.capabilities = dataclasses.replace(gen.capabilities, logprobs=False, top_logprobs=False)
    return gen


async def test_self_eval_refuses_a_generator_without_logprobs_before_any_call():
    gen = no_logprobs(FakeGenerator())
    with pytest.raises(ConfigError) as e:
        await SelfEvalScorer().score(PROBLEM, ["Answer: 42"], Meter(gen))
    assert "self-eval" in str(e.value) and "top_logprobs" in str(e.value) and "\n" not in str(e.value)
    assert gen.calls == 0


@pytest.mark.parametrize(("strategy", "options", "names"), [
    ("weighted", {}, ["scorer", "self-eval", "logprobs"]),
    ("best-of-n", {}, ["scorer", "self-eval", "logprobs"]),
    ("bom", {}, ["scorer", "self-eval", "logprobs"]),
    ("weighted", {"by": "prob"}, ["param by", "weighted", "logprobs"]),
    ("self-eval-beam", {}, ["param mix", "self-eval-beam", "logprobs"]),
    ("beam-search", {}, None),  # arith-check needs no logprobs
])
async def test_strategies_that_need_logprobs_fail_before_any_call(strategy, options, names):
    gen = no_logprobs(FakeGenerator(answer_model(1.0)))
    if names is None:
        r = await infscale.run(PROBLEM, gen, strategy, n=2, options=options)
        assert r.answer == "42"
        return
    with pytest.raises(ConfigError) as e:
        await infscale.run(PROBLEM, gen, strategy, n=2, options=options)
    msg = str(e.value)
    assert all(x in msg for x in names) and "\n" not in msg, msg
    assert gen.calls == 0


def test_meter_require_names_unknown_capabilities():
    with pytest.raises(ValueError):
        asyncio.run(Meter(FakeGenerator()).require("telepathy", who="x", param="y"))
    assert Capabilities().logprobs  # the names checked are the dataclass's fields


async def test_python_face_over_http_without_logprobs_fails_after_the_probe_only():
    with FakeOpenAIServer(logprobs=False) as srv:
        gen = OpenAIGenerator(srv.base_url)
        probe = await gen.ensure_ready()
        assert probe["logprobs"] is False
        before = len(srv.requests)
        with pytest.raises(ConfigError, match="self-eval.*logprobs"):
            await infscale.run(PROBLEM, gen, "weighted", n=2)
        with pytest.raises(ConfigError, match="param by.*logprobs"):
            await infscale.run(PROBLEM, gen, "weighted", n=2, options={"by": "prob"})
        assert len(srv.requests) == before  # no generation request was sent
        r = await infscale.run(PROBLEM, gen, "majority", n=2)  # what needs no logprobs still works
        assert r.answer == "42"
        await gen.aclose()


def test_cli_face_exits_2_with_one_line():
    """In a subprocess: the CLI configures process-wide logging."""
    with FakeOpenAIServer(logprobs=False) as srv:
        for extra in (["--strategy", "weighted"], ["--strategy", "weighted", "--param", "by=prob"]):
            out = subprocess.run([sys.executable, "-m", "infscale.cli.main", "ask", "What is 6 * 7?", "--backend-url",
                                  srv.base_url, "--n", "2", *extra], capture_output=True, text=True, timeout=120)
            err = out.stderr.strip().splitlines()[-1]
            assert out.returncode == 2, out.stderr
            assert err.startswith("infscale: error:") and "logprobs" in err, err
            assert ("self-eval" in err) if "by=prob" not in extra else ("param by" in err), err
            assert "Traceback" not in out.stderr


def test_http_face_answers_400_naming_the_field():
    pytest.importorskip("fastapi", reason="needs the server extra: pip install 'infscale[server]'")
    from infscale.server import ServerThread, create_app

    with FakeOpenAIServer(logprobs=False) as peer:
        gen = OpenAIGenerator(peer.base_url)
        with ServerThread(create_app(gen, model_name="m")) as srv, httpx.Client(base_url=srv.root_url,
                                                                                timeout=30) as http:
            user = [{"role": "user", "content": "What is 6 * 7?"}]
            for model, extra, param in [
                ("weighted-2:m", {}, "infscale.scorer"),
                ("weighted-2:m", {"infscale": {"params": {"by": "prob"}}}, "infscale.params.by"),
                ("self-eval-beam-2:m", {}, "infscale.params.mix"),
            ]:
                for stream in (False, True):
                    r = http.post("/v1/chat/completions",
                                  json={"model": model, "messages": user, "stream": stream, **extra})
                    assert r.status_code == 400, r.text
                    err = r.json()["error"]
                    assert err["param"] == param and "logprobs" in err["message"], err
            ok = http.post("/v1/chat/completions", json={"model": "majority-2:m", "messages": user})
            assert ok.status_code == 200 and ok.json()["infscale"]["answer"] == "42"
