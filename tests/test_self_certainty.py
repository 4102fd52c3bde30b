"""Self-certainty (Kang et al. 2025): the formula, the scorer on a scripted fake (best-of-n,
Borda-weighted vote, step-level search), the strategies that refuse it before any call, the HTTP
approximation from top logprobs against the fake OpenAI server, and the embedded engine (slow)."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pytest

import infscale
from infscale.backends.openai_http import OpenAIGenerator
from infscale.backends.sampling import log_softmax, self_certainty
from infscale.errors import ConfigError
from infscale.params import SamplingParams
from infscale.scorers import SCORERS, get_scorer
from infscale.scorers.self_certainty import SelfCertaintyScorer
from infscale.strategies.sample import borda_log_weights
from infscale.testing import FakeGenerator, ForkingFakeGenerator
from infscale.testing.fake_openai import FakeOpenAIServer
from infscale.types import GenRequest, Problem

PROBLEM = Problem(id="sc", question="What is 6 * 7?")

# ---------------------------------------------------------------- the formula


def test_self_certainty_is_the_kl_of_uniform_from_p_over_the_whole_vocabulary():
    # p = (0.7, 0.1, 0.1, 0.1): KL(U || p) = sum_j (1/4) log((1/4) / p_j), by hand
    p = np.array([0.7, 0.1, 0.1, 0.1])
    want = 0.25 * (math.log(0.25 / 0.7) + 3 * math.log(0.25 / 0.1))
    assert want == pytest.approx(0.4298, abs=1e-4)
    z = np.log(p)[None, :] + 3.0  # logits are defined up to a constant
    assert self_certainty(z)[0] == pytest.approx(want, abs=1e-6)
    # uniform: 0; random rows: -(1/V) sum_j log(V p_j) from log_softmax
    assert self_certainty(np.zeros((1, 500)))[0] == pytest.approx(0.0, abs=1e-6)
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(4, 3000)) * 3).astype(np.float32)
    got = self_certainty(z)
    for i in range(4):
        assert got[i] == pytest.approx(-np.mean(np.log(3000) + log_softmax(z[i])), rel=1e-5)
    # a sure model is far from uniform
    z = np.zeros((1, 100))
    z[0, 3] = 30.0
    assert self_certainty(z)[0] > 25


def test_borda_weights_rank_the_scored_samples():
    logw = borda_log_weights([3.0, 1.0, None, 2.0, math.nan], 0.5)
    assert logw[0] == pytest.approx(0.5 * math.log(3))  # rank 1 of 3 scored
    assert logw[3] == pytest.approx(0.5 * math.log(2))
    assert logw[1] == pytest.approx(0.0)
    assert logw[2] == -math.inf and logw[4] == -math.inf
    assert borda_log_weights([1.0, 1.0], 2.0) == pytest.approx([2 * math.log(2), 0.0])  # ties by order
    assert borda_log_weights([5.0, 1.0, 3.0], 0.0) == [0.0, 0.0, 0.0]  # power 0: one vote each


# ---------------------------------------------------------------- the scripted fake

ANSWERS = ("42", "41", "40", "39")
SC = {"42": 2.0, "41": 0.5, "40": 1.0, "39": 0.25}  # scripted mean self-certainty per answer


def answer_of(req) -> str:
    return ANSWERS[req.seed % len(ANSWERS)]


def sc_fake(**kw) -> FakeGenerator:
    def reply(req, rng):
        return f"some work\nAnswer: {answer_of(req)}"

    def sc(req, words):  # per token: the answer's value +- 0.5 alternately, so the mean is exactly SC
        v = SC[answer_of(req)]
        vals = [v + (0.5 if i % 2 == 0 else -0.5) for i in range(len(words))]
        if len(vals) % 2:
            vals[-1] = v
        return vals

    return FakeGenerator(reply, self_certainty=sc, **kw)


async def test_best_of_n_picks_the_most_certain_sample_with_exact_scores():
    gen = sc_fake()
    r = await infscale.run(PROBLEM, gen, "best-of-n", n=8, seed=1, scorer="self-certainty")
    for c in r.candidates:
        assert c.score == pytest.approx(SC[c.answer])
    assert r.answer == "42" and "42" in {c.answer for c in r.candidates}
    assert r.info["self_certainty"].startswith("exact")
    assert gen.calls == 8  # scoring made no call


async def test_weighted_borda_vote_is_the_papers_vote():
    gen = sc_fake()
    r = await infscale.run(PROBLEM, gen, "weighted", n=6, seed=0, scorer="self-certainty",
                           options={"by": "borda", "power": 1.0})
    scores = [c.score for c in r.candidates]
    logw = borda_log_weights(scores, 1.0)
    mass: dict[str, float] = {}
    for c, lw in zip(r.candidates, logw):
        mass[c.answer] = mass.get(c.answer, 0.0) + math.exp(lw)
    total = sum(mass.values())
    assert {m.answer: m.weight for m in r.distribution} == pytest.approx({a: v / total for a, v in mass.items()})
    assert r.answer == max(mass, key=mass.get)


async def test_weighted_by_score_refuses_an_ordinal_scorer_before_any_call():
    gen = sc_fake()
    with pytest.raises(ConfigError) as e:
        await infscale.run(PROBLEM, gen, "weighted", n=4, scorer="self-certainty")
    assert "\n" not in str(e.value) and "by=borda" in str(e.value)
    assert gen.calls == 0


@pytest.mark.parametrize("name", sorted(infscale.STRATEGIES))
async def test_every_strategy_uses_the_generation_scorer_or_refuses_before_any_call(name):
    """The contract for a generation-time scorer: a strategy either serves it from its own
    completions (and then never calls score(texts)) or refuses in one line before any call."""
    gen = ForkingFakeGenerator(lambda req, rng: "3 * 4 = 12\nAnswer: 12")
    gen.model_name = "fake"
    strat = infscale.STRATEGIES[name]
    opts = {"by": "borda"} if "by" in strat.params and "borda" in (strat.params["by"].choices or ()) else {}
    try:
        r = await infscale.run(PROBLEM, gen, name, n=4, seed=0, scorer="self-certainty", options=opts)
    except ConfigError as e:
        assert "\n" not in str(e) and gen.calls == 0, str(e)
        return
    assert not gen.held
    if strat.wants_scorer(strat.options(opts)):
        assert r.info["self_certainty"].startswith("exact"), name


@pytest.mark.parametrize("name", ["refine", "rebase", "mcts", "particle-gibbs", "weighted"])
async def test_strategies_that_cannot_use_it_say_so(name):
    gen = ForkingFakeGenerator(lambda req, rng: "3 * 4 = 12\nAnswer: 12")
    with pytest.raises(ConfigError):
        await infscale.run(PROBLEM, gen, name, n=4, scorer="self-certainty")
    assert gen.calls == 0


async def test_a_steps_self_certainty_is_its_score_in_step_level_search():
    def reply(req, rng):
        return "3 * 4 = 12\n12 - 2 = 10\nAnswer: 10" if rng.random() < 0.5 else "3 * 4 = 13\nAnswer: 13"

    gen = ForkingFakeGenerator(reply, self_certainty=lambda req, words: [float(len(w)) for w in words])
    r = await infscale.run(PROBLEM, gen, "beam-search", n=4, seed=2, scorer="self-certainty",
                           options={"width": 2}, trace=True)
    scored = [node for step in r.trace for node in step.get("nodes", []) if node["score"] is not None]
    assert scored
    for node in scored:
        words = node["step"].split()
        assert node["score"] == pytest.approx(sum(len(w) for w in words) / len(words))
    assert r.info["self_certainty"].startswith("exact") and not gen.held


def test_registered_with_its_flags():
    sc = get_scorer("self-certainty")
    assert isinstance(sc, SelfCertaintyScorer) and SCORERS["self-certainty"] is SelfCertaintyScorer
    assert sc.reads_generation and sc.ordinal and sc.process_capable and sc.requires == ("self_certainty",)
    with pytest.raises(ConfigError, match="cannot score texts"):
        asyncio.run(sc.score(PROBLEM, ["x"], None))
    assert math.isnan(sc.score_generated([None])[0])


async def test_a_generator_without_it_is_refused_before_any_call():
    gen = sc_fake()
    gen.capabilities = __import__("dataclasses").replace(gen.capabilities, self_certainty="")
    with pytest.raises(ConfigError) as e:
        await infscale.run(PROBLEM, gen, "best-of-n", n=4, scorer="self-certainty")
    assert "self-certainty" in str(e.value) and "\n" not in str(e.value) and gen.calls == 0


# ---------------------------------------------------------------- HTTP: an approximation from top logprobs


async def test_http_approximation_from_top_logprobs_is_flagged():
    def reply(src, body, i):
        return "some work\nAnswer: " + ("7", "42")[body.get("seed", 0) % 2]

    def conf(tokens, body):  # every one of the k top logprobs is -c: R = 1 - k exp(-c)
        c = 4.0 if tokens and tokens[-1].strip() == "42" else 6.0
        return [c] * len(tokens)

    with FakeOpenAIServer(reply=reply, token_confidence=conf) as srv:
        # replies are a function of the request's seed: one request per sample (no n)
        gen = OpenAIGenerator(srv.base_url, native_n=False)
        c = (await gen.generate([GenRequest(params=SamplingParams(seed=1), prompt="go", self_certainty=True)]))[0]
        r = await infscale.run(PROBLEM, gen, "best-of-n", n=4, seed=0, scorer="self-certainty")
        await gen.aclose()
        bodies = list(srv.requests)
    assert gen.capabilities.self_certainty == "top-k"
    assert c.self_certainties == pytest.approx([-math.log(1 - 20 * math.exp(-4.0))] * c.generated_tokens)
    assert any(b.get("logprobs") == 20 or b.get("top_logprobs") == 20 for b in bodies)
    assert r.answer == "42" and r.info["self_certainty"].startswith("approximate")
    for cand in r.candidates:
        want = -math.log(1 - 20 * math.exp(-(4.0 if cand.answer == "42" else 6.0)))
        assert cand.score == pytest.approx(want)


async def test_http_without_top_logprobs_refuses_in_one_line():
    with FakeOpenAIServer(logprobs=False) as srv:
        gen = OpenAIGenerator(srv.base_url)
        with pytest.raises(ConfigError) as e:
            await infscale.run(PROBLEM, gen, "best-of-n", n=4, scorer="self-certainty")
        with pytest.raises(ConfigError) as e2:
            await gen.generate([GenRequest(params=SamplingParams(), prompt="go", self_certainty=True)])
        await gen.aclose()
        generation = [b for b in srv.requests if "6 * 7" in str(b)]
    assert "\n" not in str(e.value) and "self-certainty" in str(e.value) and not generation
    assert "top_logprobs" in str(e2.value)


# ---------------------------------------------------------------- the embedded engine (slow)

MSGS = [{"role": "user", "content": "What is 17 times 23? Think step by step."}]


@pytest.mark.slow
def test_engine_reports_self_certainty_without_changing_the_samples(engine):
    p = SamplingParams(temperature=0.8, max_tokens=24, top_logprobs=20)
    plain = asyncio.run(engine.generate([GenRequest(params=p, messages=MSGS, seed=i) for i in range(3)]))
    asked = asyncio.run(engine.generate([GenRequest(params=p, messages=MSGS, seed=i, self_certainty=True)
                                         for i in range(3)]))
    for a, b in zip(plain, asked):
        assert a.self_certainties is None
        assert len(b.self_certainties) == b.generated_tokens and all(math.isfinite(v) for v in b.self_certainties)
        # the top 20 bound it from below: KL(U || p) >= -log(mass outside the top 20), up to O(k log V / V)
        for v, top in zip(b.self_certainties, b.top_logprobs):
            rest = max(1.0 - sum(math.exp(x) for x in top.values()), 1e-9)
            assert v >= -math.log(rest) - 0.01
    # asking for it does not change what is sampled (same seeds, alone in the batch each time)
    assert [a.token_ids for a in plain] == [b.token_ids for b in asked]


@pytest.mark.slow
def test_best_of_n_with_self_certainty_on_the_real_model(engine):
    r = asyncio.run(infscale.run(Problem(question="Tom has 4 apples and buys 3 more. How many apples?"), engine,
                                 "best-of-n", n=4, seed=0, scorer="self-certainty",
                                 params=SamplingParams(max_tokens=64)))
    assert r.info["self_certainty"].startswith("exact")
    scores = [c.score for c in r.candidates]
    assert all(s is not None and s > 0 for s in scores)
    best = max(range(len(scores)), key=lambda i: scores[i])
    assert r.candidates[best].answer == r.answer or r.candidates[best].answer is None


# ---------------------------------------------------------------- the evaluation harness


def test_eval_pool_scores_self_certainty_from_its_own_samples(tmp_path, monkeypatch):
    """The pool asks for self-certainty and scores from its completions (no call), so the pooled
    result at the largest budget is the strategy's own result."""
    from infscale.evaluation.harness import EvalConfig, parse_strategies, run_eval, start_run
    from infscale.evaluation.store import Store

    monkeypatch.setenv("INFSCALE_HOME", str(tmp_path / "home"))
    probs = [Problem(id=f"p{i}", question=f"Question {i}", reference="42") for i in range(3)]
    gen = sc_fake()
    cfg = EvalConfig(dataset="fake", strategies=["best-of-n:scorer=self-certainty",
                                                 "weighted:by=borda,scorer=self-certainty"], budgets=[2, 4], seeds=1)
    with Store() as st:
        rid = start_run(st, cfg, probs)
        asyncio.run(run_eval(st, rid, gen))
        rows = {(r["strategy"], r["budget"], r["problem_id"]): r for r in st.get_results(rid)}
        samples = st.get_samples(rid, problem_id="p0", seed=0, pool="pool")
    assert samples and all(s["scores"]["self-certainty"] == pytest.approx(SC[s["answer"]]) for s in samples)
    for p in probs:
        for spec in parse_strategies(cfg.strategies):
            direct = asyncio.run(infscale.run(p, gen, spec.strategy, n=4, seed=0, scorer="self-certainty",
                                              options=spec.options))
            assert rows[(spec.label, 4, p.id)]["answer"] == direct.answer


