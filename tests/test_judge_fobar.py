"""The judge (pointwise, pairwise, critique, on a separate model) and FOBAR backward verification,
on fakes with known outcomes; scorer specs with settings."""

from __future__ import annotations

import math

import pytest

import infscale
from infscale import Budget, Problem
from infscale.errors import ConfigError
from infscale.meter import Meter
from infscale.scorers import get_scorer
from infscale.scorers.fobar import backward_question, mask_numbers
from infscale.scorers.judge import JudgeScorer, p_first
from infscale.testing import FakeGenerator, answer_model

PROBLEM = Problem(id="j", question="Tom has 3 boxes of 4 apples. How many apples?", reference="12")


def seen(req) -> str:
    return f"{req.messages or ''}{req.prompt or ''}{req.prefix}"


def test_scorer_specs_take_typed_settings_and_name_unknown_ones():
    assert get_scorer("arith-check:eps=0.1").log_eps == pytest.approx(math.log(0.1))
    j = get_scorer("judge:model=gemma3-270m,threshold=0.7")
    assert j.where.label == "judge:gemma3-270m" and j.threshold == 0.7
    with pytest.raises(ConfigError, match="unknown setting 'colour' for scorer 'judge'.*accepted: model, url"):
        get_scorer("judge:colour=red")
    with pytest.raises(ConfigError, match="cannot read eps='x'"):
        get_scorer("arith-check:eps=x")
    with pytest.raises(ConfigError, match="url"):
        get_scorer("judge:url=ftp://nope")


def test_p_first_reads_the_two_labels_and_knows_when_it_knows_nothing():
    assert p_first({" A": math.log(0.6), "B": math.log(0.2), "C": math.log(0.2)}, "a", "b") == pytest.approx(0.75)
    assert p_first({"x": 0.0}, "a", "b") == 0.5 and p_first(None, "yes", "no") == 0.5


async def test_pointwise_scores_are_log_p_yes_and_cost_one_call_each():
    gen = FakeGenerator(yes_prob=lambda r: 0.9 if "Answer: 12" in seen(r) else 0.2)
    meter = Meter(gen)
    scores = await JudgeScorer().score(PROBLEM, ["Answer: 12", "Answer: 13"], meter)
    assert scores == pytest.approx([math.log(0.9), math.log(0.2)])
    assert meter.usage.calls == 2 and meter.usage.by_model == {}


async def test_pairwise_averages_both_orders_so_a_position_bias_cancels():
    """A judge that prefers the right answer (p=0.8) but also the first position (+0.1)."""

    def yes_prob(req):
        text = seen(req)
        a_is_right = text.index("Solution A") < text.index("Answer: 12") < text.index("Solution B")
        return (0.8 if a_is_right else 0.2) + 0.1  # P(the first label, "A")

    class PairFake(FakeGenerator):
        def _one(self, r):
            c = super()._one(r)
            if r.params.top_logprobs:
                p = self.yes_prob(r)
                c.top_logprobs = [{"A": math.log(p), "B": math.log(1 - p)}]
            return c

    gen = PairFake(yes_prob=yes_prob)
    meter = Meter(gen)
    right_first, wrong_first = await JudgeScorer().compare(
        PROBLEM, [("Answer: 12", "Answer: 13"), ("Answer: 13", "Answer: 12")], meter)
    assert math.exp(right_first) == pytest.approx(0.8)  # (0.9 + (1 - 0.3)) / 2
    assert math.exp(wrong_first) == pytest.approx(0.2)
    assert meter.usage.calls == 4


async def test_a_judge_on_its_own_model_is_charged_to_the_same_budget_and_reported_apart():
    policy = FakeGenerator(answer_model(1.0, correct="12"))
    judge_model = FakeGenerator(yes_prob=lambda r: 0.7)
    judge = JudgeScorer(model="fake-judge")
    judge.where._generator = judge_model  # what model= would load
    r = await infscale.run(PROBLEM, policy, "best-of-n", n=3, scorer=judge, seed=0)
    assert policy.calls == 3 and judge_model.calls == 3
    assert r.usage.calls == 6 and r.usage.by_model["judge:fake-judge"].calls == 3
    assert r.usage.to_dict()["by_model"] == {"judge:fake-judge": {"prompt_tokens": 30, "generated_tokens": 3,
                                                                  "calls": 3}}
    assert all(c.score == pytest.approx(math.log(0.7)) for c in r.candidates)
    # the budget covers both models: 4 calls = 3 samples + 1 judged
    judge_model.calls = 0
    r = await infscale.run(PROBLEM, FakeGenerator(answer_model(1.0, correct="12")), "best-of-n", n=3, scorer=judge,
                           seed=0, budget=Budget(calls=4))
    assert r.usage.calls == 4 and judge_model.calls == 1 and sum(c.score is not None for c in r.candidates) == 1


async def test_critique_only_for_failing_solutions():
    gen = FakeGenerator(lambda r, rng: "Step one is wrong.", yes_prob=lambda r: 0.9 if "Answer: 12" in seen(r) else 0.1)
    meter = Meter(gen)
    ok, bad = await JudgeScorer().explain(PROBLEM, ["Answer: 12", "Answer: 13"], meter)
    assert ok.passed and ok.feedback == "" and not bad.passed and bad.feedback == "Step one is wrong."
    assert meter.usage.calls == 3


