"""refine on the real embedded model (slow: loads SmolLM2-135M): it answers, revises from the
kept KV of the conversation, respects the budget, frees every sequence and writes its trace."""

from __future__ import annotations

import asyncio

import pytest

import infscale
from infscale.cli.trace import read_trace, write_trace
from infscale.params import Budget, SamplingParams

pytestmark = pytest.mark.slow

QUESTION = "Tom has 3 boxes with 4 apples each. He eats 2 apples. How many are left?"
PARAMS = SamplingParams(temperature=0.8, max_tokens=96)


def _idle(engine) -> bool:
    asyncio.run(asyncio.sleep(0.1))
    return engine.stats()["live"] == 0 and engine.stats()["free_sequences"] == engine.n_seq_max


def test_refine_with_arith_check_feedback_on_the_engine(engine, tmp_path):
    r = asyncio.run(infscale.run(infscale.Problem(question=QUESTION, id="apples"), engine, "refine", n=4,
                                 scorer="arith-check", params=PARAMS, seed=3, trace=True, options={"rounds": 2}))
    assert r.candidates and r.answer is not None
    assert 1 <= r.info["versions"][0] <= 3
    revisions = [v for s in r.trace if s["event"] == "revise" for v in s["versions"]]
    assert all(v["forked"] for v in revisions)  # continued from the kept conversation
    verdicts = [v for s in r.trace if s["event"] == "verify" for v in s["verdicts"]]
    assert len(verdicts) == sum(r.info["versions"])
    assert all(v["feedback"] for v in verdicts if not v["passed"])
    assert r.usage.calls == sum(r.info["versions"])  # arith-check calls no model
    assert _idle(engine)
    path = tmp_path / "refine.jsonl"
    write_trace(path, {"strategy": "refine", "question": QUESTION}, r.trace, {"answer": r.answer})
    events = [e["event"] for e in read_trace(path)]
    assert events[0] == "run" and events[-1] == "result" and "verify" in events


def test_refine_self_critique_respects_a_token_budget(engine):
    budget = Budget(generated_tokens=200)
    r = asyncio.run(infscale.run(infscale.Problem(question=QUESTION, id="apples"), engine, "refine", n=8,
                                 params=PARAMS, seed=5, budget=budget))
    assert r.usage.calls >= 1
    # the token budget caps each request at what is left: a batch may overshoot by at most its size
    assert r.usage.generated_tokens <= 200 + 2 * PARAMS.max_tokens
    assert _idle(engine)
