"""The evaluation harness on fake models: specs, sample reuse, storage, costs, resume, the CLI.

Every generator here is a deterministic fake (:class:`infscale.testing.FakeGenerator`, or the
fake OpenAI server for the CLI), so an interrupted and resumed run must end with exactly the
numbers of an uninterrupted one. One test marked slow runs a tiny grid on the embedded model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import infscale
import infscale.scorers
from infscale import ConfigError, Problem, SamplingParams
from infscale.cli.main import main
from infscale.datasets import arith_problems
from infscale.evaluation.harness import (
    EvalConfig,
    metrics_inputs,
    parse_budgets,
    parse_strategies,
    run_eval,
    start_run,
    subsample_indices,
)
from infscale.evaluation.store import Store
from infscale.testing import FakeGenerator, OracleScorer

EXTRA = {"oracle": lambda: OracleScorer(false_positive_rate=0.2)}


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("INFSCALE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def noisy_reply(p_correct: float = 0.5):
    """Right (the problem's reference, read from a marker in the question) with probability
    ``p_correct``, else one of three wrong answers; token counts vary with the text."""

    def reply(req, rng):
        q = req.messages[-1]["content"] if req.messages is not None else req.prompt
        ref = q.rsplit("[ref=", 1)[1].split("]", 1)[0]
        if rng.random() < p_correct:
            return f"work {int(rng.integers(1, 5)) * 'x '}\nAnswer: {ref}"
        return f"work {int(rng.integers(1, 5)) * 'y '}\nAnswer: {int(ref) + int(rng.integers(1, 4))}"

    return reply


def problems(k: int = 6) -> list[Problem]:
    return [Problem(id=f"p{i}", question=f"Question {i} [ref={10 + i}]", reference=str(10 + i)) for i in range(k)]


def new_run(store: Store, config: EvalConfig, probs=None) -> str:
    return start_run(store, config, probs or problems(), scorers=EXTRA)


def run(store: Store, run_id: str, gen) -> dict:
    return asyncio.run(run_eval(store, run_id, gen, scorers=EXTRA))


def results_by_key(store: Store, run_id: str) -> dict:
    return {(r["strategy"], r["budget"], r["seed"], r["problem_id"]): r for r in store.get_results(run_id)}


# -- specs ---------------------------------------------------------------------------------------

def test_strategy_specs_parse_with_settings_and_scorers():
    specs = parse_strategies("greedy,majority,best-of-n:scorer=arith-check,bom:k=2,alpha=0.2,adaptive:threshold=0.9")
    assert [s.label for s in specs] == ["greedy", "majority", "best-of-n:scorer=arith-check", "bom:alpha=0.2,k=2",
                                        "adaptive:threshold=0.9"]
    assert [s.pooled for s in specs] == [False, True, True, True, False]
    assert specs[2].scorer == "arith-check" and specs[3].scorer == "self-eval" and specs[3].k == 2
    assert specs[1].scorer is None and specs[4].options["threshold"] == 0.9
    assert parse_strategies(["weighted:by=prob"])[0].scorer is None  # weights by token probability
    assert parse_budgets("8,1,4,4") == [1, 4, 8]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("nope", ["strategies", "nope", "majority"]),
        ("best-of-n:scorer=nope", ["scorer", "nope", "arith-check"]),
        ("bom:k=zero", ["param k", "int"]),
        ("majority:foo=1", ["param", "foo"]),
        ("majority,majority", ["strategies", "twice"]),
        ("majority:k", ["strategies", "key=value"]),
    ],
)
def test_strategy_spec_errors(text, names):
    with pytest.raises(ConfigError) as e:
        parse_strategies(text)
    for n in names:
        assert n in str(e.value)


def test_subsamples_are_exhaustive_when_few_and_seeded_otherwise():
    assert subsample_indices(8, 1, 20, 0, "p") == [(i,) for i in range(8)]
    assert subsample_indices(8, 8, 20, 0, "p") == [tuple(range(8))]
    a = subsample_indices(16, 4, 20, 0, "p", 16, 4)
    assert len(a) == 20 and all(len(set(s)) == 4 and list(s) == sorted(s) for s in a)
    assert a == subsample_indices(16, 4, 20, 0, "p", 16, 4)
    assert a != subsample_indices(16, 4, 20, 1, "p", 16, 4)


# -- sample reuse --------------------------------------------------------------------------------

def test_pooled_results_match_direct_runs_at_the_largest_budget():
    """Pool sample i is the sample the strategy itself draws, so at budget M the pooled result
    is exactly the strategy's own result."""
    gen = FakeGenerator(noisy_reply(0.4))
    cfg = EvalConfig(dataset="fake", strategies=["majority", "best-of-n:scorer=oracle", "bom:k=2,scorer=oracle",
                                                 "weighted:by=prob"], budgets=[1, 3, 6], seeds=2)
    with Store() as st:
        rid = new_run(st, cfg)
        run(st, rid, gen)
        res = results_by_key(st, rid)
        for p in problems():
            for seed in range(2):
                for spec in parse_strategies(cfg.strategies, scorers=EXTRA):
                    direct = asyncio.run(infscale.run(p, gen, spec.strategy, n=6, seed=seed,
                                                      scorer=EXTRA["oracle"]() if spec.scorer == "oracle" else None,
                                                      options=spec.options))
                    row = res[(spec.label, 6, seed, p.id)]
                    assert row["subsamples"] == 1 and row["answer"] == direct.answer
                    ok = any(a == p.reference for a in direct.answers[: spec.k])
                    assert row["correct"] == (1.0 if ok else 0.0)


def test_pooled_spec_needing_logprobs_fails_before_any_call_like_the_runner():
    """Pooled ``weighted:by=prob`` on a generator without logprobs: the runner's one-line
    ConfigError, before any sample is generated (not every sample weighted equally)."""
    gen = FakeGenerator(noisy_reply(0.5))
    gen.capabilities = dataclasses.replace(gen.capabilities, logprobs=False)
    with pytest.raises(ConfigError) as direct:
        asyncio.run(infscale.run(problems(1)[0], gen, "weighted", n=2, options={"by": "prob"}))
    cfg = EvalConfig(dataset="fake", strategies=["majority", "weighted:by=prob"], budgets=[1, 2], seeds=1)
    with Store() as st:
        rid = new_run(st, cfg)
        with pytest.raises(ConfigError) as pooled:
            run(st, rid, gen)
        assert st.get_samples(rid) == [] and st.get_results(rid) == []
    assert str(pooled.value) == str(direct.value) and "\n" not in str(pooled.value)
    assert gen.calls == 0


def test_budget_one_accuracy_is_the_pool_fraction_and_costs_scale():
    gen = FakeGenerator(noisy_reply(0.5), yes_prob=lambda r: 0.7)
    cfg = EvalConfig(dataset="fake", strategies=["majority", "best-of-n"], budgets=[1, 2, 4], seeds=1)
    with Store() as st:
        rid = new_run(st, cfg)
        run(st, rid, gen)
        res = results_by_key(st, rid)
        for p in problems():
            pool = st.get_samples(rid, problem_id=p.id, seed=0, pool="pool")
            assert [s["idx"] for s in pool] == [0, 1, 2, 3]
            frac = sum(s["correct"] for s in pool) / 4
            r1 = res[("majority", 1, 0, p.id)]
            assert r1["correct"] == pytest.approx(frac) and r1["subsamples"] == 4
            assert r1["correct_var"] == pytest.approx(frac * (1 - frac))
            mean_tokens = sum(s["generated_tokens"] for s in pool) / 4
            for b in (1, 2, 4):
                m, bon = res[("majority", b, 0, p.id)], res[("best-of-n", b, 0, p.id)]
                assert m["samples"] == b and m["calls"] == pytest.approx(b)
                assert m["generated_tokens"] == pytest.approx(b * mean_tokens) if b in (1, 4) else True
                # self-eval costs one call and one generated token per sample
                assert bon["calls"] == pytest.approx(2 * b)
                assert bon["generated_tokens"] == pytest.approx(m["generated_tokens"] + b)
            assert all(set(s["scores"]) == {"self-eval"} for s in pool)
            assert all(s["score_costs"]["self-eval"]["calls"] == 1 for s in pool)


def test_pooled_majority_matches_exact_expectation():
    """Averaged over problems and subsamples, pooled majority@3 estimates the exact probability
    that a majority of 3 samples is right (p=0.6, three wrong answers)."""
    p = 0.6
    exact = 0.0  # P(majority of 3 right) with wrong answers spread over 3 classes, ties first-seen
    for outcome in np.ndindex(4, 4, 4):
        prob = math.prod(p if o == 0 else (1 - p) / 3 for o in outcome)
        counts = {o: outcome.count(o) for o in outcome}
        top = max(counts.values())
        winner = next(o for o in outcome if counts[o] == top)
        exact += prob * (winner == 0)
    gen = FakeGenerator(noisy_reply_3way(p))
    probs = problems(150)
    cfg = EvalConfig(dataset="fake", strategies=["majority"], budgets=[3, 8], seeds=1, concurrency=32)
    with Store() as st:
        rid = new_run(st, cfg, probs)
        run(st, rid, gen)
        acc = [r["correct"] for r in st.get_results(rid) if r["budget"] == 3]
    se = math.sqrt(exact * (1 - exact) / len(acc))
    assert abs(np.mean(acc) - exact) < 4 * se


def noisy_reply_3way(p):
    def reply(req, rng):
        q = req.messages[-1]["content"]
        ref = int(q.rsplit("[ref=", 1)[1].split("]", 1)[0])
        if rng.random() < p:
            return f"Answer: {ref}"
        return f"Answer: {ref + 1 + int(rng.integers(3))}"

    return reply


# -- storage -------------------------------------------------------------------------------------

def test_everything_is_stored_and_greedy_runs_once():
    gen = FakeGenerator(noisy_reply(0.5))
    cfg = EvalConfig(dataset="fake", strategies=["greedy", "majority", "adaptive:min_samples=2"], budgets=[1, 4],
                     seeds=2)
    with Store() as st:
        rid = new_run(st, cfg)
        counts = run(st, rid, gen)
        assert st.get_run(rid)["status"] == "done"
        samples = st.get_samples(rid)
        pools = {s["pool"] for s in samples}
        assert pools == {"pool", "greedy", "adaptive:min_samples=2@1", "adaptive:min_samples=2@4"}
        assert sum(s["pool"] == "pool" for s in samples) == 6 * 2 * 4
        assert sum(s["pool"] == "greedy" for s in samples) == 6  # seed 0 only
        greedy = [r for r in st.get_results(rid) if r["strategy"] == "greedy"]
        assert {(r["budget"], r["seed"]) for r in greedy} == {(1, 0)}
        assert counts["results"] == 6 * (1 + 2 * 2 + 2 * 2)
        s = next(x for x in samples if x["pool"] == "pool")
        for key in ("text", "answer", "correct", "generated_tokens", "prompt_tokens", "logprob", "sample_seed"):
            assert s[key] is not None, key
        assert json.loads(st.get_problems(rid)[0]["prompt"])[-1]["content"].startswith("Question 0")
        adaptive = [r for r in st.get_results(rid) if r["strategy"].startswith("adaptive")]
        assert all(r["samples"] <= r["budget"] for r in adaptive)


def test_every_strategy_runs_in_a_grid():
    names = sorted(infscale.STRATEGIES)
    gen = FakeGenerator(lambda req, rng: "2 + 3 = 5\nAnswer: 5")
    probs = [Problem(id="a", question="What is 2 + 3?", reference="5")]
    cfg = EvalConfig(dataset="fake", strategies=names, budgets=[1, 2], seeds=1, params={"max_tokens": 32})
    with Store() as st:
        rid = new_run(st, cfg, probs)
        run(st, rid, gen)
        got = {r["strategy"].split(":")[0] for r in st.get_results(rid)}
    assert got == set(names)


# -- resume --------------------------------------------------------------------------------------

class Killed(BaseException):
    """Stands for the process dying (not an Exception: nothing may swallow it)."""


class DyingGenerator(FakeGenerator):
    def __init__(self, reply, die_after: int, **kw):
        super().__init__(reply, **kw)
        self.die_after = die_after

    async def generate(self, requests):
        if self.calls >= self.die_after:
            raise Killed()
        await asyncio.sleep(0.001)
        return await super().generate(requests)


@pytest.mark.parametrize("die_after", [5, 40, 97])
def test_killed_run_resumes_to_the_uninterrupted_numbers(die_after):
    specs = ["greedy", "majority", "best-of-n:scorer=oracle", "adaptive"]
    cfg = EvalConfig(dataset="fake", strategies=specs, budgets=[1, 2, 4], seeds=2, concurrency=3)
    with Store() as st:
        ref_id = new_run(st, EvalConfig(**cfg.to_dict()))
        run(st, ref_id, FakeGenerator(noisy_reply(0.5)))
        ref = results_by_key(st, ref_id)

        rid = new_run(st, EvalConfig(**cfg.to_dict()))
        with pytest.raises((Killed, BaseExceptionGroup)):
            run(st, rid, DyingGenerator(noisy_reply(0.5), die_after))
        assert st.get_run(rid)["status"] in ("failed", "interrupted")
        partial = st.counts(rid)
        assert partial["results"] < len(ref)
        again = FakeGenerator(noisy_reply(0.5))
        run(st, rid, again)
        assert st.get_run(rid)["status"] == "done"
        assert st.counts(rid) == st.counts(ref_id)
        got = results_by_key(st, rid)
        assert got.keys() == ref.keys()
        for k, r in ref.items():
            for col in ("answer", "answers", "correct", "correct_var", "samples", "generated_tokens", "prompt_tokens",
                        "calls"):
                assert got[k][col] == r[col], (k, col)
        # no stored pool sample was generated twice
        stored_pool = sum(1 for s in st.get_samples(rid) if s["pool"] == "pool")
        assert stored_pool == 6 * 2 * 4
        key = "SELECT COUNT(*) FROM (SELECT DISTINCT problem_id, seed, pool, idx FROM samples WHERE run_id=?)"
        assert st.conn.execute(key, (rid,)).fetchone()[0] == st.counts(rid)["samples"]
        # resuming a finished run does nothing
        idle = FakeGenerator(noisy_reply(0.5))
        run(st, rid, idle)
        assert idle.calls == 0


# -- the CLI -------------------------------------------------------------------------------------

def _stable_reply(prompt_or_messages, body, index):
    import hashlib

    h = int(hashlib.sha256(repr((body.get("seed"), index, json.dumps(prompt_or_messages))).encode()).hexdigest(), 16)
    a = [7, 12, 12, 30][h % 4]
    return f"3 + 4 = {7 if h % 3 else 8}\nAnswer: {a}"


@pytest.fixture
def server():
    from infscale.testing.fake_openai import FakeOpenAIServer

    with FakeOpenAIServer(reply=_stable_reply) as srv:
        yield srv


def _eval_argv(url: str, db: Path, *extra: str) -> list[str]:
    return ["eval", "--dataset", "arith", "--limit", "4", "--strategies", "greedy,majority,best-of-n:scorer=arith-check",
            "--budgets", "1,2,4", "--backend-url", url, "--db", str(db), *extra]


def test_cli_eval_json_report_and_export(server, tmp_path, capsys):
    db = tmp_path / "runs.sqlite"
    assert main(_eval_argv(server.base_url, db, "--json")) == 0
    out, err = capsys.readouterr()
    assert err.startswith("run: ")
    d = json.loads(out)
    rid = d["run_id"]
    assert err.splitlines()[0] == f"run: {rid}"
    cells = {(c["strategy"], c["budget"]): c for c in d["results"]}
    assert set(cells) == {("greedy", 1), *((s, b) for s in ("majority", "best-of-n:scorer=arith-check") for b in (1, 2, 4))}
    c = cells[("majority", 4)]
    assert c["problems"] == 4 and c["samples"] == 16 and len(c["interval"]) == 2
    assert 0 <= c["interval"][0] <= c["accuracy"] <= c["interval"][1] <= 1 and c["generated_tokens"] > 0
    assert Path(d["html"]).is_file()
    assert d["generated_tokens_per_second"] > 0

    assert main(["report", rid, "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "majority" in out and "html report:" in out
    assert main(["report", rid, "--db", str(db), "--json", "--no-html"]) == 0
    comps = json.loads(capsys.readouterr().out)["summary"]["comparisons"]
    # the first strategy on the command line is the baseline of the paired comparisons
    assert {c["baseline"] for c in comps} == {"greedy"} and len(comps) == 2
    # greedy runs at budget 1 only: the others are compared at their largest budget
    assert {(c["budget"], c["baseline_budget"]) for c in comps} == {(4, 1)}
    assert main(["report", rid, "--db", str(db), "--json", "--no-html", "--baseline", "majority"]) == 0
    comps = json.loads(capsys.readouterr().out)["summary"]["comparisons"]
    assert {c["baseline"] for c in comps} == {"majority"} and "greedy" in {c["strategy"] for c in comps}
    assert main(["report", rid, "--db", str(db), "--baseline", "nope"]) == 2
    assert "baseline" in capsys.readouterr().err
    assert main(["report", "--db", str(db)]) == 0
    assert rid in capsys.readouterr().out
    assert main(["report", "nope", "--db", str(db)]) == 2
    assert "no run 'nope'" in capsys.readouterr().err

    with Store(db) as st:
        counts = st.counts(rid)
    assert main(["export", rid, "--db", str(db), "--out", str(tmp_path / "x")]) == 0
    paths = capsys.readouterr().out.split()
    samples = [json.loads(line) for line in Path(paths[0]).read_text().splitlines()]
    results = [json.loads(line) for line in Path(paths[1]).read_text().splitlines()]
    assert len(samples) == counts["samples"] and len(results) == counts["results"]
    assert {"prompt", "text", "generated_tokens", "logprob", "scores", "answer", "correct", "sample_seed"} <= samples[0].keys()
    pq = pytest.importorskip("pyarrow.parquet")
    assert main(["export", rid, "--db", str(db), "--out", str(tmp_path / "x"), "--format", "parquet"]) == 0
    ppaths = capsys.readouterr().out.split()
    assert pq.read_table(ppaths[0]).num_rows == counts["samples"]
    assert pq.read_table(ppaths[1]).num_rows == counts["results"]


def test_export_without_pyarrow_names_the_extra(server, tmp_path, capsys, monkeypatch):
    db = tmp_path / "runs.sqlite"
    assert main(_eval_argv(server.base_url, db, "--json", "--no-html", "--no-progress")) == 0
    rid = json.loads(capsys.readouterr().out)["run_id"]
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    assert main(["export", rid, "--db", str(db), "--format", "parquet"]) == 2
    assert "pip install 'infscale[parquet]'" in capsys.readouterr().err
    assert main(["export", rid, "--db", str(db), "--format", "csv"]) == 2
    assert "jsonl, parquet" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["eval"], ["dataset", "--resume"]),
        (["eval", "-d", "arith", "--budgets", "0"], ["budgets", ">= 1"]),
        (["eval", "-d", "arith", "--budgets", "x"], ["budgets", "'x'"]),
        (["eval", "-d", "arith", "-s", "nope"], ["strategies", "nope"]),
        (["eval", "-d", "arith", "-s", "best-of-n:scorer=nope"], ["scorer", "nope"]),
        (["eval", "-d", "arith", "--seeds", "0"], ["seeds"]),
        (["eval", "-d", "arith", "--temperature=-1"], ["temperature"]),
        (["eval", "-d", "gsm8k"], ["infscale data fetch gsm8k"]),
        (["eval", "-d", "arith", "--limit", "0"], ["limit"]),
        (["eval", "--resume", "nope"], ["run", "nope"]),
        (["eval", "-d", "arith", "--threads", "0"], ["--threads", "auto"]),
        (["eval", "-d", "arith", "--reproducible", "--backend-url", "http://127.0.0.1:9"], ["reproducible", "embedded"]),
    ],
)
def test_cli_eval_errors_before_any_model(argv, names, capsys, monkeypatch, tmp_path):
    import infscale.api

    def no_load(*a, **kw):
        raise AssertionError("a model was loaded before validation finished")

    monkeypatch.setattr(infscale.api, "load_generator", no_load)
    assert main([*argv, "--db", str(tmp_path / "x.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("infscale: error:") and len(err.strip().splitlines()) == 1
    for n in names:
        assert n in err


def test_cli_killed_process_resumes(server, tmp_path):
    """SIGKILL an ``infscale eval`` process mid-run, resume it, and compare with an
    uninterrupted run of the same configuration."""
    db = tmp_path / "runs.sqlite"
    env = {**os.environ, "INFSCALE_HOME": str(tmp_path / "home")}
    server.behaviour.delay = 0.01  # slow enough to be killed part way
    argv = [sys.executable, "-m", "infscale.cli.main", *_eval_argv(server.base_url, db, "--json", "--no-progress",
                                                                  "--concurrency", "1")]
    argv[argv.index("4")] = "6"  # --limit 6
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    run_id = proc.stderr.readline().strip().removeprefix("run: ")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        con = sqlite3.connect(db)
        n = con.execute("SELECT COUNT(*) FROM samples WHERE run_id=?", (run_id,)).fetchone()[0]
        con.close()
        if n >= 10:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with Store(db) as st:
        partial = st.counts(run_id)
        assert st.get_run(run_id)["status"] == "running"
    assert 0 < partial["samples"] < 6 * 4 + 6
    server.behaviour.delay = 0.0
    out = subprocess.run([sys.executable, "-m", "infscale.cli.main", "eval", "--resume", run_id, "--db", str(db), "--json",
                          "--no-progress"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    resumed = json.loads(out.stdout)
    full = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert full.returncode == 0, full.stderr
    uninterrupted = json.loads(full.stdout)
    assert resumed["counts"] == uninterrupted["counts"]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(resumed["results"]) == strip(uninterrupted["results"])


def test_metrics_inputs_follow_the_contract():
    gen = FakeGenerator(noisy_reply(0.5))
    with Store() as st:
        rid = new_run(st, EvalConfig(dataset="fake", strategies=["greedy", "majority"], budgets=[1, 2], seeds=1))
        run(st, rid, gen)
        results, samples = metrics_inputs(st, rid)
    for r in results:
        assert {"strategy", "budget", "seed", "problem_id", "correct", "generated_tokens", "prompt_tokens", "calls",
                "seconds"} <= r.keys()
        assert 0.0 <= r["correct"] <= 1.0
    assert len(samples) == 6 * 2 and {"problem_id", "correct", "answer"} <= samples[0].keys()


# -- the embedded model (slow) -------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_eval_on_the_embedded_model_stores_reproducible_samples():
    pytest.importorskip("llama_cpp", reason="needs the embedded engine: pip install 'infscale[embedded]'")
    from infscale.models import model_status
    from infscale.tasks.prompts import build_request

    if not any(s["name"] == "smollm2-135m" and s["installed"] for s in model_status()):
        pytest.skip("infscale models install smollm2-135m")
    cfg = EvalConfig(dataset="arith", limit=3, strategies=["greedy", "majority", "best-of-n:scorer=arith-check"],
                     budgets=[1, 2], params={"max_tokens": 64}, reproducible=True)
    gen = infscale.load_generator("smollm2-135m", reproducible=True)
    assert gen.reproducible
    probs = arith_problems(3)
    with Store() as st:
        rid = start_run(st, cfg, probs, chat=gen.capabilities.chat_template)
        counts = asyncio.run(run_eval(st, rid, gen))  # 3 problems in flight at once
        assert counts == {"problems": 3, "samples": 3 * 2 + 3, "results": 3 * (1 + 2 + 2)}
        samples = st.get_samples(rid)
        assert st.get_run(rid)["config"]["reproducible"] is True
    assert all(s["generated_tokens"] > 0 and s["sample_seed"] is not None for s in samples)
    assert all("arith-check" in s["scores"] for s in samples if s["pool"] == "pool")
    # the stored seed, prompt and parameters regenerate every sample exactly, alone
    for sample in samples:
        p = next(x for x in probs if x.id == sample["problem_id"])
        params = SamplingParams(max_tokens=64, temperature=0.0 if sample["pool"] == "greedy" else 0.7)
        req = build_request(p, params, chat=gen.capabilities.chat_template, seed=sample["sample_seed"])
        (again,) = asyncio.run(gen.generate([req]))
        assert (again.text, again.generated_tokens) == (sample["text"], sample["generated_tokens"]), sample["pool"]


def test_retryable_backend_errors_are_retried_and_fatal_ones_surface():
    from infscale import BackendError

    class Flaky(FakeGenerator):
        def __init__(self, reply, fail_at, retryable):
            super().__init__(reply)
            self.fail_at, self.retryable, self.failed = fail_at, retryable, False

        async def generate(self, requests):
            if self.calls == self.fail_at and not self.failed:
                self.failed = True
                raise BackendError("KV cache full", retryable=self.retryable)
            return await super().generate(requests)

    cfg = EvalConfig(dataset="fake", strategies=["majority"], budgets=[1, 4], seeds=1)
    with Store() as st:
        ref = new_run(st, EvalConfig(**cfg.to_dict()))
        run(st, ref, FakeGenerator(noisy_reply(0.5)))
        rid = new_run(st, EvalConfig(**cfg.to_dict()))
        run(st, rid, Flaky(noisy_reply(0.5), 7, retryable=True))
        assert st.counts(rid) == st.counts(ref)
        assert [r["correct"] for r in st.get_results(rid)] == [r["correct"] for r in st.get_results(ref)]
        bad = new_run(st, EvalConfig(**cfg.to_dict()))
        with pytest.raises(BackendError, match="KV cache full"):  # one error, not the task group's group
            run(st, bad, Flaky(noisy_reply(0.5), 7, retryable=False))
        assert st.get_run(bad)["status"] == "failed"


def test_code_samples_are_graded_by_running_their_tests(tmp_path, monkeypatch):
    """A code dataset: each sample is graded once by the code task, which runs its tests in the
    sandbox; the harness looks up no scorer to grade (none is registered here)."""
    import infscale.evaluation.harness as harness

    monkeypatch.setattr(harness, "SCORERS", {})
    monkeypatch.setattr(harness, "get_scorer", None)
    rows = [{"task_id": f"t/{i}", "prompt": f"def add{i}(a, b):\n", "canonical_solution": "    return a + b\n",
             "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n", "entry_point": f"add{i}"}
            for i in range(2)]
    path = tmp_path / "code.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from infscale.datasets import load_dataset

    probs = load_dataset(str(path), task="code", question_field="prompt", answer_field="canonical_solution")

    def reply(req, rng):
        name = "add0" if "add0" in req.messages[-1]["content"] else "add1"
        op = "+" if rng.random() < 0.5 else "-"
        return f"```python\ndef {name}(a, b):\n    return a {op} b\n```"

    cfg = EvalConfig(dataset=str(path), task="code", strategies=["majority"], budgets=[1, 4], seeds=1)
    with Store() as st:
        rid = start_run(st, cfg, probs)
        run(st, rid, FakeGenerator(reply))
        samples = st.get_samples(rid)
        assert samples and all(s["correct"] == ("a + b" in s["text"]) for s in samples)
        for r in st.get_results(rid):
            if r["budget"] == 1:
                pool = [s for s in samples if s["problem_id"] == r["problem_id"]]
                assert r["correct"] == pytest.approx(sum(s["correct"] for s in pool) / 4)


def test_share_clock_splits_wall_time_among_the_sequences_in_flight():
    from infscale.evaluation.harness import ShareClock

    t = [0.0]
    clock = ShareClock(lambda: t[0])
    pool = clock.enter(3)  # a pool of 3 samples from t=0
    t[0] = 2.0
    greedy = clock.enter(1)  # one greedy sequence joins at t=2
    t[0] = 6.0
    first = clock.leave(1, pool)  # one pool sample done at t=6: 2/3 + 4/4
    t[0] = 9.0
    g = clock.leave(1, greedy)  # greedy done at t=9: 4/4 + 3/3
    t[0] = 11.0
    rest = clock.leave(2, pool)  # the last two at t=11: 2 x (2/3 + 4/4 + 3/3 + 2/2)
    assert first == pytest.approx(2 / 3 + 1)
    assert g == pytest.approx(2.0)
    assert rest == pytest.approx(2 * (2 / 3 + 1 + 1 + 1))
    assert first + g + rest == pytest.approx(11.0)  # the charges add up to the wall time
    t[0] = 20.0  # idle time is charged to nobody
    assert clock.leave(0, clock.enter(1)) == 0.0
