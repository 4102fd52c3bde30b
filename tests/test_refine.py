"""refine: verifier feedback goes back to the model, rounds stop when the verifier passes, every
round is charged, kept conversations are continued from their KV, every handle is freed."""

from __future__ import annotations

import math

import pytest

import infscale
from infscale import Budget, Problem
from infscale.scorers import get_scorer
from infscale.scorers.arith_check import explain_text
from infscale.testing import FakeGenerator, ForkingFakeGenerator, record_requests

PROBLEM = Problem(id="r", question="Tom has 3 boxes of 4 apples. How many apples?", reference="12")
WRONG = "3 * 4 = 13\nAnswer: 13"
RIGHT = "3 * 4 = 12\nAnswer: 12"


def seen(req) -> str:
    """Everything the model reads for this request."""
    return f"{req.messages or ''}{req.prompt or ''}{req.prefix}"


def learns_from_feedback(req, rng) -> str:
    """Wrong first; right once the conversation holds arith-check's correction."""
    return RIGHT if "is wrong: 3 * 4 = 12." in seen(req) else WRONG


def never_learns(req, rng) -> str:
    return WRONG


class RenderingForkingFake(ForkingFakeGenerator):
    """A forking fake with a chat template: the conversation renders to tagged text, ending with
    the assistant turn's opening, so a kept conversation can be continued by its new turns."""

    def __init__(self, reply, **kw):
        super().__init__(reply, **kw)
        self.requests = []

    @staticmethod
    def render(messages) -> str:
        return "".join(f"<{m['role']}>{m['content']}</>" for m in messages) + "<assistant>"

    async def generate(self, requests):
        self.requests += list(requests)
        return await super().generate(requests)


async def test_refine_revises_with_the_checkers_correction_and_stops_when_it_passes():
    gen = FakeGenerator(learns_from_feedback)
    r = await infscale.run(PROBLEM, gen, "refine", n=4, scorer="arith-check", seed=1, trace=True)
    assert r.answer == "12"
    assert r.info["versions"] == [2] and r.info["passed"] == [True]  # n=4, rounds=3: one chain; passed at round 1
    assert r.usage.calls == gen.calls == 2  # arith-check makes no model call
    verify = [s for s in r.trace if s["event"] == "verify"]
    assert verify[0]["verdicts"][0]["passed"] is False
    assert verify[0]["verdicts"][0]["feedback"] == "3 * 4 = 13 is wrong: 3 * 4 = 12."
    assert verify[1]["verdicts"][0]["passed"] is True


async def test_refine_charges_every_round_and_stops_after_k_revisions():
    gen = FakeGenerator(never_learns)
    r = await infscale.run(PROBLEM, gen, "refine", n=8, scorer="arith-check", seed=1, options={"rounds": 2})
    # n=8, rounds=2: 8 // 3 = 2 chains of 3 versions each
    assert r.info["versions"] == [3, 3] and r.info["passed"] == [False, False]
    assert r.usage.calls == gen.calls == 6
    assert r.usage.generated_tokens == 6 * len(WRONG.split())
    assert r.answer == "13" and all(c.score == pytest.approx(math.log(0.05)) for c in r.candidates)


async def test_rounds_zero_is_one_verified_sample_per_chain():
    gen = FakeGenerator(never_learns)
    r = await infscale.run(PROBLEM, gen, "refine", n=3, scorer="arith-check", seed=1, options={"rounds": 0})
    assert r.info["versions"] == [1, 1, 1] and gen.calls == 3


async def test_self_critique_by_default_charges_the_judge_calls():
    """No scorer named: the judge on the policy model (self-critique). Each failing version costs
    one verdict call and one critique call; the critique is what the model reads next."""
    critique = "The first step is wrong: 3 * 4 = 12."

    def reply(req, rng):
        text = seen(req)
        if "Name the first wrong step" in text:
            return critique
        return RIGHT if critique in text else WRONG

    gen = FakeGenerator(reply, yes_prob=lambda req: 0.9 if "Answer: 12" in seen(req) else 0.2)
    r = await infscale.run(PROBLEM, gen, "refine", n=4, seed=0, trace=True)
    assert r.answer == "12" and r.info["passed"] == [True]
    # version 1, verdict, critique, version 2, verdict
    assert r.usage.calls == gen.calls == 5
    verdicts = [v for s in r.trace if s["event"] == "verify" for v in s["verdicts"]]
    assert verdicts[0]["feedback"] == critique and verdicts[1]["passed"]
    assert verdicts[0]["score"] == pytest.approx(math.log(0.2))


