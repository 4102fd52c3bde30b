"""Compute-optimal inference: `infscale tune`, the `auto` strategy, batch allocation, Thresholdout.

Tuning is checked on stored runs of a scripted fake whose best policy is known in closed form;
the per-bin solver against brute force; Thresholdout statistically over many adaptive queries;
`auto` on fakes (decision reported, probe reused, no sample twice, cap, step-level hand-over,
bad policy files on every face) and, marked slow, on the embedded model with the shipped policy.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math

import numpy as np
import pytest

import infscale
from infscale import Budget, ConfigError, Problem
from infscale.cli.main import main
from infscale.evaluation import metrics
from infscale.evaluation.harness import EvalConfig, run_eval, start_run
from infscale.evaluation.store import Store
from infscale.evaluation.tune import TuneConfig, _solve, save_policy, thresholdout_parameters, tune
from infscale.strategies.auto import allocate
from infscale.strategies.policy import load_policy, packaged_policies_dir
from infscale.testing import FakeGenerator, ForkingFakeGenerator


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("INFSCALE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


# -- a scripted model with three difficulty classes ------------------------------------------

def three_classes(req, rng):
    """Sample i of a problem answers by its class (read from the question):
    easy: always right; medium: samples 0 and 1 wrong and different, the rest right;
    hopeless: samples 0 and 1 give no answer, the rest distinct wrong answers."""
    q = req.messages[-1]["content"] if req.messages is not None else req.prompt
    i = int(req.key.rsplit("/", 1)[-1])
    kind = q.split("[", 1)[1].split("]", 1)[0]
    if kind == "easy":
        return "some work\nAnswer: 42"
    if kind == "medium":
        return {0: "some work\nAnswer: 7", 1: "some work\nAnswer: 13"}.get(i, "some work\nAnswer: 42")
    return "I am not sure." if i < 2 else f"some work\nAnswer: {100 + i}"


def class_problems(per_class: int = 12) -> list[Problem]:
    return [Problem(id=f"{kind}{j}", question=f"Question {j} [{kind}]", reference="42")
            for kind in ("easy", "medium", "hopeless") for j in range(per_class)]


def stored_run(store: Store, strategies=("majority",), budgets=(1, 2, 4, 8), reply=three_classes, probs=None) -> str:
    cfg = EvalConfig(dataset="fake", strategies=list(strategies), budgets=list(budgets), params={"max_tokens": 32},
                     model="fake")
    rid = start_run(store, cfg, probs or class_problems())
    gen = FakeGenerator(reply)
    asyncio.run(run_eval(store, rid, gen))
    return rid


@pytest.mark.parametrize("objective", ["accuracy", "tokens"])
def test_tuning_finds_the_closed_form_optimum(objective):
    """Probe 2, agreement: easy = 1, medium = 1/2, hopeless = 0. The optimum per class is known:
    easy -> answer now (right, 2 samples); medium -> majority at 4 (probe {7, 13} plus two 42s:
    42 wins; at 2 the tie goes to 7); hopeless -> abstain (nothing is ever right)."""
    with Store() as st:
        rid = stored_run(st)
        pol = tune(st, [rid], "t", TuneConfig(objective=objective, probes=(2,), signals=("agreement",)))
    assert pol["probe"] == {"samples": 2} and pol["signal"] == "agreement"
    got = [(b["lo"], b["hi"], b["action"]["kind"], b["action"]["budget"]) for b in pol["bins"]]
    assert got == [(None, 0.5, "abstain", 2), (0.5, 1.0, "continue", 4), (1.0, None, "answer", 2)]
    assert pol["bins"][1]["action"]["spec"] == "majority"
    assert pol["bins"][1]["tuning"]["accuracy"] == 1.0 and pol["bins"][2]["tuning"]["accuracy"] == 1.0
    h = pol["holdout"]
    assert h["problems"] == pol["split"]["holdout"] and h["problems"] + pol["split"]["tuning"] == 36
    # as accurate as the best fixed strategy (majority at 4: right on easy and medium), for fewer tokens:
    # 4 tokens a sample; 2 samples on easy and hopeless problems, 4 on medium ones
    assert h["best_fixed"]["spec"] == "majority@4"
    assert h["policy"]["tuning_accuracy"] == h["best_fixed"]["tuning_accuracy"]
    assert h["policy"]["tokens"] < h["best_fixed"]["tokens"] == 16.0
    assert h["policy"]["wilson95"][0] <= h["policy"]["accuracy"] <= h["policy"]["wilson95"][1]
    to = pol["thresholdout"]
    assert to["queries"] >= 2 and to["threshold"] > 0 and to["sigma"] > 0  # the best fixed strategy and the policy


def test_the_per_bin_solver_is_exact_against_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(40):
        bins = []
        for b in range(int(rng.integers(1, 4))):
            opts = [(float(rng.integers(1, 30)), float(rng.integers(0, 10)), (b, j)) for j in range(int(rng.integers(1, 5)))]
            bins.append(opts)
        cap = float(rng.integers(5, 60))
        combos = list(itertools.product(*bins))
        feasible = [c for c in combos if sum(o[0] for o in c) <= cap]
        got = _solve(bins, "accuracy", cap, None)
        got_t = sum(o[0] for bo, ch in zip(bins, got) for o in bo if o[2] == ch)
        got_c = sum(o[1] for bo, ch in zip(bins, got) for o in bo if o[2] == ch)
        if feasible:
            best = max(sum(o[1] for o in c) for c in feasible)
            assert got_c == best and got_t <= cap
            assert got_t == min(sum(o[0] for o in c) for c in feasible if sum(o[1] for o in c) == best)
        target = float(rng.integers(0, 20))
        got = _solve(bins, "tokens", None, target)
        ok = [c for c in combos if sum(o[1] for o in c) >= target]
        got_t = sum(o[0] for bo, ch in zip(bins, got) for o in bo if o[2] == ch)
        if ok:
            assert got_t == min(sum(o[0] for o in c) for c in ok)


def test_tune_with_a_token_cap_and_from_the_cli(tmp_path, capsys):
    db = tmp_path / "runs.sqlite"
    with Store(db) as st:
        rid = stored_run(st, strategies=("majority", "best-of-n:scorer=arith-check"))
    code = main(["tune", rid, "--out", "capped", "--max-tokens", "10", "--probe", "2", "--db", str(db)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "policy capped for fake" in out and "holdout (" in out and "Thresholdout: threshold" in out
    pol = load_policy("capped", "fake")
    assert pol.probe == 2
    # 4 tokens a sample: the probe costs 8 per problem, majority at 4 another 8 on medium problems (a third):
    # 10.7 per problem on average, so the cap of 10 binds
    figures = pol.data["holdout"]["policy"]
    assert 8 <= figures["tuning_tokens"] <= 10 + 1e-9
    # mistakes are one line and exit 2
    assert main(["tune", rid, "--out", "x", "--objective", "speed", "--db", str(db)]) == 2
    assert main(["tune", "nope", "--out", "x", "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("infscale: error: objective") and "no run 'nope'" in err[1]


# -- Thresholdout ------------------------------------------------------------------------------

def test_thresholdout_answers_stay_within_the_stated_error_under_adaptive_queries():
    """Dwork et al.'s experiment on a fake: labels independent of 100 features, so every query's
    true accuracy is 0.5. The analyst asks each feature's agreement with the labels, keeps the
    features whose answers look best, and asks about majority-vote classifiers built from them
    (adaptive queries: each depends on earlier answers). On the tuning split alone the
    classifiers look far better than chance; the Thresholdout answers must stay within their
    stated error of the truth in at least 95% of queries (tolerance: the binomial 99.9% bound)."""
    from scipy import stats

    n_t = n_h = 500
    d = 100
    rng = np.random.default_rng(7)
    x_t, x_h = rng.choice([-1, 1], (n_t, d)), rng.choice([-1, 1], (n_h, d))
    y_t, y_h = rng.choice([-1, 1], n_t), rng.choice([-1, 1], n_h)
    prm = thresholdout_parameters(n_t, n_h)
    train = {f"f{j}": (x_t[:, j] == y_t).astype(float) for j in range(d)}
    hold = {f"f{j}": (x_h[:, j] == y_h).astype(float) for j in range(d)}
    to = metrics.Thresholdout(train, hold, threshold=prm["threshold"], sigma=prm["sigma"], budget=prm["budget"], seed=1)
    answers: list[float] = []
    try:
        signs = {}
        for j in range(d):
            a = to.query(f"f{j}")
            answers.append(a)
            signs[j] = 1 if a >= 0.5 else -1
        strength = sorted(range(d), key=lambda j: -abs(answers[j] - 0.5))
        naive = []
        for k in (5, 10, 20, 40, 80, 160):  # classifiers from the k strongest-looking features
            top = strength[:k]
            def clf(x):
                return np.sign(sum(signs[j] * x[:, j] for j in top) + 0.5)
            name = f"clf{k}"
            to._train[name] = float(np.mean(clf(x_t) == y_t))
            to._holdout[name] = float(np.mean(clf(x_h) == y_h))
            naive.append(to._train[name])
            answers.append(to.query(name))
    except metrics.HoldoutExhausted:
        pass
    assert len(answers) > d  # the budget of overfitting detections lasted into the adaptive queries
    misses = sum(abs(a - 0.5) > prm["error"] for a in answers)
    assert misses <= stats.binom.ppf(0.999, len(answers), 0.05), (misses, len(answers), prm)
    # the analysis is adaptive for real: the classifiers' tuning accuracy is far above chance
    assert max(naive) - 0.5 > 3 * 0.5 / math.sqrt(n_t)


def test_thresholdout_parameters_scale_with_the_holdout():
    small, large = thresholdout_parameters(20, 20), thresholdout_parameters(2000, 2000)
    assert small["threshold"] > large["threshold"] and small["sigma"] > large["sigma"]
    assert large["threshold"] == pytest.approx(2 * 0.5 * math.sqrt(2 / 2000))
    assert small["budget"] == 4 and large["budget"] == 44
    with pytest.raises(ConfigError):
        thresholdout_parameters(10, 0)


# -- auto on fakes -----------------------------------------------------------------------------

def write_policy(home, name, bins, *, model="fake", probe=2, signal="agreement"):
    pol = {"format": "infscale-policy", "version": 1, "name": name, "model": model, "probe": {"samples": probe},
           "signal": signal, "bins": bins}
    path = home / "policies" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(pol))
    return path


TUNED_BINS = [
    {"lo": None, "hi": 0.5, "action": {"kind": "abstain", "spec": "majority", "budget": 2}},
    {"lo": 0.5, "hi": 1.0, "action": {"kind": "continue", "spec": "majority", "budget": 4}},
    {"lo": 1.0, "hi": None, "action": {"kind": "answer", "spec": "majority", "budget": 2}},
]


class Recording(FakeGenerator):
    def __init__(self, reply, **kw):
        super().__init__(reply, **kw)
        self.keys: list[str] = []
        self.seeds: list[int] = []

    async def generate(self, requests):
        self.keys += [r.key for r in requests]
        self.seeds += [r.seed for r in requests]
        return await super().generate(requests)


@pytest.mark.parametrize("kind,answer,samples,action", [("easy", "42", 2, "answer"), ("medium", "42", 4, "continue"),
                                                         ("hopeless", None, 2, "abstain")])
def test_auto_follows_its_policy_and_reuses_the_probe(home, kind, answer, samples, action):
    write_policy(home, "three", TUNED_BINS)
    gen = Recording(three_classes)
    p = Problem(id=kind, question=f"Question [{kind}]", reference="42")
    r = asyncio.run(infscale.run(p, gen, "auto", n=16, seed=3, options={"policy": "three"}, trace=True))
    d = r.info["decision"]
    assert r.answer == answer and d["action"] == action and d["policy"] == "three" and d["probe"] == 2
    assert len(r.candidates) == samples == gen.calls == r.usage.calls
    assert len(set(gen.keys)) == len(gen.keys) and len(set(gen.seeds)) == len(gen.seeds)  # no sample twice
    assert [c.index for c in r.candidates] == list(range(samples))
    assert any(e.get("event") == "decision" and e["bin"] == d["bin"] for e in r.trace)
    # the probe is the start of what majority itself would draw: same requests, same seeds
    m = asyncio.run(infscale.run(p, Recording(three_classes), "majority", n=samples, seed=3))
    assert [c.seed for c in m.candidates] == [c.seed for c in r.candidates]


def test_auto_budget_is_capped_by_n(home):
    write_policy(home, "three", TUNED_BINS)
    p = Problem(id="m", question="Question [medium]", reference="42")
    r = asyncio.run(infscale.run(p, FakeGenerator(three_classes), "auto", n=3, options={"policy": "three"}))
    d = r.info["decision"]
    assert d["capped"] and d["budget"] == 3 and d["policy_budget"] == 4 and len(r.candidates) == 3
    r = asyncio.run(infscale.run(p, FakeGenerator(three_classes), "auto", n=1, options={"policy": "three"}))
    assert len(r.candidates) == 1 and r.info["decision"]["capped"]


def test_auto_hands_over_to_a_step_level_search(home):
    write_policy(home, "search", [{"lo": None, "hi": None,
                                   "action": {"kind": "continue", "spec": "particle-filter:scorer=arith-check",
                                              "budget": 4}}])
    gen = ForkingFakeGenerator(lambda req, rng: "3 * 4 = 12\nAnswer: 12")
    p = Problem(id="s", question="3 boxes of 4?", reference="12")
    r = asyncio.run(infscale.run(p, gen, "auto", n=8, options={"policy": "search"}))
    assert r.strategy == "auto" and r.answer == "12" and r.info["decision"]["spec"].startswith("particle-filter")
    assert gen.handed_out > 0 and gen.held == set()
    assert r.info["probe_answers"] == ["12", "12"]


def test_auto_stops_inside_a_budget(home):
    write_policy(home, "three", TUNED_BINS)
    p = Problem(id="m", question="Question [medium]", reference="42")
    r = asyncio.run(infscale.run(p, FakeGenerator(three_classes), "auto", n=16, options={"policy": "three"},
                                 budget=Budget(calls=3)))
    assert r.usage.calls <= 3 and r.stopped_early


def test_allocation_spends_where_the_marginal_gain_per_token_is_highest():
    # problem 0 gains 0.5 for 10 tokens, problem 1 gains 0.1 for 10, problem 2 is settled
    curves = [[{"tokens": 10, "accuracy": 0.2}, {"tokens": 20, "accuracy": 0.7}, {"tokens": 40, "accuracy": 0.8}],
              [{"tokens": 10, "accuracy": 0.5}, {"tokens": 20, "accuracy": 0.6}],
              [{"tokens": 10, "accuracy": 1.0}, {"tokens": 30, "accuracy": 1.0}]]
    spent = [10, 10, 10]
    assert allocate(curves, spent, 30) == [0, 0, 0]
    assert allocate(curves, spent, 40) == [1, 0, 0]   # 0.05/token beats 0.01/token
    assert allocate(curves, spent, 50) == [1, 1, 0]   # then 0.01/token (problem 1) beats 0.005 (problem 0's next)
    assert allocate(curves, spent, 1000) == [2, 1, 0]  # never buys what gains nothing
    with pytest.raises(ConfigError):
        allocate(curves, spent, -1)


# -- bad policy files --------------------------------------------------------------------------

BAD = {
    "missing": (None, "does not exist"),
    "malformed": ("{not json", "is not valid JSON"),
    "format": (json.dumps({"format": "other", "version": 1}), "format is 'other'"),
    "bins": (json.dumps({"format": "infscale-policy", "version": 1, "model": "fake", "probe": {"samples": 2},
                         "signal": "agreement", "bins": [{"lo": 0.5, "hi": None, "action": {"kind": "answer"}}]}),
             "do not cover"),
    "other-model": (json.dumps({"format": "infscale-policy", "version": 1, "model": "smollm2-135m",
                                "probe": {"samples": 2}, "signal": "agreement",
                                "bins": [{"lo": None, "hi": None, "action": {"kind": "answer"}}]}),
                    "was tuned for model 'smollm2-135m', not 'fake'"),
}


def _bad(home, case):
    text, msg = BAD[case]
    path = home / "policies" / f"{case}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if text is not None:
        path.write_text(text)
    return path, msg


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_policy_is_one_line_naming_the_file(home, case):
    path, msg = _bad(home, case)
    with pytest.raises(ConfigError) as e:
        asyncio.run(infscale.run(Problem(question="q"), FakeGenerator(), "auto", options={"policy": case}))
    text = str(e.value)
    assert "\n" not in text and str(path) in text and msg in text and text.startswith("policy:")


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_policy_on_the_cli_exits_2_before_loading_a_model(home, case, capsys):
    path, msg = _bad(home, case)
    if case == "other-model":  # the embedded default model is smollm2-135m: ask for another one
        path.write_text(path.read_text().replace("smollm2-135m", "gemma3-270m"))
        msg = "was tuned for model 'gemma3-270m', not 'smollm2-135m'"
    assert main(["ask", "What is 2 + 2?", "--strategy", "auto", "--policy", case]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("infscale: error: policy:") and msg in err[0] and str(path) in err[0]
    assert main(["ask", "q", "--strategy", "majority", "--policy", "x"]) == 2
    assert "takes no policy" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing", "malformed", "other-model"])
def test_a_bad_policy_behind_the_server_is_http_400(home, case):
    pytest.importorskip("fastapi", reason="needs the server extra")
    import httpx

    from infscale.server import ServerThread, create_app

    path, msg = _bad(home, case)
    with ServerThread(create_app(FakeGenerator(), model_name="fake")) as srv, \
            httpx.Client(base_url=srv.root_url, timeout=30) as http:
        r = http.post("/v1/chat/completions", json={"model": "auto:fake", "infscale": {"params": {"policy": case}},
                                                     "messages": [{"role": "user", "content": "q"}]})
        assert r.status_code == 400, r.text
        assert msg in r.json()["error"]["message"] and str(path) in r.json()["error"]["message"]
        ok = http.post("/v1/chat/completions", json={"model": "auto-16:fake", "seed": 1,
                                                      "messages": [{"role": "user", "content": "q"}]})
        assert ok.status_code == 200, ok.text
        ext = ok.json()["infscale"]
        assert ext["strategy"] == "auto" and ext["budget"] == 16 and ext["decision"]["policy"] == "fake"
        dflt = http.post("/v1/chat/completions", json={"model": "auto:fake", "messages": [{"role": "user", "content": "q"}]})
        assert dflt.json()["infscale"]["budget"] == 64  # no cap given: the server's largest budget


def test_the_shipped_policies_load():
    names = sorted(p.stem for p in packaged_policies_dir().glob("*.json"))
    assert "fake" in names
    for name in names:
        pol = load_policy(name, None)
        assert pol.bins and pol.probe >= 1


# -- the real model ----------------------------------------------------------------------------

@pytest.mark.slow
def test_auto_answers_on_the_embedded_model_and_reports_its_decision(engine):
    pol = load_policy(None, "smollm2-135m")  # the shipped default policy of the embedded model
    p = Problem(id="r", question="Tom has 4 apples and buys 3 more. How many apples does he have?", reference="7")
    named = engine.model_name
    engine.model_name = "smollm2-135m"  # the fixture's engine is named after its file; load_generator's, registered
    try:
        r = asyncio.run(infscale.run(p, engine, "auto", n=16, seed=0, params=infscale.SamplingParams(max_tokens=96)))
    finally:
        engine.model_name = named
    d = r.info["decision"]
    assert r.strategy == "auto" and d["policy"] == pol.name and d["probe"] == pol.probe
    assert d["action"] in ("answer", "continue", "abstain") and 0 <= d["bin"] < len(pol.bins)
    assert r.usage.generated_tokens > 0 and len(r.candidates) >= min(pol.probe, 16)
    assert (r.answer is None) == (d["action"] == "abstain" or not r.distribution)
    json.dumps(r.to_dict())  # the decision is in --json


# -- batch allocation under one token budget ----------------------------------------------------

@pytest.mark.parametrize("extra,continued", [(0, 0), (8, 1), (24, 3), (1000, 3)])
def test_eval_total_tokens_spends_where_the_gain_per_token_is_highest(home, extra, continued, capsys):
    """With the closed-form policy (medium problems gain 1.0 accuracy for 8 more tokens, easy and
    hopeless ones nothing), a batch of 3 + 3 + 3 problems whose probes cost 72 tokens continues
    exactly as many medium problems as `extra` tokens pay for, and no other problem."""
    with Store() as st:
        rid = stored_run(st)
        save_policy(tune(st, [rid], "t", TuneConfig(probes=(2,), signals=("agreement",))), "closed")
        probs = [p for p in class_problems(3)]
        cfg = EvalConfig(dataset="fake", strategies=["auto:policy=closed"], budgets=[16], model="fake",
                         params={"max_tokens": 32}, total_tokens=72 + extra)
        rid2 = start_run(st, cfg, probs)
        asyncio.run(run_eval(st, rid2, FakeGenerator(three_classes)))
        rows = {r["problem_id"]: r for r in st.get_results(rid2)}
    alloc = json.loads((home / "reports" / f"{rid2}-allocation.json").read_text())[0]
    per = {x["problem_id"]: x for x in alloc["per_problem"]}
    assert sum(per[f"medium{j}"]["budget"] == 4 for j in range(3)) == continued
    assert all(per[f"{k}{j}"]["budget"] == 2 for k in ("easy", "hopeless") for j in range(3))
    assert alloc["spent"] <= 72 + extra and alloc["probe_tokens"] == 72
    assert sum(rows[f"medium{j}"]["correct"] for j in range(3)) == continued
    assert all(rows[f"easy{j}"]["correct"] == 1 and rows[f"hopeless{j}"]["answer"] is None for j in range(3))


def test_total_tokens_needs_auto():
    with pytest.raises(ConfigError, match="total-tokens: applies to the auto strategy only"):
        EvalConfig(dataset="fake", strategies=["majority"], budgets=[2], total_tokens=100).validate()
