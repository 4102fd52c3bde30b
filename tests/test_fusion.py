"""Fusion (genselect, usc, moa, tournament) and hint marginalization on fakes with known outcomes."""

from __future__ import annotations

import math
import re

import pytest

import infscale
from infscale import Budget, Problem
from infscale.strategies.fusion import parse_pick, with_context
from infscale.testing import FakeGenerator, answer_model, record_requests

PROBLEM = Problem(id="f", question="Tom has 3 boxes of 4 apples. How many apples?", reference="12")


def seen(req) -> str:
    return f"{req.messages or ''}{req.prompt or ''}{req.prefix}"


@pytest.mark.parametrize("text, k, pick", [
    ("3.", 4, 3),                                   # after the prefilled "The best solution is Solution "
    ("#2 because it adds correctly", 4, 2),
    ("Solution 1 is wrong. Solution 3 is correct.", 4, 3),
    ("The best solution is Solution 2, since 1 forgot a box.", 4, 2),
    ("**Judgment: 4**", 4, 4),
    ("I think response 2 is the most consistent", 3, 2),
    ("Only Solution 2 makes sense.", 3, 2),
    ("Solutions 1 and 2 disagree.", 3, None),        # two numbers, no verdict
    ("7", 4, None),                                  # out of range
    ("They are all good.", 4, None),
    ("", 4, None),
])
def test_parse_pick(text, k, pick):
    assert parse_pick(text, k) == pick


def selector(pick_answer: str | None):
    """A model that answers 12 or 13 and, asked to select, names the shown solution whose answer
    is ``pick_answer`` (or rambles when it is None)."""
    base = answer_model(0.5, correct="12", wrong=("13",))

    def reply(req, rng):
        text = seen(req)
        if "Compare the solutions above" in text or "most consistent with the others" in text:
            if pick_answer is None:
                return "All of them look fine to me."
            label = "Solution" if "Compare the solutions" in text else "Response"
            shown = re.findall(rf"{label} (\d+):\\n(?:some work\\n)?Answer: (\d+)", text)
            return next(num for num, ans in shown if ans == pick_answer) + "."
        return base(req, rng)

    return reply


async def test_genselect_follows_the_picks_over_shuffled_repeats():
    gen = FakeGenerator(selector("13"))
    requests = record_requests(gen)
    r = await infscale.run(PROBLEM, gen, "genselect", n=6, seed=2, trace=True)
    assert {c.answer for c in r.candidates} == {"12", "13"}
    assert r.answer == "13" and r.distribution[0].weight == 1.0  # every pick went to 13's class
    assert r.info["picked"] == r.info["asked"] == 3
    select = [s for s in r.trace if s["event"] == "select"][0]
    assert len(select["orders"]) == 3 and len({tuple(o) for o in select["orders"]}) > 1  # shuffled
    sel = [q for q in requests if q.prefix]
    assert all(q.prefix == "The best solution is Solution " for q in sel)
    assert all(q.params.temperature == 0 for q in sel)
    assert r.usage.calls == gen.calls == 6 + 3


async def test_genselect_with_unparseable_picks_falls_back_to_the_vote():
    gen = FakeGenerator(selector(None))
    r = await infscale.run(PROBLEM, gen, "genselect", n=6, seed=2)
    assert r.info["picked"] == 0 and r.info["asked"] == 3
    maj = await infscale.run(PROBLEM, FakeGenerator(selector(None)), "majority", n=6, seed=2)
    assert r.answer == maj.answer and [m.weight for m in r.distribution] == [m.weight for m in maj.distribution]


async def test_genselect_makes_no_selection_call_for_one_distinct_answer():
    gen = FakeGenerator(answer_model(1.0, correct="12"))
    r = await infscale.run(PROBLEM, gen, "genselect", n=4, seed=0)
    assert r.answer == "12" and gen.calls == 4 and r.info["asked"] == 0


async def test_usc_shows_every_response_once():
    gen = FakeGenerator(selector("12"))
    r = await infscale.run(PROBLEM, gen, "usc", n=5, seed=1, trace=True)
    sel = [s for s in r.trace if s["event"] == "select"][0]
    assert sel["shown"] == 5 and len(sel["orders"]) == 1
    assert r.answer == "12" and gen.calls == 6


async def test_moa_aggregates_from_the_proposals():
    def reply(req, rng):
        text = seen(req)
        if "written by other solvers" in text:
            return "Solutions agree on 3 * 4.\n3 * 4 = 12\nAnswer: 12"
        return answer_model(0.0, correct="12", wrong=("13", "14"))(req, rng)

    gen = FakeGenerator(reply)
    r = await infscale.run(PROBLEM, gen, "moa", n=5, seed=0, trace=True)
    assert r.answer == "12" and r.info["aggregated"] and len(r.candidates) == 1
    assert gen.calls == 5  # 4 proposals + the aggregate
    layers = await infscale.run(PROBLEM, FakeGenerator(reply), "moa", n=7, seed=0, options={"layers": 2})
    assert layers.usage.calls == 3 + 3 + 1 and len(layers.info["layers"]) == 2


async def test_moa_without_an_aggregated_answer_takes_the_last_layers_majority():
    def reply(req, rng):
        if "written by other solvers" in seen(req):
            return "I cannot decide."
        return "Answer: 12"

    r = await infscale.run(PROBLEM, FakeGenerator(reply), "moa", n=4, seed=0)
    assert r.answer == "12" and not r.info["aggregated"] and len(r.candidates) == 3


