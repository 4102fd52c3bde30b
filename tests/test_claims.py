"""The research claims (issue 14): each claim's analysis on synthetic stored runs whose answer is
known, the verdict rules, the stored-run pipeline (reuse, figure, markdown) and the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from infscale.claims import CLAIMS, get_claim
from infscale.claims import analysis as A
from infscale.claims.presets import adaptive_run, optimal_run, pool_run, search_run
from infscale.claims.runs import eval_config, run_id_of
from infscale.cli.main import main
from infscale.evaluation.metrics import flaws_prediction
from infscale.evaluation.store import Store

LOG_FAIL = math.log(0.05)


def _row(strategy, budget, pid, correct, tokens=50.0, samples=None):
    return {"strategy": strategy, "budget": budget, "seed": 0, "problem_id": pid, "correct": float(correct),
            "generated_tokens": tokens * budget, "prompt_tokens": 100.0, "calls": float(budget), "seconds": 0.1,
            "samples": float(budget if samples is None else samples)}


def _pool_samples(rng, p, n, tpr=0.8, fpr=0.2, answers=True):
    rows = []
    for i, pi in enumerate(p):
        for j in range(n):
            ok = bool(rng.random() < pi)
            acc = bool(rng.random() < (tpr if ok else fpr))
            rows.append({"problem_id": f"p{i}", "seed": 0, "idx": j, "correct": ok, "logprob": -5.0,
                         "answer": "42" if ok else (str(int(rng.integers(0, 50))) if answers else None),
                         "scores": {"arith-check": 0.0 if acc else LOG_FAIL}, "generated_tokens": 50, "task": "math"})
    return rows


# ------------------------------------------------------------------ verdict rules


def test_verdict_rules():
    c = lambda s, d=True: A.Check("c", "r", 0.0, [0, 0], s, d)  # noqa: E731
    assert A.verdict_of([c("holds"), c("holds"), c("fails", False)]) == "reproduced"
    assert A.verdict_of([c("holds"), c("fails")]) == "not reproduced"
    assert A.verdict_of([c("holds"), c("unclear")]) == "inconclusive"
    a = {f"p{i}": 1.0 for i in range(200)}
    b = {f"p{i}": 0.0 for i in range(200)}
    assert A.diff_check("x", a, b, "r").status == "holds"
    assert A.diff_check("x", b, a, "r").status == "fails"
    half = {f"p{i}": float(i % 2) for i in range(20)}
    assert A.diff_check("x", half, {k: 1 - v for k, v in half.items()}, "r").status == "unclear"
    # non-inferiority: equal on 300 problems holds within a 0.05 margin
    same = {f"p{i}": float(i % 3 == 0) for i in range(300)}
    assert A.diff_check("x", same, same, "r", margin=0.05).status == "holds"
    m, iv = A.mean_interval([0.0, 1.0] * 50)
    assert m == 0.5 and iv[0] < 0.5 < iv[1] and iv[1] - iv[0] < 0.25


# ------------------------------------------------------------------ monkeys


def test_monkeys_power_law_coverage_recovered_and_reproduced():
    rng = np.random.default_rng(0)
    # Beta-distributed difficulty, as Brown et al. model it; large pools so the held-out fit is tight
    p = rng.beta(0.25, 2.5, size=300)
    samples = _pool_samples(rng, p, 64)
    results = []
    for b in (1, 2, 4, 8, 16, 32, 64):
        for i, pi in enumerate(p):
            results.append(_row(A.MAJORITY, b, f"p{i}", min(1.0, pi * 1.2)))
            results.append(_row(A.BON, b, f"p{i}", min(1.0, pi * 1.5)))
    a = A.analyse_monkeys(results, samples)
    assert a.verdict == "reproduced", [(c.name, c.status, c.estimate, c.interval) for c in a.checks]
    # the table's coverage at each k is the mean unbiased pass@k; its expectation is known exactly
    from scipy.special import betaln  # noqa: PLC0415

    for row in a.rows:
        k = int(row[0])
        want = float(np.mean(1 - (1 - p) ** k))  # the pools' own difficulty
        assert abs(float(row[1]) - want) < 0.03, (k, row[1], want)
        assert 0 < 1 - math.exp(betaln(0.25, 2.5 + k) - betaln(0.25, 2.5)) < 1  # the population curve is a proper one
    fit = next(c for c in a.checks if c.name.startswith("power law"))
    assert fit.status == "holds" and fit.estimate < 0.03


def test_monkeys_not_reproduced_when_coverage_does_not_grow():
    # every problem is either always right or always wrong: coverage is flat in k
    rows = []
    for i in range(60):
        for j in range(16):
            ok = i < 20
            rows.append({"problem_id": f"p{i}", "idx": j, "correct": ok, "answer": "1" if ok else "2",
                         "scores": {}, "task": "math"})
    results = [_row(A.MAJORITY, b, f"p{i}", i < 20) for b in (1, 2, 4, 8, 16) for i in range(60)]
    a = A.analyse_monkeys(results, rows)
    grow = a.checks[0]
    assert grow.estimate == 0.0 and grow.status != "holds"
    assert a.verdict in ("not reproduced", "inconclusive")
    plateau = next(c for c in a.checks if c.name.startswith("majority"))
    assert plateau.status == "fails" or plateau.status == "unclear"  # majority equals coverage here


# ------------------------------------------------------------------ flaws


def _flaws_run(rng, beat_ceiling=False):
    p = rng.uniform(0.05, 0.6, size=200)
    tpr, fpr = 0.8, 0.25
    samples = _pool_samples(rng, p, 32, tpr, fpr)
    ns = [1, 2, 4, 8, 16, 32]
    results = []
    for i, pi in enumerate(p):
        pred = flaws_prediction([pi], tpr, fpr, ns)["accuracy"]
        for b, acc in zip(ns, pred):
            results.append(_row(A.BON, b, f"p{i}", 1.0 if beat_ceiling and b == 32 else acc))
    return p, tpr, fpr, samples, results


def test_flaws_ceiling_from_known_rates():
    rng = np.random.default_rng(1)
    p, tpr, fpr, samples, results = _flaws_run(rng)
    a = A.analyse_flaws(results, samples)
    known = float(np.mean([pi * tpr / (pi * tpr + (1 - pi) * fpr) for pi in p]))
    ceiling = float(a.series[-1].y[0])
    # the ceiling is estimated from 32 samples per problem: within a few points of the known one
    assert abs(ceiling - known) < 0.05, (ceiling, known)
    assert a.checks[0].status == "holds" and a.verdict == "reproduced"
    assert any("TPR 0.8" in n or "TPR 0.7" in n for n in a.notes)


def test_flaws_not_reproduced_when_best_of_n_beats_the_ceiling():
    rng = np.random.default_rng(2)
    *_, samples, results = _flaws_run(rng, beat_ceiling=True)
    a = A.analyse_flaws(results, samples)
    assert a.checks[0].status == "fails" and a.verdict == "not reproduced"


# ------------------------------------------------------------------ bom, rpc, adaptive


def _curves(fns, problems=300, budgets=(1, 2, 4, 8, 16, 32)):
    rows = []
    for strategy, fn in fns.items():
        for b in budgets:
            for i in range(problems):
                rows.append(_row(strategy, b, f"p{i}", float(fn(b, i))))
    return rows


def test_bom_reproduced_when_flat_and_not_when_it_degrades():
    flat = _curves({A.BOM: lambda b, i: i % 3 == 0, A.BON: lambda b, i: i % 3 == 0 and b < 16,
                    A.MAJORITY: lambda b, i: i % 4 == 0})
    a = A.analyse_bom(flat)
    assert a.verdict == "reproduced"
    bon = next(c for c in a.checks if c.name.startswith("best-of-N from"))
    assert bon.status == "fails" and not bon.decisive  # BoN degrades: context only
    drops = _curves({A.BOM: lambda b, i: i % 3 == 0 and b < 16, A.BON: lambda b, i: True,
                     A.MAJORITY: lambda b, i: True})
    assert A.analyse_bom(drops).verdict == "not reproduced"


def test_rpc_half_the_samples():
    same = _curves({A.WEIGHTED: lambda b, i: i % 2 == 0 and b >= 16, A.MAJORITY: lambda b, i: i % 2 == 0 and b >= 32})
    assert A.analyse_rpc(same).verdict == "reproduced"
    worse = _curves({A.WEIGHTED: lambda b, i: i % 2 == 0 and b >= 32, A.MAJORITY: lambda b, i: i % 2 == 0})
    assert A.analyse_rpc(worse).verdict == "not reproduced"


def test_adaptive_saves_samples_at_equal_accuracy():
    pool = _curves({A.MAJORITY: lambda b, i: i % 2 == 0}, budgets=(1, 2, 4, 8, 16))
    saves = [_row("adaptive", 16, f"p{i}", i % 2 == 0, samples=4 + i % 3) for i in range(300)]
    a = A.analyse_adaptive(saves, pool)
    assert a.verdict == "reproduced" and a.checks[0].estimate == pytest.approx(16 - np.mean([4 + i % 3 for i in range(300)]))
    never = [_row("adaptive", 16, f"p{i}", i % 2 == 0, samples=16) for i in range(300)]
    assert A.analyse_adaptive(never, pool).verdict == "not reproduced"


# ------------------------------------------------------------------ search claims, compute-optimal


def test_particle_filtering_and_rebase():
    good = _curves({A.PF: lambda b, i: i % 2 == 0 or b >= 8 and i % 4 == 1, A.BEAM: lambda b, i: i % 4 == 0,
                    A.DVTS: lambda b, i: i % 4 == 0, A.BON: lambda b, i: i % 5 == 0,
                    A.REBASE: lambda b, i: i % 2 == 0}, budgets=(2, 4, 8))
    a = A.analyse_search(good)
    assert a.verdict == "reproduced" and len([c for c in a.checks if c.decisive]) == 3
    assert A.analyse_rebase(good).verdict == "reproduced"
    bad = _curves({A.PF: lambda b, i: False, A.BEAM: lambda b, i: i % 2 == 0, A.DVTS: lambda b, i: i % 2 == 0,
                   A.BON: lambda b, i: i % 2 == 0, A.REBASE: lambda b, i: False}, budgets=(2, 4, 8))
    assert A.analyse_search(bad).verdict == "not reproduced"
    assert A.analyse_rebase(bad).verdict == "not reproduced"
    # tokens are the x axis of the figure
    assert a.series[0].x == [100.0, 200.0, 400.0]


def test_compute_optimal_analysis():
    rows = _curves({A.BON: lambda b, i: i % 2 == 0, A.MAJORITY: lambda b, i: i % 3 == 0}, budgets=(1, 2, 4, 8, 16))
    rows += [dict(_row("auto", b, f"p{i}", i % 2 == 0), generated_tokens=200.0) for b in (1, 2, 4, 8, 16)
             for i in range(300)]
    a = A.analyse_optimal(rows)
    assert a.verdict == "reproduced" and a.checks[1].estimate == pytest.approx(200 / 800)


# ------------------------------------------------------------------ stored runs end to end


def _store_run(store, spec, samples, results, problems):
    cfg = eval_config(spec, model=None, backend_url=None)
    cfg.validate()
    rid = run_id_of(cfg)
    store.create_run(cfg.to_dict(), rid)
    store.put_problems(rid, [{"problem_id": f"p{i}", "position": i, "data": {"id": f"p{i}", "task": "math"},
                              "prompt": None} for i in range(problems)])
    store.put_samples(rid, [{"problem_id": s["problem_id"], "seed": 0, "pool": "pool", "idx": s["idx"], "text": "t",
                             "answer": s["answer"], "correct": s["correct"], "finish_reason": "stop",
                             "generated_tokens": 50, "prompt_tokens": 100, "logprob": -5.0, "sample_seed": 1,
                             "seconds": 0.1, "scores": s["scores"]} for s in samples])
    store.put_results(rid, [{**r, "answer": None, "answers": [], "correct_var": 0.0, "subsamples": 1, "pooled": True,
                             "stopped_early": False} for r in results])
    store.set_status(rid, "done", add_seconds=60.0)
    return rid


def _tiny_pool(store):
    spec = pool_run("tiny")
    rng = np.random.default_rng(3)
    p = rng.beta(0.5, 2.0, size=spec.problems)
    samples = _pool_samples(rng, p, max(spec.budgets))
    results = [_row(s, b, f"p{i}", float(rng.random() < p[i])) for s in spec.strategies for b in spec.budgets
               for i in range(spec.problems)]
    return _store_run(store, spec, samples, results, spec.problems), spec


def test_reproduce_reuses_the_stored_run_and_writes_figure_and_verdict(tmp_path):
    from infscale.claims.write import reproduce, terminal_table  # noqa: PLC0415

    def no_generation(config):
        raise AssertionError("a stored, finished run must be reused, not generated again")

    with Store(tmp_path / "runs.sqlite") as store:
        rid, spec = _tiny_pool(store)
        for name in ("monkeys", "flaws", "bom", "rpc"):
            rep = reproduce(get_claim(name), "tiny", store=store, out=tmp_path / "claims",
                            generator_factory=no_generation, log=lambda m: None)
            assert rep.outcomes["pool"].run_id == rid and rep.outcomes["pool"].reused
            md = rep.markdown.read_text()
            assert rep.markdown.name == f"{name}-tiny.md"
            assert f"**Verdict at this size: {rep.analysis.verdict}.**" in md
            assert "**Counts as not reproduced**" in md and f"run `{rid}`" in md and "--tiny" in md
            assert rep.svg.read_text().lstrip().startswith("<?xml") and rep.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert rep.analysis.verdict in ("reproduced", "not reproduced", "inconclusive")
            assert name in terminal_table(rep)


def test_compute_optimal_is_pending_without_auto(tmp_path, monkeypatch):
    from infscale.claims.write import reproduce  # noqa: PLC0415
    from infscale.strategies import STRATEGIES  # noqa: PLC0415

    monkeypatch.delitem(STRATEGIES, "auto", raising=False)
    rep = reproduce(get_claim("compute-optimal"), "quick", out=tmp_path, store=object())
    assert rep.analysis.verdict == "pending" and "auto" in rep.markdown.read_text() and rep.svg is None


def test_claims_presets_and_cli(tmp_path, capsys):
    assert list(CLAIMS) == ["monkeys", "flaws", "particle-filtering", "bom", "rpc", "adaptive", "rebase",
                            "compute-optimal"]
    for preset in ("tiny", "quick", "full"):
        for spec in (pool_run(preset), search_run(preset), adaptive_run(preset), optimal_run(preset)):
            eval_config(spec, model=None, backend_url=None).validate()  # every spec is a valid eval
        assert max(pool_run(preset).budgets) == {"tiny": 8, "quick": 32, "full": 256}[preset]
    # claims sharing a configuration share one run id; another model is another run
    a = eval_config(pool_run("quick"), model=None, backend_url=None)
    b = eval_config(pool_run("quick"), model="gemma3-270m", backend_url=None)
    assert run_id_of(a) == run_id_of(eval_config(pool_run("quick"), model=None, backend_url=None)) != run_id_of(b)
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in CLAIMS) and "needs: auto" in out
    assert main(["reproduce", "nope"]) == 2
    assert "claim: unknown claim 'nope'" in capsys.readouterr().err
    assert main(["reproduce"]) == 2
    with pytest.raises(ValueError, match="preset"):
        pool_run("huge")
    # a stored run is reused from the CLI too (no model is loaded)
    db = tmp_path / "runs.sqlite"
    with Store(db) as store:
        _tiny_pool(store)
    assert main(["reproduce", "monkeys", "--tiny", "--db", str(db), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "monkeys: Coverage grows" in out and "verdict:" in out and (tmp_path / "o" / "monkeys-tiny.png").exists()
