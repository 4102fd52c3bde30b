"""The contract every registered strategy keeps, on a fake with the embedded engine's handles.

Iterates the registry, so a new strategy is covered without touching this file. Each strategy
runs on :class:`~infscale.testing.ForkingFakeGenerator` (``kv_fork``: kept trajectories hold
handles that must be freed), directly and through the server app on 127.0.0.1, to the end and
stopped by a budget; afterwards no handle may be held, every call must be charged, and the
result must have the documented shape.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import infscale
from infscale import Budget, Problem
from infscale.testing import ForkingFakeGenerator, FakeStepModel

STRATEGIES = sorted(infscale.STRATEGIES)
PROBLEM = Problem(id="c", question="Tom has 3 boxes of 4 apples. How many apples?", reference="12")


def next_steps(steps: tuple[str, ...]) -> dict[str, float]:
    if not steps:
        return {"3 * 4 = 12": 0.6, "3 * 4 = 13": 0.4}
    if len(steps) == 1:
        return {"12 + 0 = 12": 0.5, "Answer: 12" if steps[0].endswith("12") else "Answer: 13": 0.5}
    return {"Answer: 12": 0.8, "Answer: 13": 0.2}


def rest_of_path(req, rng: np.random.Generator) -> str:
    """The whole remaining solution after the request's prefix, one step per line (a step-level
    request cuts it at its stop string, the step delimiter)."""
    steps = FakeStepModel.steps_of(req.prefix or "")
    out = []
    while True:
        dist = next_steps(steps)
        options = list(dist)
        p = np.array([dist[o] for o in options])
        step = options[int(rng.choice(len(options), p=p / p.sum()))]
        out.append(step)
        steps = steps + (step,)
        if step.startswith("Answer:"):
            return "\n".join(out)


def forking_fake() -> ForkingFakeGenerator:
    gen = ForkingFakeGenerator(rest_of_path, yes_prob=lambda r: 0.8 if "12" in str(r.messages or r.prompt) else 0.3)
    gen.model_name = "fake"
    return gen


def check_result(r: infscale.Result, name: str) -> None:
    """The documented shape of a Result."""
    assert r.strategy == name
    assert r.usage.generated_tokens >= 0 and r.usage.calls >= 1
    if r.distribution:
        weights = [m.weight for m in r.distribution]
        assert sum(weights) == pytest.approx(1.0) and all(w >= 0 for w in weights)
        assert weights == sorted(weights, reverse=True)
        assert sum(m.count for m in r.distribution) == sum(c.answer is not None for c in r.candidates)
    if r.answer is not None:
        assert r.answers[0] == r.answer and r.answer in {m.answer for m in r.distribution} | set(r.answers)
    else:
        assert r.answers == [] and r.distribution == []
    assert [c.index for c in r.candidates] == sorted(c.index for c in r.candidates)
    # a refused request is not a sample (a search path the budget stopped is, with its steps so far)
    assert all(c.text and c.generated_tokens > 0 for c in r.candidates if c.finish_reason == "budget")
    assert r.to_dict()["strategy"] == name


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("budget", [None, Budget(calls=2), Budget(calls=5), Budget(calls=9), Budget(generated_tokens=12)],
                         ids=["to-the-end", "calls=2", "calls=5", "calls=9", "tokens=12"])
async def test_direct_run_frees_every_handle_and_keeps_the_result_shape(name, budget):
    gen = forking_fake()
    r = await infscale.run(PROBLEM, gen, name, n=4, seed=3, budget=budget)
    check_result(r, name)
    assert gen.held == set(), f"{name} left {len(gen.held)} of {gen.handed_out} handles held"
    assert r.usage.calls == gen.calls  # every call charged, strategy and scorer alike
    if budget is None:
        assert r.answer in ("12", "13") and r.candidates
    elif budget.calls is not None:
        assert r.usage.calls <= budget.calls


def test_the_step_level_strategies_really_fork():
    """The contract above is not vacuous: step-level search does hand out handles here."""
    step_level = [n for n in STRATEGIES if infscale.STRATEGIES[n].default_scorer == "arith-check"]
    assert step_level
    for name in step_level:
        gen = forking_fake()
        asyncio.run(infscale.run(PROBLEM, gen, name, n=4, seed=3))
        assert gen.handed_out > 0, name


@pytest.fixture(scope="module")
def served():
    pytest.importorskip("fastapi", reason="needs the server extra: pip install 'infscale[server]'")
    import httpx

    from infscale.server import ServerThread, create_app

    gen = forking_fake()
    with ServerThread(create_app(gen, model_name="fake")) as srv, \
            httpx.Client(base_url=srv.root_url, timeout=60) as http:
        yield gen, http


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("limits", [None, {"calls": 5}], ids=["to-the-end", "calls=5"])
def test_served_run_frees_every_handle_and_answers_in_openai_shape(served, name, limits):
    gen, http = served
    gen.held.clear()  # each test answers for its own handles
    calls_before = gen.calls
    body = {"model": f"{name}-4:fake", "seed": 3,
            "messages": [{"role": "user", "content": PROBLEM.question}]}
    if limits is not None:
        body["infscale"] = {"limits": limits}
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["object"] == "chat.completion" and data["choices"]
    assert all(c["message"]["role"] == "assistant" for c in data["choices"])
    ext = data["infscale"]
    assert ext["strategy"] == name
    assert ext["usage"]["calls"] == gen.calls - calls_before  # the server's meter saw every call
    if ext["distribution"]:
        assert sum(m["weight"] for m in ext["distribution"]) == pytest.approx(1.0)
    if limits is None:
        assert ext["answer"] in ("12", "13")
    else:
        assert ext["usage"]["calls"] <= limits["calls"]
    assert gen.held == set(), f"{name} behind the server left {len(gen.held)} handles held"