def pair_judge(right: str):
    """Top logprobs for a pairwise question: the solution with ``right`` wins with p=0.9."""

    class PairFake(FakeGenerator):
        def _one(self, req):
            c = super()._one(req)
            if req.params.top_logprobs:
                text = seen(req)
                a = text[text.index("Solution A"):text.index("Solution B")]
                p = 0.9 if f"Answer: {right}" in a else 0.1
                c.top_logprobs = [{"A": math.log(p), "B": math.log(1 - p)}]
            return c

    return PairFake


async def test_tournament_crowns_the_answer_the_judge_prefers_in_every_match():
    gen = pair_judge("12")(answer_model(0.25, correct="12", wrong=("13", "14", "15")))
    r = await infscale.run(PROBLEM, gen, "tournament", n=12, seed=1, trace=True)
    distinct = len(r.distribution)
    assert distinct >= 3
    assert r.answer == "12"
    matches = [m for s in r.trace if s["event"] == "round" for m in s["matches"]]
    assert len(matches) == distinct - 1
    assert r.usage.calls == gen.calls == 12 + 2 * (distinct - 1)


async def test_tournament_with_a_pointwise_scorer_uses_bradley_terry_on_the_scores():
    """arith-check scores 'Answer: 12' and 'Answer: 13' alike (nothing to check): no preference,
    the first of each pair goes on; a wrong computation loses to a right one."""
    def reply(req, rng):
        return "3 * 4 = 12\nAnswer: 12" if rng.random() < 0.3 else "3 * 4 = 13\nAnswer: 13"

    gen = FakeGenerator(reply)
    r = await infscale.run(PROBLEM, gen, "tournament", n=6, scorer="arith-check", seed=0, trace=True)
    assert {c.answer for c in r.candidates} == {"12", "13"}
    match = [m for s in r.trace if s["event"] == "round" for m in s["matches"]]
    assert len(match) == 1
    right_first = r.candidates[match[0]["a"]].answer == "12"
    assert match[0]["p_a"] == pytest.approx(1 / 1.05 if right_first else 0.05 / 1.05)
    assert r.answer == "12" and gen.calls == 6  # arith-check calls no model


async def test_hint_marginalization_draws_hints_from_the_previous_round():
    """A model that repeats the hinted answer: the hints of round r are draws from round r-1's
    answers, so the distribution can only narrow."""

    def reply(req, rng):
        m = re.search(r"the answer is near to (\d+)", seen(req))
        if m:
            return f"Answer: {m.group(1)}"
        return answer_model(0.5, correct="12", wrong=("13",))(req, rng)

    gen = FakeGenerator(reply)
    r = await infscale.run(PROBLEM, gen, "hint-marginalization", n=9, seed=3, trace=True)
    rounds = r.info["rounds"]
    assert len(rounds) == 3 and all(len(x) == 3 for x in rounds)
    for before, after in zip(rounds, rounds[1:]):
        assert set(after) <= set(before)
    steps = [s for s in r.trace if s["event"] == "round"]
    assert steps[0]["hints"] == [None] * 3 and all(h in rounds[0] for h in steps[1]["hints"])
    assert [c.answer for c in r.candidates] == rounds[-1]
    assert gen.calls == 9


async def test_hint_marginalization_under_a_call_budget_keeps_the_last_complete_round():
    r = await infscale.run(PROBLEM, FakeGenerator(answer_model(1.0, correct="12")), "hint-marginalization", n=9,
                           seed=0, budget=Budget(calls=4))
    assert r.usage.calls == 4 and r.answer == "12" and len(r.candidates) == 4


def test_with_context_keeps_the_task_prompt():
    p = with_context(PROBLEM, "(Hint: 12.)")
    assert p.question.endswith("How many apples?\n\n(Hint: 12.)") and p.task == "math"
    m = with_context(Problem(messages=[{"role": "user", "content": "Q?"}]), "extra")
    assert m.messages[-1]["content"] == "Q?\n\nextra"


@pytest.mark.parametrize("strategy, scorer", [("refine", "arith-check"), ("refine", None), ("genselect", None),
                                              ("usc", None), ("moa", None), ("tournament", None),
                                              ("hint-marginalization", None)])
def test_every_refinement_and_fusion_strategy_at_n_generates_about_n_samples_worth_of_tokens(strategy, scorer):
    """The band of tests/test_compute_matched.py (0.5x to 2x the tokens of n independent samples),
    scorer and selection calls included, on a model whose every reply is a wrong 4-token solution
    (so refinement never passes and runs all its rounds) and whose verdicts are low."""
    import asyncio

    n = 8
    one = "3 * 4 = 13\nAnswer: 13"  # 4 whitespace tokens... and a wrong product

    def reply(req, rng):
        return one if rng.random() < 0.5 else one.replace("13", "14")

    samples = asyncio.run(infscale.run(PROBLEM, FakeGenerator(reply), "majority", n=n, seed=0)).usage.generated_tokens
    r = asyncio.run(infscale.run(PROBLEM, FakeGenerator(reply, yes_prob=lambda q: 0.1), strategy, n=n, seed=0,
                                 scorer=scorer))
    ratio = r.usage.generated_tokens / samples
    assert 0.5 <= ratio <= 2.0, (strategy, scorer, ratio)
