"""Strategies on fake models: contracts, exact statistics, seeding, scorers, budgets, cancellation.

No real model is loaded: every generator here is :class:`infscale.testing.FakeGenerator` (or a
subclass defined below), and every random choice is seeded.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time

import pytest

import infscale
from infscale import Budget, ConfigError, Problem, SamplingParams
from infscale.strategies.sample import beta_leader_probability
from infscale.testing import FakeGenerator, OracleScorer, answer_model

STRATEGY_NAMES = sorted(infscale.STRATEGIES)


def problem(pid: str = "0", reference: str = "42") -> Problem:
    return Problem(id=pid, question="q", reference=reference)


def scripted(answers: list[str | None]):
    """A reply function: sample i (from the request key ``id/i``) answers ``answers[i]``
    (``None``: a text with no answer at all)."""

    def reply(req, rng):
        i = int(req.key.rsplit("/", 1)[-1])
        a = answers[i % len(answers)]
        return "I am not sure." if a is None else f"some work\nAnswer: {a}"

    return reply


def mentions(answer: str):
    """A self-eval ``yes_prob`` that believes solutions ending in ``answer``."""

    def yes_prob(req) -> float:
        texts = [m["content"] for m in req.messages] if req.messages is not None else [req.prompt]
        return 0.95 if any(f"Answer: {answer}" in t for t in texts) else 0.05

    return yes_prob


class StaggeredFake(FakeGenerator):
    """Sample i takes (i + 1) * step seconds, so completions arrive one by one in index order
    and early stopping leaves real work outstanding to cancel."""

    def __init__(self, reply, step: float = 0.02, **kw):
        super().__init__(reply, **kw)
        self.step = step

    async def generate(self, requests):
        outs = []
        for r in requests:
            i = int(r.key.rsplit("/", 1)[-1]) if "/" in r.key else 0
            try:
                await asyncio.sleep(self.step * (i + 1))
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            outs.append(self._one(r))
        return outs


# -- the project's statistical test: majority vote against its exact accuracy ----------------

def exact_majority_accuracy(p: float, n: int, n_wrong: int) -> float:
    """P(majority vote of n samples is right) when a sample is right with probability p and
    otherwise one of ``n_wrong`` wrong answers uniformly; ties are broken uniformly at random
    among the tied classes. Exact enumeration of the multinomial outcomes."""
    probs = [p] + [(1 - p) / n_wrong] * n_wrong
    total = 0.0
    for counts in itertools.product(range(n + 1), repeat=n_wrong + 1):
        if sum(counts) != n:
            continue
        coef = math.factorial(n)
        for c in counts:
            coef //= math.factorial(c)
        pr = coef * math.prod(q**c for q, c in zip(probs, counts))
        top = max(counts)
        if counts[0] == top and top > 0:
            total += pr / sum(1 for c in counts if c == top)
    return total


def test_exact_majority_accuracy_sanity():
    assert exact_majority_accuracy(0.4, 1, 3) == pytest.approx(0.4)
    assert exact_majority_accuracy(1.0, 5, 3) == pytest.approx(1.0)
    # two samples, p=0.5, one wrong answer: right if both right (1/4) or tie (1/2 * 1/2)
    assert exact_majority_accuracy(0.5, 2, 1) == pytest.approx(0.5)
    # all four answers equally likely: by symmetry (and uniform tie-breaks) each wins 1/4
    assert exact_majority_accuracy(0.25, 4, 3) == pytest.approx(0.25)
    assert exact_majority_accuracy(0.25, 5, 3) == pytest.approx(0.25)


def test_majority_vote_accuracy_matches_exact_prediction():
    """P problems, n=5 samples each, per-sample accuracy p=0.4, wrong answers uniform over 3.

    The observed accuracy must lie within 4 standard errors sqrt(q(1-q)/P) of the exact q
    (two-sided false-alarm rate ~6e-5 under the normal approximation), and q must exceed p:
    majority beats a single sample here."""
    p, n, P = 0.4, 5, 600
    q = exact_majority_accuracy(p, n, 3)
    assert q > p + 0.05

    async def go():
        gen = FakeGenerator(answer_model(p))
        right = 0
        for i in range(P):
            r = await infscale.run(problem(str(i)), gen, "majority", n=n, seed=0)
            assert len(r.candidates) == n
            right += r.answer == "42"
        return right / P, gen.calls

    acc, calls = asyncio.run(go())
    assert calls == P * n
    se = math.sqrt(q * (1 - q) / P)
    assert abs(acc - q) <= 4 * se, f"observed {acc:.3f}, exact {q:.4f}, se {se:.4f}"


def test_single_sample_accuracy_matches_p():
    """The fake model itself: 'sample' with n=1 is right with probability p (4 s.e.)."""
    p, P = 0.4, 600

    async def go():
        gen = FakeGenerator(answer_model(p))
        rs = [await infscale.run(problem(str(i)), gen, "sample", n=1) for i in range(P)]
        return sum(r.answer == "42" for r in rs) / P

    acc = asyncio.run(go())
    assert abs(acc - p) <= 4 * math.sqrt(p * (1 - p) / P)


# -- the contract every strategy keeps ---------------------------------------------------------

def check_contract(r: infscale.Result, name: str, n: int) -> None:
    assert r.strategy == name
    assert len(r.candidates) <= n
    assert r.usage.calls >= len(r.candidates)
    strat = infscale.STRATEGIES[name]
    if getattr(getattr(getattr(strat, "config", None), "expand", None), "shares_prefixes", False):
        # a tree search's solutions share the prefixes they forked from, each generated once
        assert r.usage.generated_tokens >= max((c.generated_tokens for c in r.candidates), default=0)
    else:
        assert r.usage.generated_tokens >= sum(c.generated_tokens for c in r.candidates)
    if r.distribution:
        assert sum(m.weight for m in r.distribution) == pytest.approx(1.0)
        assert all(m.weight >= 0 for m in r.distribution)
        weights = [m.weight for m in r.distribution]
        assert weights == sorted(weights, reverse=True)
        assert sum(m.count for m in r.distribution) == sum(c.answer is not None for c in r.candidates)
    if r.answer is not None:
        assert r.answers and r.answers[0] == r.answer
    else:
        assert r.distribution == [] and r.answers == []
    assert [c.index for c in r.candidates] == sorted(c.index for c in r.candidates)
    d = r.to_dict()
    assert d["strategy"] == name and d["answer"] == r.answer


@pytest.mark.parametrize("name", STRATEGY_NAMES)
@pytest.mark.parametrize("scorer", [None, "oracle"])
@pytest.mark.asyncio
async def test_every_strategy_keeps_the_result_contract(name, scorer):
    n = 6
    gen = FakeGenerator(answer_model(0.5), yes_prob=mentions("42"))
    sc = OracleScorer(0.1) if scorer == "oracle" else None
    r = await infscale.run(problem("c"), gen, name, n=n, scorer=sc, seed=1)
    check_contract(r, name, n)
    assert r.answer is not None
    assert r.usage.calls == gen.calls  # every model call is charged


@pytest.mark.parametrize("name", STRATEGY_NAMES)
@pytest.mark.asyncio
async def test_every_strategy_abstains_without_answers(name):
    gen = FakeGenerator(lambda req, rng: "I do not know.")
    r = await infscale.run(problem(), gen, name, n=4)
    check_contract(r, name, 4)
    assert r.answer is None
    assert r.distribution == []
    assert r.answers == []
    assert r.candidates and all(c.answer is None for c in r.candidates)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
@pytest.mark.asyncio
async def test_every_strategy_respects_a_call_budget(name):
    gen = FakeGenerator(answer_model(0.5))
    r = await infscale.run(problem(), gen, name, n=8, budget=Budget(calls=3))
    check_contract(r, name, 8)
    assert r.usage.calls <= 3
    assert gen.calls <= 3


def test_strategy_registry():
    assert {"greedy", "sample", "majority", "weighted", "best-of-n", "bom", "adaptive"} <= set(infscale.STRATEGIES)
    for name, s in infscale.STRATEGIES.items():
        assert s.name == name and s.summary
        assert infscale.get_strategy(name) is s
        assert infscale.get_strategy(s) is s


# -- individual strategies ----------------------------------------------------------------------

@pytest.mark.asyncio
async def test_greedy_uses_temperature_zero_and_one_sample():
    temps = []

    def reply(req, rng):
        temps.append(req.params.temperature)
        return "Answer: 42"

    gen = FakeGenerator(reply)
    r = await infscale.run(problem(), gen, "greedy", n=8, params=SamplingParams(temperature=1.0))
    assert temps == [0.0]
    assert r.n == 1 and len(r.candidates) == 1
    assert r.usage.calls == 1 and gen.calls == 1
    assert r.answer == "42"


@pytest.mark.asyncio
async def test_same_seed_same_samples_different_seed_different():
    async def texts(seed, pid="0", n=8):
        r = await infscale.run(problem(pid), FakeGenerator(answer_model(0.5)), "majority", n=n, seed=seed)
        return [c.text for c in r.candidates], [c.seed for c in r.candidates]

    a, sa = await texts(3)
    b, sb = await texts(3)
    assert a == b and sa == sb
    c, sc = await texts(4)
    assert sc != sa and c != a
    d, _ = await texts(3, pid="1")  # another problem gets its own stream
    assert d != a
    e, se_ = await texts(3, n=4)  # a sample does not depend on how many share its batch
    assert e == a[:4] and se_ == sa[:4]
    assert len(set(sa)) == len(sa)  # samples within a problem have distinct seeds


@pytest.mark.asyncio
async def test_ask_is_the_sync_entry_point():
    gen = FakeGenerator(answer_model(1.0))
    with pytest.raises(ConfigError, match="ask"):
        infscale.ask("What is 6 * 7?", "majority", n=3, generator=gen)  # inside a running loop


def test_ask_sync():
    gen = FakeGenerator(answer_model(1.0))
    r = infscale.ask("What is 6 * 7?", "majority", n=3, generator=gen, seed=5)
    assert r.answer == "42" and r.distribution[0].weight == pytest.approx(1.0)
    assert r.usage.calls == 3
    r = infscale.ask(problem(), "bom", n=4, generator=gen, scorer=OracleScorer(), k=2)
    assert r.answers == ["42"]
    with pytest.raises(ConfigError, match="question"):
        infscale.ask("   ", generator=gen)
    with pytest.raises(ConfigError, match="nope"):
        infscale.ask("q", "majority", generator=gen, nope=1)


@pytest.mark.asyncio
async def test_majority_distribution_counts():
    gen = FakeGenerator(scripted(["7", "42", "7", None, "13", "7.0"]))
    r = await infscale.run(problem(), gen, "majority", n=6)
    assert r.answer == "7"
    got = [(m.answer, m.count) for m in r.distribution]
    assert got == [("7", 3), ("42", 1), ("13", 1)]  # 7.0 joins 7; the abstaining sample has no weight
    assert [m.weight for m in r.distribution] == pytest.approx([0.6, 0.2, 0.2])


@pytest.mark.asyncio
async def test_majority_ties_go_to_first_seen():
    r = await infscale.run(problem(), FakeGenerator(scripted(["13", "42", "42", "13"])), "majority", n=4)
    assert r.answer == "13"
    r = await infscale.run(problem(), FakeGenerator(scripted(["42", "13", "13", "42"])), "majority", n=4)
    assert r.answer == "42"


@pytest.mark.asyncio
async def test_sample_answers_with_the_first_sample():
    r = await infscale.run(problem(), FakeGenerator(scripted([None, "13", "42", "42"])), "sample", n=4)
    assert r.answer == "13"
    assert r.answers[0] == "13" and set(r.answers) == {"13", "42"}


@pytest.mark.asyncio
async def test_best_of_n_oracle_finds_a_minority_correct_answer():
    script = ["7", "7", "42", "7", "13"]
    maj = await infscale.run(problem(), FakeGenerator(scripted(script)), "majority", n=5)
    assert maj.answer == "7"
    gen = FakeGenerator(scripted(script))
    r = await infscale.run(problem(), gen, "best-of-n", n=5, scorer=OracleScorer())
    assert r.answer == "42"
    assert r.usage.calls == 5  # the oracle does not call the model
    assert [c.score for c in r.candidates] == [-math.inf, -math.inf, 0.0, -math.inf, -math.inf]


def test_best_of_n_breaks_score_ties_by_mean_token_logprob():
    from infscale.tasks import get_task
    from infscale.strategies.sample import SAMPLE_STRATEGIES, select_from
    from infscale.types import Candidate

    def cand(answer, score, logprob, tokens):
        return Candidate(text=answer, answer=answer, score=score, logprob=logprob, generated_tokens=tokens)

    bon = SAMPLE_STRATEGIES["best-of-n"]
    # two samples pass the verifier; the second is more confident per token (-0.2 vs -0.5)
    cands = [cand("7", -3.0, -1.0, 10), cand("8", 0.0, -5.0, 10), cand("9", 0.0, -4.0, 20)]
    assert select_from(bon, cands, get_task("math")).answer == "9"
    # the score still comes first, whatever the confidence
    assert select_from(bon, [cand("7", -3.0, 0.0, 10), *cands[1:2]], get_task("math")).answer == "8"
    # equal on both: the first of equals
    assert select_from(bon, [cand("5", 0.0, -2.0, 4), cand("6", 0.0, -1.0, 2)], get_task("math")).answer == "5"


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.asyncio
async def test_best_of_n_self_eval_charges_scorer_calls(chat):
    n = 5
    gen = FakeGenerator(scripted(["7", "7", "42", "7", "13"]), yes_prob=mentions("42"), chat=chat)
    r = await infscale.run(problem(), gen, "best-of-n", n=n)  # default scorer: self-eval
    assert r.answer == "42"
    assert r.usage.calls == 2 * n == gen.calls
    assert r.usage.generated_tokens == n * 4 + n * 1  # 4 words per sample, 1 token per judgement
    assert r.usage.prompt_tokens == 2 * n * 10
    assert r.candidates[2].score == pytest.approx(math.log(0.95))
    assert r.candidates[0].score == pytest.approx(math.log(0.05))


@pytest.mark.asyncio
async def test_bom_returns_top_k_by_score_among_frequent():
    # 13 x5, 42 x3, 7 x1, 99 x1; the scorer likes 99 most, then 42; 99 is too rare (alpha 0.2)
    script = ["13", "42", "13", "99", "13", "42", "7", "13", "42", "13"]

    def yes(req):
        t = req.messages[1]["content"]
        return 0.99 if t.endswith("99") else 0.9 if t.endswith("42") else 0.1

    gen = FakeGenerator(scripted(script), yes_prob=yes)
    r = await infscale.run(problem(), gen, "bom", n=10, options={"k": 2, "alpha": 0.2})
    assert r.answers == ["42", "13"]
    assert r.answer == "42"
    assert r.usage.calls == 20
    # with alpha 0 every class is frequent enough and the best-scored one wins
    r0 = await infscale.run(problem(), FakeGenerator(scripted(script), yes_prob=yes), "bom", n=10,
                            options={"k": 2, "alpha": 0.0})
    assert r0.answers == ["99", "42"]
    # default k=1
    r1 = await infscale.run(problem(), FakeGenerator(scripted(script), yes_prob=yes), "bom", n=10,
                            options={"alpha": 0.2})
    assert r1.answers == ["42"]


@pytest.mark.asyncio
async def test_weighted_by_score_can_overturn_the_count():
    gen = FakeGenerator(scripted(["7", "42", "7", "42", "7"]), yes_prob=mentions("42"))
    r = await infscale.run(problem(), gen, "weighted", n=5)
    assert r.answer == "42"
    w = {m.answer: m.weight for m in r.distribution}
    assert w["42"] == pytest.approx(2 * 0.95 / (2 * 0.95 + 3 * 0.05))
    assert r.usage.calls == 10


@pytest.mark.asyncio
async def test_weighted_by_prob_needs_no_scorer_calls():
    n = 6
    gen = FakeGenerator(scripted(["7", "42", "7", "42", "7", "13"]))
    r = await infscale.run(problem(), gen, "weighted", n=n, options={"by": "prob", "prune": False})
    assert r.usage.calls == n == gen.calls
    assert all(c.score is None for c in r.candidates)
    # the fake gives every token logprob -0.5: equal weights, so (without RPC's pruning and
    # de-duplication) this is a count vote
    assert r.answer == "7"
    assert [m.weight for m in r.distribution] == pytest.approx([0.5, 2 / 6, 1 / 6])


@pytest.mark.asyncio
async def test_adaptive_stops_early_and_cancels():
    gen = FakeGenerator(answer_model(1.0), delay=0.01)
    r = await infscale.run(problem(), gen, "adaptive", n=16)
    assert r.stopped_early
    assert len(r.candidates) < 16
    assert r.answer == "42"
    assert r.usage.calls == gen.calls  # every finished call is charged, even ones the strategy never read
    # with completions arriving one at a time, the outstanding ones are really cancelled
    sgen = StaggeredFake(answer_model(1.0))
    r = await infscale.run(problem(), sgen, "adaptive", n=16)
    assert r.stopped_early and r.answer == "42"
    # unanimous answers: P(leader > 1/2) = 1 - 2^-(a+1) reaches 0.95 at a = 4
    assert len(r.candidates) == 4 == r.usage.calls == sgen.calls
    assert sgen.cancelled == 12


@pytest.mark.asyncio
async def test_adaptive_uses_everything_on_a_coin_flip():
    gen = StaggeredFake(answer_model(0.5, wrong=("7",)), step=0.001)  # arrivals in index order
    r = await infscale.run(problem(), gen, "adaptive", n=16, seed=0)
    assert {c.answer for c in r.candidates} == {"42", "7"}
    assert not r.stopped_early
    assert len(r.candidates) == 16 == r.usage.calls


@pytest.mark.asyncio
async def test_adaptive_options():
    sgen = StaggeredFake(answer_model(1.0))
    r = await infscale.run(problem(), sgen, "adaptive", n=16, options={"threshold": 0.99, "min_samples": 2})
    # 1 - 2^-(a+1) >= 0.99 first at a = 6
    assert len(r.candidates) == 6


def test_beta_leader_probability():
    # P(Beta(a+1, b+1) > 1/2)
    assert beta_leader_probability(0, 0) == pytest.approx(0.5)
    assert beta_leader_probability(5, 5) == pytest.approx(0.5)
    assert beta_leader_probability(3, 0) == pytest.approx(15 / 16)  # Beta(4,1): 1 - (1/2)^4
    assert beta_leader_probability(2, 1) == pytest.approx(11 / 16)  # Beta(3,2) tail
    assert beta_leader_probability(10, 2) > beta_leader_probability(6, 2) > 0.5
    # symmetry: P(X > 1/2 | a, b) = 1 - P(X > 1/2 | b, a)
    for a, b in [(4, 1), (7, 3), (2, 9)]:
        assert beta_leader_probability(a, b) + beta_leader_probability(b, a) == pytest.approx(1.0)


# -- budgets --------------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_call_budget_caps_samples():
    gen = FakeGenerator(answer_model(1.0))
    r = await infscale.run(problem(), gen, "majority", n=8, budget=Budget(calls=3))
    assert r.usage.calls <= 3 and gen.calls <= 3
    assert len(r.candidates) == 3
    assert r.answer == "42"


@pytest.mark.asyncio
async def test_token_budget_stops_early():
    gen = StaggeredFake(answer_model(1.0))  # completions arrive one at a time
    r = await infscale.run(problem(), gen, "majority", n=8, budget=Budget(generated_tokens=10))
    assert len(r.candidates) < 8
    assert r.usage.generated_tokens >= 10  # stops once the limit is reached
    assert r.usage.generated_tokens == sum(c.generated_tokens for c in r.candidates)
    assert r.answer == "42"


@pytest.mark.asyncio
async def test_token_budget_clips_max_tokens():
    seen = []

    def reply(req, rng):
        seen.append(req.params.max_tokens)
        return "one two three four five six seven eight nine ten eleven twelve"

    gen = FakeGenerator(reply)
    r = await infscale.run(problem(), gen, "greedy", n=1, budget=Budget(generated_tokens=5),
                           params=SamplingParams(max_tokens=100))
    assert seen == [5]
    assert r.usage.generated_tokens == 5
    assert r.candidates[0].finish_reason == "length"


@pytest.mark.asyncio
async def test_usage_counts_scorer_calls_under_a_budget():
    gen = FakeGenerator(answer_model(1.0), yes_prob=mentions("42"))
    r = await infscale.run(problem(), gen, "best-of-n", n=4, budget=Budget(calls=6))
    assert r.usage.calls == 6 == gen.calls  # 4 samples + 2 of the 4 judgements
    assert [c.score is not None for c in r.candidates] == [True, True, False, False]
    assert r.answer == "42"
    # budget spent by the samples: no judgement at all, still an answer
    gen = FakeGenerator(answer_model(1.0), yes_prob=mentions("42"))
    r = await infscale.run(problem(), gen, "best-of-n", n=4, budget=Budget(calls=4))
    assert r.usage.calls == 4 and all(c.score is None for c in r.candidates)
    assert r.answer == "42"


@pytest.mark.asyncio
async def test_seconds_budget_cancels_outstanding_work():
    gen = FakeGenerator(answer_model(1.0), delay=0.5)
    t0 = time.monotonic()
    r = await infscale.run(problem(), gen, "majority", n=4, budget=Budget(seconds=0.05))
    assert time.monotonic() - t0 < 0.4
    assert r.candidates == [] and r.answer is None and r.usage.calls == 0
    assert gen.cancelled == 4


# -- bad settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, -1, 2.5, "3", True, None])
@pytest.mark.asyncio
async def test_bad_n(n):
    with pytest.raises(ConfigError) as ei:
        await infscale.run(problem(), FakeGenerator(), "majority", n=n)
    assert ei.value.param == "n"
    assert ">= 1" in str(ei.value)


@pytest.mark.parametrize(
    ("strategy", "options", "names"),
    [
        ("majority", {"foo": 1}, ["foo", "none for this strategy"]),
        ("adaptive", {"treshold": 0.9}, ["treshold", "threshold", "min_samples"]),
        ("adaptive", {"threshold": "abc"}, ["threshold", "float"]),
        ("adaptive", {"threshold": 0.2}, ["threshold", "0.5"]),
        ("adaptive", {"min_samples": 0}, ["min_samples"]),
        ("bom", {"k": "two"}, ["param k", "int"]),
        ("bom", {"alpha": 1.5}, ["alpha"]),
        ("weighted", {"by": "votes"}, ["by", "score", "prob"]),
    ],
)
@pytest.mark.asyncio
async def test_bad_options(strategy, options, names):
    gen = FakeGenerator()
    with pytest.raises(ConfigError) as ei:
        await infscale.run(problem(), gen, strategy, n=2, options=options)
    for name in names:
        assert name in str(ei.value)
    assert gen.calls == 0


@pytest.mark.asyncio
async def test_bad_names():
    gen = FakeGenerator()
    with pytest.raises(ConfigError, match="strategy.*nope"):
        await infscale.run(problem(), gen, "nope")
    with pytest.raises(ConfigError, match="scorer.*nope"):
        await infscale.run(problem(), gen, "best-of-n", scorer="nope")
    with pytest.raises(ConfigError, match="task.*nope"):
        await infscale.run(Problem(question="q", task="nope"), gen, "majority")
    with pytest.raises(ConfigError, match="seed"):
        await infscale.run(problem(), gen, "majority", seed="1")
    assert gen.calls == 0


@pytest.mark.asyncio
async def test_options_are_parsed_from_strings():
    gen = FakeGenerator(answer_model(1.0))
    r = await infscale.run(problem(), gen, "bom", n=3, scorer=OracleScorer(), options={"k": "2", "alpha": "0.5"})
    assert r.answers == ["42"]


@pytest.mark.asyncio
async def test_trace_records_steps():
    r = await infscale.run(problem(), FakeGenerator(answer_model(1.0)), "majority", n=3, trace=True)
    events = [s["event"] for s in r.trace]
    assert events.count("sample") == 3 and events[-1] == "scored"