# ---------------------------------------------------------------- by name: the server and the CLI


def test_the_server_serves_it_by_name():
    import httpx

    from infscale.server import ServerThread, create_app

    gen = sc_fake()
    gen.model_name = "fake"
    with ServerThread(create_app(gen), timeout_graceful_shutdown=5.0) as srv:
        with httpx.Client(base_url=srv.root_url, timeout=30) as http:
            ok = http.post("/v1/chat/completions", json={
                "model": "best-of-n-6:fake", "messages": [{"role": "user", "content": "What is 6 * 7?"}],
                "seed": 1, "infscale": {"scorer": "self-certainty"}})  # seeded: some sample answers 42
            bad = http.post("/v1/chat/completions", json={
                "model": "refine-4:fake", "messages": [{"role": "user", "content": "What is 6 * 7?"}],
                "infscale": {"scorer": "self-certainty"}})
    assert ok.status_code == 200, ok.text
    assert ok.json()["choices"][0]["message"]["content"].strip().endswith("42")
    assert bad.status_code == 400 and "self-certainty" in bad.text


@pytest.mark.slow
def test_the_cli_takes_it_by_name(capsys):
    from infscale.cli.main import main

    code = main(["ask", "Tom has 4 apples and buys 3 more. How many apples?", "--strategy", "best-of-n",
                 "--n", "3", "--scorer", "self-certainty", "--max-tokens", "48", "--json"])
    out = capsys.readouterr().out
    assert code in (0, None)
    d = json.loads(out)
    assert all(c["score"] is not None and c["score"] > 0 for c in d["candidates"])
