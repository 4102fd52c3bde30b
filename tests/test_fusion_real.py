"""Fusion, tournament, hint marginalization, FOBAR and a judge on a separate model, on the real
embedded model (slow: loads SmolLM2-135M, and Gemma 3 270M for the separate judge): each
answers, stays in its budget, frees every sequence and writes its trace."""

from __future__ import annotations

import asyncio

import pytest

import infscale
from infscale.cli.trace import read_trace, write_trace
from infscale.errors import ConfigError
from infscale.params import Budget, SamplingParams
from infscale.scorers import get_scorer

pytestmark = pytest.mark.slow

QUESTION = "Tom has 3 boxes with 4 apples each. He eats 2 apples. How many are left?"
PARAMS = SamplingParams(temperature=0.8, max_tokens=64)


def _run(engine, strategy, n=3, **kw):
    return asyncio.run(infscale.run(infscale.Problem(question=QUESTION, id="apples"), engine, strategy, n=n,
                                    params=PARAMS, seed=1, trace=True, **kw))


def _idle(engine) -> bool:
    asyncio.run(asyncio.sleep(0.1))
    return engine.stats()["live"] == 0 and engine.stats()["free_sequences"] == engine.n_seq_max


@pytest.mark.parametrize("strategy, options", [("genselect", {"repeats": 2}), ("usc", {}), ("moa", {}),
                                               ("tournament", {}), ("hint-marginalization", {})])
def test_fusion_strategies_answer_on_the_engine_and_write_their_trace(engine, tmp_path, strategy, options):
    r = _run(engine, strategy, options=options)
    assert r.candidates and r.answer is not None and r.usage.calls >= 3
    assert _idle(engine)
    path = tmp_path / "t.jsonl"
    write_trace(path, {"strategy": strategy, "question": QUESTION}, r.trace, r.to_dict())
    events = read_trace(path)
    assert events[0]["event"] == "run" and events[-1]["answer"] == r.answer and len(events) >= 3


def test_genselect_respects_a_call_budget(engine):
    r = _run(engine, "genselect", n=4, budget=Budget(calls=5))
    assert r.usage.calls <= 5 and r.answer is not None
    assert _idle(engine)


def test_fobar_scores_best_of_n_by_backward_agreement(engine):
    scorer = get_scorer("fobar:masks=1,max_tokens=64")
    r = _run(engine, "best-of-n", n=2, scorer=scorer)
    assert r.answer is not None and all(c.score is not None for c in r.candidates if c.answer is not None)
    distinct = len({c.answer for c in r.candidates if c.answer is not None})
    assert r.usage.calls == 2 + distinct  # one backward solution per distinct answer and mask
    assert _idle(engine)


def test_gemma_judges_smollm_charged_to_the_same_budget_and_reported_apart(engine):
    try:
        scorer = get_scorer("judge:model=gemma3-270m")
        from infscale.models import resolve_model

        resolve_model("gemma3-270m")
    except ConfigError as e:
        pytest.skip(str(e))
    r = _run(engine, "best-of-n", n=2, scorer=scorer)
    judge = r.usage.by_model["judge:gemma3-270m"]
    assert judge.calls == 2 and judge.generated_tokens == 2  # one verdict token per candidate
    assert r.usage.calls == 4 and r.to_dict()["usage"]["by_model"]["judge:gemma3-270m"]["calls"] == 2
    assert all(c.score is not None and c.score <= 0 for c in r.candidates)
    assert _idle(engine)
