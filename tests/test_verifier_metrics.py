"""What verifiers can buy (issue 12, item 4): a scorer's rates against the references, the fLaws
prediction and ceiling from them, accuracy vs abstention, the Pareto frontier — each on
synthetic data whose answer is known — and how the report shows them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from infscale.evaluation.metrics import (
    abstention_curve,
    chosen_with_confidence,
    flaws_prediction,
    pareto_frontier,
    summarize,
    verifier_ceiling,
    verifier_rates,
)
from infscale.evaluation.report import terminal_report, write_html_report

LOG_FAIL = math.log(0.05)


def _pool(rng, problems, per, p, tpr, fpr):
    rows = []
    for i in range(problems):
        for j in range(per):
            ok = bool(rng.random() < p[i])
            acc = bool(rng.random() < (tpr if ok else fpr))
            rows.append({"problem_id": f"p{i}", "idx": j, "correct": ok, "answer": "7" if ok else str(j % 3),
                         "scores": {"v": 0.0 if acc else LOG_FAIL}, "logprob": -1.0, "generated_tokens": 10})
    return rows


def test_verifier_rates_recover_known_rates_within_binomial_tolerance():
    rng = np.random.default_rng(0)
    rows = _pool(rng, 40, 100, [0.3] * 40, tpr=0.8, fpr=0.15)
    r = verifier_rates(rows, "v")
    pos, neg = r["full_passes"], r["full_fails"]
    # 4 standard errors of a binomial proportion: fails by chance with probability ~6e-5
    assert abs(r["tpr"] - 0.8) < 4 * math.sqrt(0.8 * 0.2 / pos)
    assert abs(r["fpr"] - 0.15) < 4 * math.sqrt(0.15 * 0.85 / neg)
    assert r["tpr_interval"][0] < 0.8 < r["tpr_interval"][1] and r["fpr_interval"][0] < 0.15 < r["fpr_interval"][1]
    assert r["tpr_beta"][0] < 0.8 < r["tpr_beta"][1]
    assert r["accepted"] == r["true_positives"] + r["false_positives"]
    assert r["ceiling"] == pytest.approx(verifier_ceiling(r["fpr"], r["tpr"], r["base_accuracy"]))
    assert verifier_rates(rows, "missing") is None
    with pytest.raises(ValueError, match="accept"):
        verifier_rates(rows, "v", accept=1.5)


def test_flaws_prediction_closed_form_and_monte_carlo():
    p, tpr, fpr = 0.3, 0.9, 0.1
    ns = [1, 2, 4, 8, 16, 64, 1024]
    pred = flaws_prediction([p], tpr, fpr, ns)
    ceiling = verifier_ceiling(fpr, tpr, p)
    assert pred["accuracy"][0] == pytest.approx(p)  # one sample: the base rate
    assert pred["ceiling"] == pytest.approx(ceiling) and pred["accuracy"][-1] == pytest.approx(ceiling, abs=1e-9)
    assert all(b >= a for a, b in zip(pred["accuracy"], pred["accuracy"][1:]))  # a helpful verifier: rises
    # Monte Carlo of best-of-N on a pass/fail verdict: an accepted sample if any, else a rejected one
    rng = np.random.default_rng(1)
    trials = 20000
    for n, want in zip(ns[:4], pred["accuracy"][:4]):
        ok = rng.random((trials, n)) < p
        acc = rng.random((trials, n)) < np.where(ok, tpr, fpr)
        first_acc = np.argmax(acc, axis=1)
        pick = np.where(acc.any(axis=1), ok[np.arange(trials), first_acc], ok[:, 0])
        got = pick.mean()
        assert abs(got - want) < 4 * math.sqrt(want * (1 - want) / trials), (n, got, want)
    # the optimal N: the first N within 0.001 of the top of the curve
    assert pred["optimal_n"] == next(n for n, a in zip(ns, pred["accuracy"]) if a >= max(pred["accuracy"]) - 1e-3)


def test_flaws_prediction_falls_with_n_when_the_verifier_prefers_wrong_answers():
    pred = flaws_prediction([0.4, 0.6], [0.2, 0.3], [0.5, 0.6], [1, 2, 4, 8, 32])
    assert all(b < a for a, b in zip(pred["accuracy"], pred["accuracy"][1:]))
    assert pred["optimal_n"] == 1
    # utility with abstention (+1 right, -cost wrong): the paper's finite optimum
    easy_bad = flaws_prediction([0.9, 0.05], [0.9, 0.5], [0.1, 0.3], [1, 2, 4, 8], cost=1.0)
    want = [np.mean([(1 - (1 - a) ** n) * (2 * c - 1) for a, c in
                     ((0.9 * 0.9 + 0.1 * 0.1, 0.81 / 0.82), (0.05 * 0.5 + 0.95 * 0.3, 0.025 / 0.31))]) for n in (1, 2, 4, 8)]
    assert easy_bad["utility"] == pytest.approx(want)
    assert easy_bad["optimal_n_utility"] == [1, 2, 4, 8][int(np.argmax(want))]
    with pytest.raises(ValueError, match="tpr"):
        flaws_prediction([0.5], 1.5, 0.1, [1])


def test_abstention_curve_and_chosen_confidence():
    chosen = [(0.9, True), (0.9, True), (0.6, False), (0.3, True), (0.1, False)]
    pts = abstention_curve(chosen)
    assert [p["threshold"] for p in pts] == [0.9, 0.6, 0.3, 0.1]
    assert [p["answered"] for p in pts] == [2, 3, 4, 5]
    assert [p["accuracy"] for p in pts] == pytest.approx([1.0, 2 / 3, 3 / 4, 3 / 5])
    assert pts[-1]["answer_rate"] == 1.0 and pts[-1]["correct_overall"] == pytest.approx(0.6)
    assert all(p["interval"][0] <= p["accuracy"] <= p["interval"][1] for p in pts)
    pools = {
        "a": [{"answer": "3", "correct": True, "scores": {"v": math.log(0.2)}},
              {"answer": "3.0", "correct": True, "scores": {"v": math.log(0.1)}},
              {"answer": "5", "correct": False, "scores": {"v": math.log(0.9)}}],
        "b": [{"answer": None, "correct": False, "scores": {}}],
    }
    vote = chosen_with_confidence(pools, "vote")
    assert vote == [(pytest.approx(2 / 3), True), (0.0, False)]  # "3" and "3.0" are one class
    score = chosen_with_confidence(pools, "score", "v")
    assert score == [(pytest.approx(0.9), False), (0.0, False)]


def test_pareto_frontier():
    cells = [{"strategy": "a", "budget": 1, "generated_tokens": 10.0, "accuracy": 0.2},
             {"strategy": "a", "budget": 4, "generated_tokens": 40.0, "accuracy": 0.3},
             {"strategy": "b", "budget": 1, "generated_tokens": 20.0, "accuracy": 0.1},
             {"strategy": "b", "budget": 4, "generated_tokens": 35.0, "accuracy": 0.35},
             {"strategy": "auto", "budget": 8, "generated_tokens": 30.0, "accuracy": 0.35}]
    assert pareto_frontier(cells) == [("a", 1), ("auto", 8)]


def _run(with_auto: bool = False):
    rng = np.random.default_rng(2)
    p = rng.beta(0.7, 2.0, size=30)
    samples = _pool(rng, 30, 16, p, tpr=0.7, fpr=0.2)
    results = []
    for strategy in ("majority", "best-of-n:scorer=v") + (("auto",) if with_auto else ()):
        for b in (1, 2, 4, 8, 16):
            for i in range(30):
                results.append({"strategy": strategy, "budget": b, "seed": 0, "problem_id": f"p{i}",
                                "correct": float(rng.random() < p[i] * (1.2 if strategy == "auto" else 1)),
                                "generated_tokens": 10.0 * b, "prompt_tokens": 5.0, "calls": b, "seconds": 0.1})
    return summarize(results, samples)


def test_summary_and_reports_show_what_the_verifier_buys(tmp_path):
    s = _run(with_auto=True)
    (v,) = s["verifiers"]
    assert v["scorer"] == "v" and [m["budget"] for m in v["measured"]] == [1, 2, 4, 8, 16]
    assert v["predicted"]["ns"] == [1, 2, 4, 8, 16]
    top = max(m["accuracy"] for m in v["measured"])
    assert v["measured_optimal_n"] == next(m["budget"] for m in v["measured"] if m["accuracy"] == top)
    assert {c["strategy"] for c in s["abstention"]} == {"majority", "best-of-n:scorer=v"}
    assert s["frontier"] == [list(f) for f in pareto_frontier(s["cells"])]
    text = terminal_report(s)
    assert "Verifiers against the references" in text and f"{v['rates']['tpr']:.3f}" in text
    assert f"{v['predicted']['ceiling']:.3f}" in text and "Accuracy vs abstention" in text
    assert "Pareto frontier" in text and "best-of-N with v: measured beside the fLaws prediction" in text
    page = write_html_report(s, tmp_path / "r.html", title="t", meta={}).read_text()
    assert 'data-plot="verifier:v"' in page and 'data-plot="abstention"' in page
    assert f'class="frontier"' in page and f'data-points="{len(s["frontier"])}"' in page
    assert page.count('class="auto-ring"') == 5 and page.count('class="mark auto"') == 5
    assert "ringed points: auto" in page
    # without auto: no rings
    plain = write_html_report(_run(), tmp_path / "p.html", title="t", meta={}).read_text()
    assert "auto-ring" not in plain