async def test_revisions_continue_from_the_kept_conversation_and_free_every_handle():
    gen = RenderingForkingFake(learns_from_feedback)
    r = await infscale.run(PROBLEM, gen, "refine", n=4, scorer="arith-check", seed=1)
    assert r.answer == "12"
    first, revision = gen.requests
    assert first.keep and first.parent is None
    # the revision forks the first version's sequence and reads only the new turns
    assert revision.parent is not None and revision.messages is None and revision.prompt is None
    assert revision.prefix.startswith("</><user>Feedback on your solution:\n3 * 4 = 13 is wrong")
    assert revision.prefix.endswith("</><assistant>")
    assert gen.handed_out == 2 and gen.held == set()


async def test_without_a_template_the_whole_conversation_is_sent_again():
    gen = ForkingFakeGenerator(learns_from_feedback)  # kv_fork, but nothing to render a template with
    seen_requests = record_requests(gen)
    r = await infscale.run(PROBLEM, gen, "refine", n=4, scorer="arith-check", seed=1)
    assert r.answer == "12"
    revision = seen_requests[1]
    assert revision.parent is None and revision.messages[-2] == {"role": "assistant", "content": WRONG}
    assert "3 * 4 = 13 is wrong" in revision.messages[-1]["content"]
    assert gen.held == set()


async def test_plain_prompt_models_get_the_feedback_as_text():
    gen = FakeGenerator(learns_from_feedback, chat=False)
    requests = record_requests(gen)
    r = await infscale.run(PROBLEM, gen, "refine", n=4, scorer="arith-check", seed=1)
    assert r.answer == "12"
    assert requests[1].prompt.startswith(requests[0].prompt + WRONG + "\n\nFeedback on the solution:\n")
    assert requests[1].prompt.endswith("Corrected solution:\n")


@pytest.mark.parametrize("calls", [1, 2, 3])
async def test_a_call_budget_stops_refinement_and_frees_handles(calls):
    gen = RenderingForkingFake(never_learns)
    r = await infscale.run(PROBLEM, gen, "refine", n=4, scorer="arith-check", seed=1, budget=Budget(calls=calls))
    assert r.usage.calls == calls and r.answer == "13"
    assert gen.held == set()


def test_arith_check_feedback_names_the_wrong_computation_and_its_value():
    ok, total, wrong = explain_text("2 + 2 = 4\n4 * 3 = 13\nAnswer: 12")
    assert (ok, total) == (1, 3)
    assert wrong == ["4 * 3 = 13 is wrong: 4 * 3 = 12.",
                     "The answer 12 is not the last value computed (13): the answer line must state the result of "
                     "the computations."]


async def test_arith_check_verdicts():
    sc = get_scorer("arith-check")
    right, wrong, nothing = await sc.explain(PROBLEM, [RIGHT, WRONG, "twelve"], None)
    assert right.passed and right.score == 0.0 and right.feedback == ""
    assert not wrong.passed and wrong.feedback.startswith("3 * 4 = 13 is wrong")
    assert not nothing.passed and nothing.score == pytest.approx(math.log(0.5)) and "a op b = c" in nothing.feedback


async def test_refine_frees_every_handle_of_a_judge_run_on_a_forking_model():
    gen = RenderingForkingFake(never_learns, yes_prob=lambda req: 0.1)
    r = await infscale.run(PROBLEM, gen, "refine", n=9, seed=2, options={"rounds": 1})
    # a critic that writes its critique: a chain costs 2 versions + 1 critique, 9 // 3 = 3 chains
    assert r.info["versions"] == [2, 2, 2]
    assert gen.held == set() and gen.handed_out == 6
    assert r.usage.calls == gen.calls
