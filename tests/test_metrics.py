"""Evaluation metrics against exact values, brute-force enumerations and planted parameters."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from infscale.errors import ConfigError
from infscale.evaluation.metrics import (
    HoldoutExhausted,
    Thresholdout,
    beta_cdf,
    beta_interval,
    beta_ppf,
    cost_summary,
    coverage_curve,
    coverage_ks,
    fit_coverage_power_law,
    holdout_split,
    majority_at_k,
    paired_comparison,
    pass_at_k,
    power_law_coverage,
    summarize,
    verifier_ceiling,
    verifier_false_positive_rate,
    wilson_interval,
)

# ---------------------------------------------------------------- intervals


def test_wilson_known_values():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775328, abs=1e-6)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.2775328, abs=1e-6)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.2365931, 0.7634069), abs=1e-6)
    # 90% level, 3 of 20: hand computation with z = 1.6448536
    z = 1.6448536269514722
    p, n = 0.15, 20
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_interval(3, 20, conf=0.90) == pytest.approx((c - h, c + h), abs=1e-12)


def test_wilson_fractional_k_lies_between_neighbours():
    lo, hi = wilson_interval(7.5, 20)
    lo7, hi7 = wilson_interval(7, 20)
    lo8, hi8 = wilson_interval(8, 20)
    assert lo7 < lo < lo8 and hi7 < hi < hi8
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, conf=1.0)


def _binomial_upper_tail(n: int, x: float, a: int) -> float:
    return sum(math.comb(n, j) * x**j * (1 - x) ** (n - j) for j in range(a, n + 1))


def test_beta_cdf_matches_binomial_identity():
    # For integer a, b: I_x(a, b) = P(Binomial(a+b-1, x) >= a).
    for a, b in [(1, 1), (2, 5), (5, 2), (3, 30), (12, 9), (40, 60)]:
        for x in (0.01, 0.1, 0.3, 0.5, 0.77, 0.99):
            assert beta_cdf(x, a, b) == pytest.approx(_binomial_upper_tail(a + b - 1, x, a), abs=1e-12)


def test_beta_quantiles_known_values():
    assert beta_interval(0, 0) == pytest.approx((0.025, 0.975), abs=1e-12)  # Beta(1,1) is uniform
    assert beta_ppf(0.5, 2, 5) == pytest.approx(0.26444998329566, abs=1e-10)  # median of Beta(2,5)
    assert beta_ppf(0.5, 5, 2) == pytest.approx(1 - 0.26444998329566, abs=1e-10)
    assert beta_ppf(0.5, 7.3, 7.3) == pytest.approx(0.5, abs=1e-12)
    # Beta(1, b): closed-form quantile 1 - (1-q)^(1/b); here the k=0, n=9 posterior Beta(1, 10).
    lo, hi = beta_interval(0, 9)
    assert lo == pytest.approx(1 - 0.975 ** (1 / 10), abs=1e-12)
    assert hi == pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-12)
    # Non-integer parameters (Jeffreys prior, fractional k): the quantile inverts the CDF.
    lo, hi = beta_interval(3.5, 17, prior=(0.5, 0.5))
    assert beta_cdf(lo, 4.0, 14.0) == pytest.approx(0.025, abs=1e-10)
    assert beta_cdf(hi, 4.0, 14.0) == pytest.approx(0.975, abs=1e-10)
    # Large counts stay accurate (continued fraction converges).
    lo, hi = beta_interval(300, 1000)
    assert beta_cdf(lo, 301, 701) == pytest.approx(0.025, abs=1e-9)
    assert 0.27 < lo < 0.3 < hi < 0.33


# ---------------------------------------------------------------- pass@k and coverage


def test_pass_at_k_equals_brute_force_over_subsets():
    for n in range(1, 9):
        for c in range(n + 1):
            labels = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(labels, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


def test_pass_at_k_large_n_is_stable_and_validates():
    # C(1000, 500) overflows floats; the product form does not.
    assert pass_at_k(1000, 1, 500) == pytest.approx(0.5, abs=1e-12)
    assert pass_at_k(1000, 0, 999) == 0.0
    with pytest.raises(ValueError):
        pass_at_k(5, 2, 6)
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 2, 0)


def test_coverage_curve_is_the_mean_of_pass_at_k():
    per = [(10, 0), (10, 3), (12, 12), (16, 1)]
    ks = coverage_ks(10)
    assert ks == [1, 2, 4, 8, 10]
    cov = coverage_curve(per, ks)
    for k, v in zip(ks, cov):
        assert v == pytest.approx(np.mean([pass_at_k(n, c, k) for n, c in per]))
    assert all(b >= a for a, b in zip(cov, cov[1:]))
    with pytest.raises(ValueError):
        coverage_curve(per, [11])


def test_power_law_fit_recovers_planted_parameters():
    a, b = -1.3, -0.45
    ks = [2**i for i in range(11)]
    exact = power_law_coverage(ks, a, b)
    fit = fit_coverage_power_law(ks, exact)
    assert fit["a"] == pytest.approx(a, abs=1e-9) and fit["b"] == pytest.approx(b, abs=1e-9)
    assert fit["rmse"] < 1e-12 and fit["r2"] == pytest.approx(1.0) and fit["reason"] is None
    # With 1% multiplicative noise on log(coverage) the fit stays close.
    rng = np.random.default_rng(3)
    noisy = [math.exp(math.log(c) * (1 + 0.01 * e)) for c, e in zip(exact, rng.standard_normal(len(ks)))]
    fit = fit_coverage_power_law(ks, noisy)
    assert fit["a"] == pytest.approx(a, abs=0.05) and fit["b"] == pytest.approx(b, abs=0.02)
    assert fit["r2"] > 0.99 and fit["n_points"] == len(ks)


def test_power_law_fit_on_sampled_coverage():
    # Per-problem success probabilities with a power-law left tail (Schaeffer et al. 2025):
    # coverage from unbiased pass@k of simulated pools is fitted well.
    rng = np.random.default_rng(0)
    probs = rng.beta(0.3, 3.0, size=400)
    n = 256
    per = [(n, int(rng.binomial(n, p))) for p in probs]
    ks = coverage_ks(n)
    fit = fit_coverage_power_law(ks, coverage_curve(per, ks))
    assert fit["a"] < 0 and fit["b"] < 0 and fit["r2"] > 0.98 and fit["rmse"] < 0.03


def test_power_law_fit_degenerate_cases():
    for ks, cov, word in [([1, 2, 4], [0.0, 0.0, 0.0], "0 at every"), ([1, 2], [1.0, 1.0], "1 at every"),
                          ([1, 2, 4], [0.5, 1.0, 1.0], "1 point"), ([1], [0.3], "1 point")]:
        fit = fit_coverage_power_law(ks, cov)
        assert fit["a"] is None and fit["b"] is None and fit["rmse"] is None and fit["r2"] is None
        assert word in fit["reason"]


# ---------------------------------------------------------------- majority@k


def _majority_brute(answers, correct, k):
    classes = {}
    for a, c in zip(answers, correct):
        if a is not None:
            classes.setdefault(a, []).append(c)
    value = {a: float(np.mean(v)) for a, v in classes.items()}
    scores = []
    for sub in itertools.combinations(range(len(answers)), k):
        votes = {}
        for i in sub:
            if answers[i] is not None:
                votes[answers[i]] = votes.get(answers[i], 0) + 1
        if not votes:
            scores.append(0.0)
            continue
        top = max(votes.values())
        tied = [a for a, v in votes.items() if v == top]
        scores.append(float(np.mean([value[a] for a in tied])))
    return float(np.mean(scores))


def _random_pools(rng, problems, n):
    answers, correct = [], []
    for _ in range(problems):
        a = [None if rng.random() < 0.15 else str(rng.integers(0, 4)) for _ in range(n)]
        answers.append(a)
        correct.append([x == "1" for x in a])
    return answers, correct


def test_majority_at_k_matches_exact_enumeration():
    rng = np.random.default_rng(7)
    answers, correct = _random_pools(rng, 6, 10)
    for k in (1, 2, 3, 5, 8, 10):
        brute = float(np.mean([_majority_brute(a, c, k) for a, c in zip(answers, correct)]))
        assert majority_at_k(answers, correct, k) == pytest.approx(brute, abs=1e-12)
        assert majority_at_k(answers, correct, k, method="exact") == pytest.approx(brute, abs=1e-12)


def test_majority_at_k_ties_and_abstentions():
    # Two answers 1:1, k=2 → tie half the time, broken uniformly.
    assert majority_at_k([["a", "b"]], [[True, False]], 2) == pytest.approx(0.5)
    assert majority_at_k([[None, None, "a"]], [[False, False, True]], 1) == pytest.approx(1 / 3)
    assert majority_at_k([["x", "x", "y"]], [[False, False, True]], 3) == 0.0
    with pytest.raises(ValueError):
        majority_at_k([["a"]], [[True]], 2)


def test_majority_at_k_monte_carlo_agrees_within_its_error():
    rng = np.random.default_rng(11)
    answers, correct = _random_pools(rng, 8, 12)
    draws = 4000
    for k in (3, 6):
        exact = majority_at_k(answers, correct, k, method="exact")
        mc = majority_at_k(answers, correct, k, method="monte-carlo", draws=draws, rng_seed=5)
        # Each problem's estimate has sd <= 0.5/sqrt(draws); the mean over 8 problems less.
        assert abs(mc - exact) < 5 * 0.5 / math.sqrt(draws * len(answers))
        assert mc == majority_at_k(answers, correct, k, method="monte-carlo", draws=draws, rng_seed=5)


# ---------------------------------------------------------------- paired comparison


def test_paired_comparison_exact_mcnemar_p_value():
    # 8 problems only a solves, 2 only b solves, 10 ties: p = 2·P(Bin(10, 1/2) <= 2) = 112/1024.
    a = [1] * 8 + [0] * 2 + [1] * 4 + [0] * 6
    b = [0] * 8 + [1] * 2 + [1] * 4 + [0] * 6
    r = paired_comparison(a, b)
    assert r["test"] == "mcnemar-exact"
    assert r["p_value"] == pytest.approx(112 / 1024, abs=1e-15)
    assert (r["wins"], r["losses"], r["ties"], r["n"]) == (8, 2, 10, 20)
    assert r["diff"] == pytest.approx(0.3)
    lo, hi = r["interval"]
    assert -1 <= lo < 0.3 < hi <= 1
    # balanced discordance → p = 1; a one-sided sweep of 6 → p = 2/64
    assert paired_comparison([1, 0, 1, 0], [0, 1, 0, 1])["p_value"] == 1.0
    assert paired_comparison([1] * 6, [0] * 6)["p_value"] == pytest.approx(2 / 64)


def test_paired_comparison_fractional_sign_flip_exact():
    a = [0.5, 1.0, 0.25, 0.75, 1.0, 0.0]
    b = [0.0, 0.5, 0.25, 0.5, 1.0, 0.5]
    d = [x - y for x, y in zip(a, b) if x != y]
    obs = abs(sum(d))
    patterns = list(itertools.product([-1, 1], repeat=len(d)))
    expected = sum(abs(sum(s * v for s, v in zip(sg, d))) >= obs - 1e-12 for sg in patterns) / len(patterns)
    r = paired_comparison(a, b)
    assert r["test"] == "sign-flip-exact"
    assert r["p_value"] == pytest.approx(expected)


def test_paired_comparison_monte_carlo_is_seeded_and_detects_a_shift():
    rng = np.random.default_rng(2)
    b = rng.uniform(0, 0.6, size=40)
    a = np.clip(b + rng.uniform(0.05, 0.35, size=40), 0, 1)
    r1 = paired_comparison(list(a), list(b), seed=4)
    r2 = paired_comparison(list(a), list(b), seed=4)
    assert r1 == r2 and r1["test"] == "sign-flip-monte-carlo"
    assert r1["p_value"] == pytest.approx(1 / 20001)  # no sign pattern beats the observed all-positive sum
    assert r1["interval"][0] > 0


def test_paired_interval_covers_at_nominal_rate_in_small_samples():
    # Newcombe's interval on correlated paired 0/1 data with n = 25: coverage near 95%.
    rng = np.random.default_rng(123)
    n, reps, hits = 25, 1500, 0
    p_both, p_a, p_b = 0.45, 0.2, 0.1  # cell probabilities; true diff = 0.1
    for _ in range(reps):
        u = rng.random(n)
        a = ((u < p_both) | ((u >= p_both) & (u < p_both + p_a))).astype(float)
        b = ((u < p_both) | ((u >= p_both + p_a) & (u < p_both + p_a + p_b))).astype(float)
        lo, hi = paired_comparison(list(a), list(b))["interval"]
        hits += lo <= 0.1 <= hi
    # 1500 reps: sd of the coverage estimate ~0.006; Newcombe reports ~0.95 for method 10.
    assert hits / reps > 0.925


# ---------------------------------------------------------------- verifiers


def test_verifier_ceiling_formula_and_simulation():
    assert verifier_ceiling(0.0, 1.0, 0.2) == 1.0
    assert verifier_ceiling(0.1, 0.9, 0.3) == pytest.approx(0.27 / (0.27 + 0.07))
    assert verifier_ceiling(0.0, 0.0, 0.5) == 0.0
    # Resampling until the verifier accepts converges to the formula.
    rng = np.random.default_rng(9)
    p, tpr, fpr = 0.25, 0.8, 0.15
    finals = []
    for _ in range(4000):
        while True:
            ok = rng.random() < p
            if rng.random() < (tpr if ok else fpr):
                finals.append(ok)
                break
    expected = verifier_ceiling(fpr, tpr, p)
    assert abs(np.mean(finals) - expected) < 5 * math.sqrt(expected * (1 - expected) / 4000)


def test_verifier_false_positive_rate_counts():
    full = [True] * 10 + [False] * 30
    weak = [True] * 9 + [False] + [True] * 6 + [False] * 24
    r = verifier_false_positive_rate(weak, full)
    assert r["fpr"] == pytest.approx(6 / 30) and r["tpr"] == pytest.approx(9 / 10)
    assert r["base_accuracy"] == pytest.approx(0.25) and r["precision"] == pytest.approx(9 / 15)
    assert r["ceiling"] == pytest.approx(verifier_ceiling(0.2, 0.9, 0.25))
    assert r["fpr_interval"] == pytest.approx(list(wilson_interval(6, 30)))
    ids = ["p1"] * 20 + ["p2"] * 20
    r = verifier_false_positive_rate(weak, full, problem_ids=ids)
    # p1 accepts 9 correct and 6 wrong samples → 9/15; p2 accepts nothing → the loop never stops → 0
    assert r["ceiling_per_problem"] == pytest.approx((9 / 15 + 0.0) / 2) and r["problems"] == 2


# ---------------------------------------------------------------- reusable holdout


def test_thresholdout_answers_train_when_it_agrees_and_holdout_when_it_overfits():
    train = {"good": 0.61, "overfit": 0.95}
    holdout = {"good": 0.60, "overfit": [1.0] * 5 + [0.0] * 5}  # per-problem scores, mean 0.5
    t = Thresholdout(train, holdout, threshold=0.04, sigma=0.01, budget=10, seed=0)
    assert t.query("good") == 0.61 and t.remaining == 10
    answers = [t.query("overfit") for _ in range(5)]
    assert all(abs(v - 0.5) < 0.1 for v in answers)  # Laplace(0.01) noise: |ξ| > 0.1 has prob e^-10
    assert t.remaining == 5
    assert [e["holdout_used"] for e in t.log] == [False] + [True] * 5
    # Same seed, same answers; spent budget raises.
    t2 = Thresholdout(train, holdout, budget=10, seed=0)
    assert [t2.query("good")] + [t2.query("overfit") for _ in range(5)] == [0.61, *answers]
    t3 = Thresholdout(train, holdout, budget=1, seed=1)
    t3.query("overfit")
    with pytest.raises(HoldoutExhausted):
        t3.query("overfit")
    with pytest.raises(ConfigError):
        t.query("unknown")


def test_thresholdout_selection_is_not_fooled_by_training_noise():
    # 60 strategies, all truly 0.5 accurate; the best training score is inflated by selection.
    rng = np.random.default_rng(1)
    names = [f"s{i}" for i in range(60)]
    train = {n: float(rng.binomial(100, 0.5) / 100) for n in names}
    train["s0"] = 0.8  # one that overfits the training split badly
    holdout = {n: float(rng.binomial(100, 0.5) / 100) for n in names}
    best, answers = Thresholdout(train, holdout, seed=0).best(names)
    assert answers["s0"] < 0.7 and best in names  # overfitting caught and answered from the holdout


def test_holdout_split_is_stable():
    ids = [f"p{i}" for i in range(200)]
    tr, ho = holdout_split(ids, 0.5, seed=3)
    assert sorted(tr + ho) == sorted(ids) and not set(tr) & set(ho)
    assert 70 < len(ho) < 130
    tr2, ho2 = holdout_split(list(reversed(ids)), 0.5, seed=3)
    assert set(ho2) == set(ho)


# ---------------------------------------------------------------- costs and summary


def test_cost_summary_averages_seeds_then_problems():
    rows = [
        {"problem_id": "a", "seed": 0, "generated_tokens": 10, "prompt_tokens": 5, "calls": 1, "seconds": 1.0},
        {"problem_id": "a", "seed": 1, "generated_tokens": 30, "prompt_tokens": 5, "calls": 3, "seconds": 3.0},
        {"problem_id": "b", "seed": 0, "generated_tokens": 100, "prompt_tokens": 7, "calls": 2, "seconds": 0.5},
    ]
    c = cost_summary(rows)
    assert c == {"generated_tokens": 60.0, "prompt_tokens": 6.0, "calls": 2.0, "seconds": 1.25, "problems": 2}


def _row(strategy, budget, seed, pid, correct, tokens=10.0):
    return {"strategy": strategy, "budget": budget, "seed": seed, "problem_id": pid, "correct": correct,
            "generated_tokens": tokens, "prompt_tokens": 4.0, "calls": 1.0, "seconds": 0.1}


def test_summarize_cells_coverage_and_comparisons():
    results = []
    for pid, ok in zip("abcd", [1, 1, 0, 0]):
        results.append(_row("majority", 4, 0, pid, float(ok), 40.0))
        results.append(_row("majority", 4, 1, pid, float(ok if pid != "c" else 1), 60.0))
        results.append(_row("majority", 8, 0, pid, 1.0, 90.0))
        results.append(_row("best-of-n:scorer=arith-check", 4, 0, pid, float(pid == "a"), 50.0))
        results.append(_row("best-of-n:scorer=arith-check", 2, 0, pid, 0.0, 20.0))
    samples = [{"problem_id": pid, "correct": j < i, "answer": "7" if j < i else str(j)}
               for i, pid in enumerate("abcd") for j in range(5)]
    s = summarize(results, samples)
    keys = [(c["strategy"], c["budget"]) for c in s["cells"]]
    assert keys == [("best-of-n:scorer=arith-check", 2), ("best-of-n:scorer=arith-check", 4), ("majority", 4), ("majority", 8)]
    m4 = s["cells"][2]
    assert m4["problems"] == 4 and m4["seeds"] == 2
    assert m4["accuracy"] == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    assert m4["wilson"] == pytest.approx(list(wilson_interval(2.5, 4)))
    assert m4["beta"] == pytest.approx(list(beta_interval(2.5, 4)))
    assert m4["generated_tokens"] == pytest.approx(50.0)
    cov = s["coverage"]
    assert cov["ks"] == [1, 2, 4, 5] and cov["problems"] == 4 and cov["min_samples"] == 5
    assert cov["coverage"] == pytest.approx(coverage_curve([(5, 0), (5, 1), (5, 2), (5, 3)], [1, 2, 4, 5]))
    assert cov["majority"]["ks"] == cov["ks"] and len(cov["majority"]["accuracy"]) == 4
    # each strategy at its largest budget against the baseline at its largest budget
    (cmp,) = s["comparisons"]
    assert (cmp["strategy"], cmp["budget"], cmp["baseline"], cmp["baseline_budget"]) == \
        ("majority", 8, "best-of-n:scorer=arith-check", 4)
    assert cmp["diff"] == pytest.approx(1.0 - 0.25) and cmp["n"] == 4
    assert summarize(results)["coverage"] is None
    (cmp,) = summarize(results, baseline="majority")["comparisons"]
    assert (cmp["strategy"], cmp["budget"], cmp["baseline"], cmp["baseline_budget"]) == \
        ("best-of-n:scorer=arith-check", 4, "majority", 8)
    assert cmp["diff"] == pytest.approx(0.25 - 1.0)


def test_comparisons_state_tokens_and_match_compute():
    """Each comparison states both sides' generated tokens; the matched-compute comparison pairs
    each strategy budget with the baseline budget whose generated tokens are nearest."""
    results = []
    for pid, ok in zip("abcd", [1, 0, 1, 0]):
        for budget, tokens in ((1, 10.0), (4, 40.0), (8, 80.0)):
            results.append(_row("greedy", budget, 0, pid, float(ok), tokens))
        results.append(_row("beam", 1, 0, pid, 1.0, 35.0))  # nearest: greedy@4 (40)
        results.append(_row("beam", 4, 0, pid, 1.0, 90.0 if pid != "d" else 50.0))  # mean 80: greedy@8
        results.append(_row("smc", 2, 0, pid, 0.0, 25.0))  # 15 from greedy@1 and greedy@4: the cheaper
    s = summarize(results, baseline="greedy")
    largest = {c["strategy"]: c for c in s["comparisons"]}
    assert (largest["beam"]["budget"], largest["beam"]["baseline_budget"]) == (4, 8)
    assert largest["beam"]["tokens"] == pytest.approx(80.0) and largest["beam"]["baseline_tokens"] == pytest.approx(80.0)
    assert largest["smc"]["tokens"] == pytest.approx(25.0) and largest["smc"]["baseline_tokens"] == pytest.approx(80.0)
    matched = {(c["strategy"], c["budget"]): c for c in s["matched"]}
    assert set(matched) == {("beam", 1), ("beam", 4), ("smc", 2)}
    assert matched["beam", 1]["baseline_budget"] == 4 and matched["beam", 1]["baseline_tokens"] == pytest.approx(40.0)
    assert matched["beam", 4]["baseline_budget"] == 8
    assert matched["smc", 2]["baseline_budget"] == 1  # a tie goes to the smaller budget
    for c in s["matched"]:
        assert c["diff"] == pytest.approx(c["mean_a"] - c["mean_b"]) and c["n"] == 4 and c["baseline"] == "greedy"
    assert matched["beam", 1]["diff"] == pytest.approx(0.5) and matched["smc", 2]["diff"] == pytest.approx(-0.5)


def test_report_majority_at_k_folds_answers_like_the_majority_strategy():
    """'12' and '12.0' are one answer to the math task (and to the majority strategy), so with
    k = 3 of ['12', '12.0', '3'] the vote is won, not a three-way tie."""
    from infscale.tasks import get_task  # noqa: PLC0415
    from infscale.strategies.voting import fold  # noqa: PLC0415
    from infscale.types import Candidate  # noqa: PLC0415

    answers = ["12", "12.0", "3"]
    classes = fold([Candidate(text="", answer=a) for a in answers], [0.0] * 3, get_task("math"))
    assert [c.count for c in classes] == [2, 1]  # what the majority strategy sees
    results = [_row("majority", 3, 0, "p", 1.0)]
    samples = [{"problem_id": "p", "answer": a, "correct": a != "3", "task": "math"} for a in answers]
    cov = summarize(results, samples)["coverage"]
    assert cov["ks"] == [1, 2, 3]
    assert cov["majority"]["accuracy"][2] == pytest.approx(1.0)  # string equality would give 2/3
    assert cov["majority"]["accuracy"][0] == pytest.approx(2 / 3)
    # without a task key the default task (math) folds the same way
    plain = [{k: v for k, v in r.items() if k != "task"} for r in samples]
    assert summarize(results, plain)["coverage"]["majority"]["accuracy"][2] == pytest.approx(1.0)
    # the text task compares strings, so there the three answers stay apart
    text = [{**r, "task": "text"} for r in samples]
    assert summarize(results, text)["coverage"]["majority"]["accuracy"][2] == pytest.approx(2 / 3)


def test_scipy_agrees_with_closed_forms():
    """The scipy-backed Beta CDF / quantile and exact tests agree with closed forms."""
    from infscale.evaluation.metrics import _binom_two_sided_equal, _sign_flip_p  # noqa: PLC0415

    # Beta(1, b) has CDF 1 - (1-x)^b and quantile 1 - (1-q)^(1/b)
    for b in (1.0, 2.5, 40.0):
        for x in (0.01, 0.3, 0.9):
            assert beta_cdf(x, 1.0, b) == pytest.approx(1 - (1 - x) ** b, abs=1e-12)
            assert beta_ppf(x, 1.0, b) == pytest.approx(1 - (1 - x) ** (1 / b), abs=1e-12)
    for d in range(0, 13):
        for x in range(d + 1):
            lo = min(x, d - x)
            want = 1.0 if d == 0 else min(1.0, 2 * sum(math.comb(d, i) for i in range(lo + 1)) / 2**d)
            assert _binom_two_sided_equal(d, x) == pytest.approx(want, abs=1e-12)
    diffs = np.array([0.5, -0.25, 0.75, 0.0, 0.5])
    nz = diffs[diffs != 0]
    sums = [abs(float(np.dot(s, nz))) for s in itertools.product([-1, 1], repeat=len(nz))]
    p, test = _sign_flip_p(diffs, 0, 100)
    assert test == "sign-flip-exact" and p == pytest.approx(np.mean([t >= abs(nz.sum()) - 1e-9 for t in sums]))


def test_libraries_are_imported_lazily():
    """scipy, tqdm and prometheus_client cost import time: `import infscale` and the CLI's entry
    module must not pull them in (only the command or metric that uses one does)."""
    import json  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = ("import sys, json, infscale, infscale.cli.main, infscale.evaluation.metrics, infscale.strategies.sample; "
            "print(json.dumps([m for m in ('scipy', 'tqdm', 'prometheus_client') if m in sys.modules]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == []


def test_paired_comparison_with_one_fractional_difference():
    """One non-zero paired difference (e.g. greedy vs adaptive over 2 seeds, equal but on one
    problem): p = 1 (its two sign patterns tie), not scipy's 'two or more observations' error."""
    r = paired_comparison([0.5, 1.0, 0.0], [0.0, 1.0, 0.0])
    assert r["p_value"] == 1.0 and r["test"] == "sign-flip-exact"
    assert (r["wins"], r["losses"], r["ties"]) == (1, 0, 2)