def test_fobar_masks_the_numbers_in_order_and_states_the_answer():
    masked = mask_numbers("Ann has 3 bags of 12 pens and 1,000 more. How many?", 2)
    assert masked == [("Ann has x bags of 12 pens and 1,000 more. How many?", 3.0),
                      ("Ann has 3 bags of x pens and 1,000 more. How many?", 12.0)]
    assert mask_numbers("How many?", 2) == []
    assert backward_question("Ann has x bags.", "36") == ("Ann has x bags. If we know the answer to the above "
                                                          "question is 36, what is the value of unknown variable x?")


def backward_solver(req, rng) -> str:
    """Solves the backward question exactly: x = answer / (the other factor)."""
    text = seen(req)
    if "unknown variable x" not in text:
        return "Answer: 12"
    q = text[text.rindex("Tom has"):]
    stated = float(q.split("answer to the above question is ")[1].split(",")[0])
    if "has x boxes" in q:
        return f"Answer: {stated / 4:g}"
    return f"Answer: {stated / 3:g}"


async def test_fobar_scores_by_agreement_and_shares_calls_between_equal_answers():
    gen = FakeGenerator(backward_solver)
    meter = Meter(gen)
    sc = get_scorer("fobar")
    s = await sc.score(PROBLEM, ["3 * 4 = 12\nAnswer: 12", "Answer: 13", "so 12.\nAnswer: 12", "no idea"], meter)
    # answer 12: both masks (3 and 4) recovered: (2 + 0.5) / 3; answer 13: 13/4 and 13/3, neither: 0.5 / 3
    assert s[0] == pytest.approx(math.log(2.5 / 3)) and s[2] == s[0]
    assert s[1] == pytest.approx(math.log(0.5 / 3)) and s[3] == -math.inf
    assert meter.usage.calls == gen.calls == 4  # 2 distinct answers x 2 masks


async def test_fobar_picks_the_backward_consistent_answer_in_best_of_n():
    gen = FakeGenerator(lambda r, rng: backward_solver(r, rng) if "unknown variable x" in seen(r)
                        else answer_model(0.3, correct="12", wrong=("13",))(r, rng))
    r = await infscale.run(PROBLEM, gen, "best-of-n", n=6, scorer="fobar", seed=4)
    assert {c.answer for c in r.candidates} == {"12", "13"}
    assert r.answer == "12"


async def test_fobar_refuses_other_tasks():
    with pytest.raises(ConfigError, match="fobar verifies math answers"):
        await get_scorer("fobar").score(Problem(question="Say hi", task="text"), ["hi"], Meter(FakeGenerator()))


async def test_a_judge_on_an_openai_compatible_server_by_url():
    """judge:url=... asks any OpenAI-compatible server; its calls are charged to the request's
    budget and reported apart."""
    from infscale.testing.fake_openai import FakeOpenAIServer

    def reply(prompt_or_messages, body, index):
        return "Yes" if "Answer: 12" in str(prompt_or_messages) else "No"

    with FakeOpenAIServer(reply=reply, models=("grader",)) as srv:
        judge = get_scorer(f"judge:url={srv.base_url},model=grader")
        policy = FakeGenerator(answer_model(0.5, correct="12", wrong=("13",)))
        r = await infscale.run(PROBLEM, policy, "best-of-n", n=4, scorer=judge, seed=1)
        label = "judge:grader"
        assert r.usage.by_model[label].calls == 4 and r.usage.calls == 8
        assert {c.answer: c.score for c in r.candidates} == {"12": 0.0, "13": -math.inf}
        assert r.answer == "12"
        assert srv.requests and all(b.get("model") == "grader" for b in srv.requests if isinstance(b, dict))


async def test_self_eval_on_a_separate_model_and_the_child_meter_shares_the_budget():
    from infscale.scorers.self_eval import SelfEvalScorer

    policy, other = FakeGenerator(answer_model(1.0, correct="12")), FakeGenerator(yes_prob=lambda r: 0.6)
    sc = get_scorer("self-eval:model=other")
    assert isinstance(sc, SelfEvalScorer) and sc.where.label == "self-eval:other"
    sc.where._generator = other
    r = await infscale.run(PROBLEM, policy, "weighted", n=2, scorer=sc, seed=0)
    assert other.calls == 2 and r.usage.by_model["self-eval:other"].calls == 2 and r.usage.calls == 4
    assert all(c.score == pytest.approx(math.log(0.6)) for c in r.candidates)
    # a child meter stops the request as the parent does
    meter = Meter(policy, Budget(calls=1))
    child = meter.on(other, "x")
    await meter.generate([infscale.GenRequest(params=infscale.SamplingParams(), prompt="a")])
    from infscale.meter import BudgetExhausted

    with pytest.raises(BudgetExhausted):
        await child.generate([infscale.GenRequest(params=infscale.SamplingParams(), prompt="b")])
    assert meter.stopped_by_budget and child.stopped_by_budget and meter.usage.by_model["x"].calls == 0
