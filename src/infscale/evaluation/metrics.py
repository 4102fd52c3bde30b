"""Metrics of the evaluation harness: what a strategy's compute bought, with honest uncertainty.

Pure functions over plain Python data (numpy, scipy.stats and the standard library). Every
formula, its assumptions and its reference are written out in ``docs/evaluation-metrics.md``;
the docstrings below state the estimator and cite the paper.

Intervals are built for small samples — a benchmark slice of 30 problems is normal here — so no
bare normal-approximation (Wald/CLT) interval appears anywhere:

* :func:`wilson_interval` — Wilson (1927) score interval;
* :func:`beta_interval` — equal-tailed Beta-binomial posterior credible interval (Beta quantiles
  from ``scipy.stats.beta``);
* :func:`paired_comparison` — the exact McNemar test on discordant pairs (0/1 scores,
  ``scipy.stats.binomtest``) or an exact / seeded Monte Carlo sign-flip permutation test
  (fractional scores, ``scipy.stats.permutation_test``), with Newcombe's (1998) paired
  Wilson-based interval for the difference.

scipy is imported inside the functions that use it, so importing this module (and ``infscale``)
stays light.

User-caused errors raise :class:`~infscale.errors.ConfigError`, which is a ``ValueError``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from ..errors import ConfigError, InfscaleError

__all__ = [
    "wilson_interval",
    "beta_interval",
    "beta_cdf",
    "beta_ppf",
    "pass_at_k",
    "coverage_curve",
    "coverage_ks",
    "fit_coverage_power_law",
    "power_law_coverage",
    "majority_at_k",
    "paired_comparison",
    "verifier_ceiling",
    "verifier_false_positive_rate",
    "verifier_rates",
    "flaws_prediction",
    "abstention_curve",
    "chosen_with_confidence",
    "pareto_frontier",
    "Thresholdout",
    "HoldoutExhausted",
    "holdout_split",
    "cost_summary",
    "summarize",
    "COST_KEYS",
]

COST_KEYS = ("generated_tokens", "prompt_tokens", "calls", "seconds")


# --------------------------------------------------------------------------------------------
# Intervals for a proportion
# --------------------------------------------------------------------------------------------


def _check_conf(conf: float) -> None:
    if not (0.0 < conf < 1.0):
        raise ConfigError("conf", f"must be strictly between 0 and 1, got {conf!r}", "e.g. 0.95")


def _check_kn(k: float, n: int) -> None:
    if n < 0:
        raise ConfigError("n", f"must be >= 0, got {n!r}")
    if not (0.0 <= k <= n + 1e-9 * max(1, n)):
        raise ConfigError("k", f"must be between 0 and n={n}, got {k!r}")


def wilson_interval(k: float, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion with ``k`` successes out of ``n``.

    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`` with ``p = k/n`` and ``z`` the
    ``1-(1-conf)/2`` normal quantile (Wilson 1927, JASA 22:209-212; recommended for small n by
    Brown, Cai & DasGupta 2001). ``k`` may be fractional (a mean of per-problem scores in [0,1]
    times n): a [0,1] variable with mean p has variance at most p(1-p) (Bhatia & Davis 2000), so
    the score interval stays conservative in its variance. ``n == 0`` gives ``(0, 1)``.
    """
    _check_conf(conf)
    _check_kn(k, n)
    if n == 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(1.0 - (1.0 - conf) / 2.0)
    p = min(max(k / n, 0.0), 1.0)
    z2n = z * z / n
    center = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
    lower = 0.0 if p == 0.0 else max(0.0, center - half)
    upper = 1.0 if p == 1.0 else min(1.0, center + half)
    return (lower, upper)


def beta_cdf(x: float, a: float, b: float) -> float:
    """Regularized incomplete beta function I_x(a, b): the CDF of Beta(a, b) at ``x`` (scipy.stats)."""
    if a <= 0 or b <= 0:
        raise ConfigError("beta parameters", f"must be > 0, got a={a!r}, b={b!r}")
    from scipy import stats  # noqa: PLC0415  (only the metrics need scipy; keep `import infscale` light)

    return float(stats.beta.cdf(x, a, b))


def beta_ppf(q: float, a: float, b: float) -> float:
    """Quantile of Beta(a, b): the x with I_x(a, b) = q (scipy.stats)."""
    if not (0.0 <= q <= 1.0):
        raise ConfigError("q", f"must be in [0, 1], got {q!r}")
    if a <= 0 or b <= 0:
        raise ConfigError("beta parameters", f"must be > 0, got a={a!r}, b={b!r}")
    from scipy import stats  # noqa: PLC0415

    return float(stats.beta.ppf(q, a, b))


def beta_interval(
    k: float, n: int, conf: float = 0.95, prior: tuple[float, float] = (1.0, 1.0)
) -> tuple[float, float]:
    """Equal-tailed Beta-binomial credible interval for a proportion.

    With a Beta(α, β) prior (default uniform) and ``k`` successes in ``n`` trials the posterior
    is Beta(α + k, β + n - k); the interval is its ``(1-conf)/2`` and ``1-(1-conf)/2`` quantiles.
    ``prior=(0.5, 0.5)`` gives the Jeffreys interval of Brown, Cai & DasGupta (2001). ``k`` may be
    fractional, as in :func:`wilson_interval`.
    """
    _check_conf(conf)
    _check_kn(k, n)
    a0, b0 = prior
    if a0 <= 0 or b0 <= 0:
        raise ConfigError("prior", f"both Beta prior parameters must be > 0, got {prior!r}")
    a, b = a0 + k, b0 + max(n - k, 0.0)
    tail = (1.0 - conf) / 2.0
    return (beta_ppf(tail, a, b), beta_ppf(1.0 - tail, a, b))


# --------------------------------------------------------------------------------------------
# pass@k, coverage and its power-law fit
# --------------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al. 2021).

    ``1 - C(n-c, k) / C(n, k)``: the probability that a uniformly random k-subset of the n samples
    contains a correct one. Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``, the numerically
    stable product of Chen et al. (2021, "Evaluating Large Language Models Trained on Code",
    arXiv:2107.03374, Fig. 3). Raises ``ValueError`` unless ``0 <= c <= n`` and ``1 <= k <= n``.
    """
    if n < 1:
        raise ConfigError("n", f"must be >= 1, got {n!r}")
    if not (0 <= c <= n):
        raise ConfigError("c", f"must be between 0 and n={n}, got {c!r}")
    if not (1 <= k <= n):
        raise ConfigError("k", f"must be between 1 and n={n}, got {k!r}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def coverage_curve(per_problem: Sequence[tuple[int, int]], ks: Sequence[int]) -> list[float]:
    """Coverage at each k: the mean over problems of unbiased pass@k from ``(n_i, c_i)`` pairs."""
    if not per_problem:
        raise ConfigError("per_problem", "no problems")
    n_min = min(n for n, _ in per_problem)
    out = []
    for k in ks:
        if k > n_min:
            raise ConfigError("ks", f"k={k} exceeds the smallest sample pool ({n_min})", f"k <= {n_min}")
        out.append(float(np.mean([pass_at_k(n, c, k) for n, c in per_problem])))
    return out


def coverage_ks(n_min: int) -> list[int]:
    """The k values a report uses for pools of at least ``n_min`` samples: powers of 2, and n_min."""
    ks, k = [], 1
    while k <= n_min:
        ks.append(k)
        k *= 2
    if n_min >= 1 and ks[-1] != n_min:
        ks.append(n_min)
    return ks


def power_law_coverage(ks: Sequence[float], a: float, b: float) -> list[float]:
    """The exponentiated power law ``coverage(k) = exp(a · k^b)`` at each k."""
    return [math.exp(a * float(k) ** b) for k in ks]


def fit_coverage_power_law(ks: Sequence[float], coverage: Sequence[float]) -> dict[str, Any]:
    """Fit ``log(coverage) ≈ a · k^b`` (Brown et al. 2024, "Large Language Monkeys", arXiv:2407.21787).

    Linearised as ``log(-log c) = log(-a) + b·log k`` and fitted by ordinary least squares over the
    points with ``0 < c < 1`` (c = 0 or 1 carry no information on this scale). Returns ``a`` (< 0),
    ``b`` (< 0 when coverage rises with k), ``rmse`` and ``r2`` of the fitted curve in coverage
    space over the points used, ``rmse_linearized`` on the log(-log) scale, ``n_points`` and
    ``reason`` (``None`` when the fit exists). With fewer than two usable points every value is
    ``None`` and ``reason`` says why.
    """
    if len(ks) != len(coverage):
        raise ConfigError("coverage", f"has {len(coverage)} values for {len(ks)} ks")
    pts = [(float(k), float(c)) for k, c in zip(ks, coverage) if k > 0 and 0.0 < c < 1.0]
    result: dict[str, Any] = {
        "a": None, "b": None, "rmse": None, "r2": None, "rmse_linearized": None,
        "n_points": len(pts), "reason": None,
    }
    if len(pts) < 2 or len({k for k, _ in pts}) < 2:
        if coverage and all(c <= 0.0 for c in coverage):
            why = "coverage is 0 at every k"
        elif coverage and all(c >= 1.0 for c in coverage):
            why = "coverage is 1 at every k"
        else:
            why = f"{len(pts)} point(s) with 0 < coverage < 1; the fit needs at least 2 distinct k"
        result["reason"] = why
        return result
    x = np.log([k for k, _ in pts])
    y = np.log(-np.log([c for _, c in pts]))
    b, intercept = np.polyfit(x, y, 1)
    a = -math.exp(intercept)
    obs = np.array([c for _, c in pts])
    pred = np.array(power_law_coverage([k for k, _ in pts], a, b))
    ss_res = float(np.sum((obs - pred) ** 2))
    ss_tot = float(np.sum((obs - obs.mean()) ** 2))
    result.update(
        a=float(a),
        b=float(b),
        rmse=math.sqrt(ss_res / len(pts)),
        r2=(1.0 - ss_res / ss_tot) if ss_tot > 0 else None,
        rmse_linearized=float(np.sqrt(np.mean((y - (intercept + b * x)) ** 2))),
    )
    return result


# --------------------------------------------------------------------------------------------
# majority@k
# --------------------------------------------------------------------------------------------

_EXACT_OPS_LIMIT = 60_000  # numpy slice updates per problem before falling back to Monte Carlo


def _answer_classes(answers: Sequence[str | None], correct: Sequence[bool]):
    """Voting classes of one pool: counts, correctness value of each class, None count, sample ids."""
    index: dict[str, int] = {}
    counts: list[int] = []
    hits: list[float] = []
    ids = np.empty(len(answers), dtype=np.int64)
    none = 0
    for i, (ans, ok) in enumerate(zip(answers, correct)):
        if ans is None:
            none += 1
            ids[i] = -1
            continue
        j = index.setdefault(str(ans), len(index))
        if j == len(counts):
            counts.append(0)
            hits.append(0.0)
        counts[j] += 1
        hits[j] += float(bool(ok))
        ids[i] = j
    values = [h / m for h, m in zip(hits, counts)]
    return counts, values, none, ids


def _majority_exact_ops(counts: list[int], values: list[float], k: int) -> int:
    ops = 0
    for c, v in enumerate(values):
        if v > 0:
            for t in range(1, min(counts[c], k) + 1):
                ops += sum(min(m, t, k - t) + 1 for j, m in enumerate(counts) if j != c)
    return ops


def _majority_exact(counts: list[int], values: list[float], none: int, k: int) -> float:
    """E[score of a k-sample majority vote] under sampling without replacement, exactly.

    For each class c that is (partly) correct and each count t >= 1 it receives, a dynamic
    programme over the other voting classes sums ``prod C(m_j, x_j)`` over their counts x_j <= t,
    tracking how many tie with c at t (the tie is broken uniformly: c wins with probability
    1/(1+ties)); abstentions (None) fill the remaining draws.
    """
    n = sum(counts) + none
    total = math.comb(n, k)
    expected = 0.0
    for c, v in enumerate(values):
        if v <= 0:
            continue
        others = [m for j, m in enumerate(counts) if j != c]
        acc = 0.0
        for t in range(1, min(counts[c], k) + 1):
            rest = k - t
            dp = np.zeros((rest + 1, len(others) + 1))  # dp[s, e]: s draws used, e classes tied at t
            dp[0, 0] = 1.0
            for m in others:
                new = np.zeros_like(dp)
                for x in range(0, min(m, t, rest) + 1):
                    w = float(math.comb(m, x))
                    if x == t:
                        new[x:, 1:] += w * dp[: rest + 1 - x, :-1]
                    else:
                        new[x:, :] += w * dp[: rest + 1 - x, :]
                dp = new
            fill = np.array([math.comb(none, rest - s) for s in range(rest + 1)], dtype=float)
            share = 1.0 / (1.0 + np.arange(len(others) + 1))
            acc += math.comb(counts[c], t) * float(fill @ dp @ share)
        expected += v * acc
    return expected / total


def _majority_monte_carlo(ids: np.ndarray, values: list[float], k: int, rng: np.random.Generator, draws: int) -> float:
    n, J = len(ids), len(values)
    if J == 0:
        return 0.0
    picks = np.argsort(rng.random((draws, n)), axis=1)[:, :k]
    chosen = ids[picks]  # (draws, k), -1 = abstention
    counts = (chosen[:, :, None] == np.arange(J)[None, None, :]).sum(axis=1)  # (draws, J)
    top = counts.max(axis=1)
    tied = (counts == top[:, None]) & (top[:, None] > 0)
    n_tied = tied.sum(axis=1)
    score = np.where(n_tied > 0, (tied * np.asarray(values)).sum(axis=1) / np.maximum(n_tied, 1), 0.0)
    return float(score.mean())


def majority_at_k(
    answers_per_problem: Sequence[Sequence[str | None]],
    correct_per_problem: Sequence[Sequence[bool]],
    k: int,
    rng_seed: int = 0,
    draws: int = 2000,
    method: str = "auto",
) -> float:
    """Expected majority-vote accuracy with k samples drawn without replacement from each pool.

    For each problem, k of its n pooled samples are drawn uniformly without replacement; the most
    frequent answer (answers equal as strings: pass class labels to use a task's equivalence, as
    :func:`summarize` does) is chosen; a tie is broken uniformly at random (so
    it scores the mean correctness of the tied answers); ``None`` answers abstain, and a draw of
    only abstentions scores 0. The result is the mean over problems of that expectation — the
    majority@k curve of Wang et al. (2023, self-consistency) and Brown et al. (2024), estimated
    without the variance of one arbitrary k-subset.

    ``method="auto"`` computes it exactly (hypergeometric dynamic programme) when that is cheap and
    otherwise by ``draws`` seeded Monte Carlo draws per problem (seeded from ``(rng_seed, problem
    index)``); ``"exact"`` / ``"monte-carlo"`` force one.
    """
    if len(answers_per_problem) != len(correct_per_problem):
        raise ConfigError("correct_per_problem", "must have one list per problem of answers_per_problem")
    if not answers_per_problem:
        raise ConfigError("answers_per_problem", "no problems")
    if method not in ("auto", "exact", "monte-carlo"):
        raise ConfigError("method", f"unknown {method!r}", "auto, exact, monte-carlo")
    if draws < 1:
        raise ConfigError("draws", f"must be >= 1, got {draws!r}")
    scores = []
    for i, (answers, correct) in enumerate(zip(answers_per_problem, correct_per_problem)):
        if len(answers) != len(correct):
            raise ConfigError("correct_per_problem", f"problem {i}: {len(correct)} flags for {len(answers)} answers")
        if not (1 <= k <= len(answers)):
            raise ConfigError("k", f"must be between 1 and the pool size of problem {i} ({len(answers)}), got {k!r}")
        counts, values, none, ids = _answer_classes(answers, correct)
        exact = method == "exact" or (
            method == "auto"
            and math.comb(len(answers), k) < 1e280
            and _majority_exact_ops(counts, values, k) <= _EXACT_OPS_LIMIT
        )
        if exact:
            scores.append(_majority_exact(counts, values, none, k))
        else:
            rng = np.random.default_rng([rng_seed, i])
            scores.append(_majority_monte_carlo(ids, values, k, rng, draws))
    return float(np.mean(scores))


# --------------------------------------------------------------------------------------------
# Paired comparison of two strategies on the same problems
# --------------------------------------------------------------------------------------------


def _binom_two_sided_equal(d: int, x: int) -> float:
    """Exact two-sided p-value of x successes in d fair coin flips (``scipy.stats.binomtest``)."""
    if d == 0:
        return 1.0
    from scipy import stats  # noqa: PLC0415

    return float(stats.binomtest(x, d, 0.5).pvalue)


def _newcombe_paired(a: np.ndarray, b: np.ndarray, conf: float, binary: bool) -> tuple[float, float]:
    """Newcombe (1998) method 10 interval for mean(a) - mean(b) on paired data.

    Combines the Wilson intervals [l1, u1], [l2, u2] of the two means with their correlation φ
    ("square and add", MOVER). For 0/1 data φ is Newcombe's continuity-corrected phi coefficient of
    the 2×2 table; for fractional scores it is the Pearson correlation of the paired scores (the
    MOVER of Zou & Donner 2008 with Wilson limits).
    """
    n = len(a)
    p1, p2 = float(a.mean()), float(b.mean())
    l1, u1 = wilson_interval(p1 * n, n, conf)
    l2, u2 = wilson_interval(p2 * n, n, conf)
    if binary:
        both = float(np.sum((a == 1) & (b == 1)))
        only_a = float(np.sum((a == 1) & (b == 0)))
        only_b = float(np.sum((a == 0) & (b == 1)))
        neither = float(np.sum((a == 0) & (b == 0)))
        margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
        cross = both * neither - only_a * only_b
        if margins == 0:
            phi = 0.0
        elif cross > n / 2.0:
            phi = (cross - n / 2.0) / math.sqrt(margins)
        elif cross >= 0:
            phi = 0.0
        else:
            phi = cross / math.sqrt(margins)
    else:
        sa, sb = float(a.std()), float(b.std())
        phi = float(np.mean((a - p1) * (b - p2)) / (sa * sb)) if sa > 0 and sb > 0 else 0.0
    d = p1 - p2
    lower = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return (max(-1.0, lower), min(1.0, upper))


def _sign_flip_p(diffs: np.ndarray, seed: int, draws: int) -> tuple[float, str]:
    """Two-sided sign-flip permutation p-value for H0: paired differences symmetric about 0.

    ``scipy.stats.permutation_test`` on one sample flips the sign of each difference; the
    statistic is ``|sum|`` (so "greater" is the two-sided test). Exact over all 2^m patterns for
    up to 16 non-zero differences, else ``draws`` seeded Monte Carlo patterns with the
    ``(count + 1) / (draws + 1)`` p-value (Phipson & Smyth 2010)."""
    from scipy import stats  # noqa: PLC0415

    nz = diffs[np.abs(diffs) > 1e-12]
    m = len(nz)
    if m <= 1:  # both sign patterns of one difference give the same |sum| (scipy needs two)
        return 1.0, "sign-flip-exact"
    exact = m <= 16
    res = stats.permutation_test(
        (nz,), lambda x, axis: np.abs(np.sum(x, axis=axis)), permutation_type="samples", vectorized=True,
        n_resamples=np.inf if exact else draws, alternative="greater", rng=np.random.default_rng(seed),
    )
    return float(res.pvalue), ("sign-flip-exact" if exact else "sign-flip-monte-carlo")


def paired_comparison(
    a: Sequence[float], b: Sequence[float], conf: float = 0.95, *, seed: int = 0, draws: int = 20000
) -> dict[str, Any]:
    """Compare two strategies scored on the same problems (per-problem scores in [0, 1]).

    Returns ``n``, ``mean_a``, ``mean_b``, ``diff`` (mean a − mean b), ``interval`` [lo, hi] for
    the difference (Newcombe 1998 method 10; see :func:`_newcombe_paired`), ``p_value`` of the
    two-sided test of no difference, ``test`` naming it, ``wins`` / ``losses`` / ``ties`` (a > b,
    a < b, equal) and ``conf``.

    With 0/1 scores the test is the exact McNemar test: the binomial(wins + losses, 1/2) test on
    the discordant pairs. With fractional scores (e.g. means over seeds) it is the sign-flip
    permutation test of the paired differences, exact over all sign patterns for up to 16 non-zero
    differences and otherwise ``draws`` seeded Monte Carlo patterns. (For 0/1 data the two tests
    coincide.) No bootstrap or t-approximation is used.
    """
    _check_conf(conf)
    if len(a) != len(b):
        raise ConfigError("b", f"has {len(b)} scores for {len(a)} in a; pair them by problem")
    if len(a) == 0:
        raise ConfigError("a", "no paired problems to compare")
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if np.any((xa < 0) | (xa > 1) | (xb < 0) | (xb > 1)):
        raise ConfigError("scores", "per-problem scores must lie in [0, 1]")
    binary = bool(np.all((xa == 0) | (xa == 1)) and np.all((xb == 0) | (xb == 1)))
    wins, losses = int(np.sum(xa > xb)), int(np.sum(xa < xb))
    if binary:
        p, test = _binom_two_sided_equal(wins + losses, wins), "mcnemar-exact"
    else:
        p, test = _sign_flip_p(xa - xb, seed, draws)
    lo, hi = _newcombe_paired(xa, xb, conf, binary)
    return {
        "n": len(xa),
        "mean_a": float(xa.mean()),
        "mean_b": float(xb.mean()),
        "diff": float(xa.mean() - xb.mean()),
        "interval": [lo, hi],
        "conf": conf,
        "p_value": p,
        "test": test,
        "wins": wins,
        "losses": losses,
        "ties": len(xa) - wins - losses,
    }


# --------------------------------------------------------------------------------------------
# Imperfect verifiers
# --------------------------------------------------------------------------------------------


def verifier_ceiling(fpr: float, tpr: float, base_accuracy: float) -> float:
    """Accuracy that resampling until an imperfect verifier accepts converges to.

    Each sample is correct with probability p (``base_accuracy``); the verifier accepts a correct
    sample with probability ``tpr`` and an incorrect one with probability ``fpr``. Resampling until
    acceptance returns a sample drawn from the accepted ones, which is correct with probability

        p·tpr / (p·tpr + (1 − p)·fpr)

    whatever the budget: resampling cannot lower the false-positive rate (Stroebl, Kapoor &
    Narayanan 2024, "Inference Scaling fLaws: The Limits of LLM Resampling with Imperfect
    Verifiers", arXiv:2411.17501). If the verifier accepts nothing (both terms 0) the loop never
    stops and the ceiling is 0.
    """
    for name, v in (("fpr", fpr), ("tpr", tpr), ("base_accuracy", base_accuracy)):
        if not (0.0 <= v <= 1.0):
            raise ConfigError(name, f"must be in [0, 1], got {v!r}")
    good = base_accuracy * tpr
    accepted = good + (1.0 - base_accuracy) * fpr
    return good / accepted if accepted > 0 else 0.0


def verifier_false_positive_rate(
    passed_weak: Sequence[bool],
    passed_full: Sequence[bool],
    problem_ids: Sequence[str] | None = None,
    conf: float = 0.95,
) -> dict[str, Any]:
    """False-positive rate of a weak verifier (e.g. a subset of the unit tests) against the full one.

    One entry per sample; the full verifier is taken as the truth. Returns ``fpr`` = P(weak passes
    | full fails), ``tpr`` = P(weak passes | full passes), ``base_accuracy`` = P(full passes),
    ``precision`` = P(full passes | weak passes), Wilson intervals ``fpr_interval`` /
    ``tpr_interval``, the counts, and ``ceiling`` = :func:`verifier_ceiling` of the pooled rates.
    With ``problem_ids`` it also returns ``ceiling_per_problem``: the mean over problems of each
    problem's own ceiling (rates estimated within the problem), which is what resampling each
    problem until acceptance converges to when difficulty varies across problems. Rates whose
    condition never occurs are ``None``.
    """
    if len(passed_weak) != len(passed_full):
        raise ConfigError("passed_full", f"has {len(passed_full)} entries for {len(passed_weak)} in passed_weak")
    if not passed_weak:
        raise ConfigError("passed_weak", "no samples")
    weak = np.asarray(passed_weak, dtype=bool)
    full = np.asarray(passed_full, dtype=bool)
    tp, fp = int(np.sum(weak & full)), int(np.sum(weak & ~full))
    pos, neg = int(full.sum()), int((~full).sum())
    fpr = fp / neg if neg else None
    tpr = tp / pos if pos else None
    base = pos / len(full)
    out: dict[str, Any] = {
        "samples": len(full),
        "true_positives": tp,
        "false_positives": fp,
        "full_passes": pos,
        "full_fails": neg,
        "fpr": fpr,
        "tpr": tpr,
        "fpr_interval": list(wilson_interval(fp, neg, conf)) if neg else None,
        "tpr_interval": list(wilson_interval(tp, pos, conf)) if pos else None,
        "base_accuracy": base,
        "precision": tp / (tp + fp) if tp + fp else None,
        "ceiling": verifier_ceiling(fpr or 0.0, tpr or 0.0, base),
    }
    if problem_ids is not None:
        if len(problem_ids) != len(weak):
            raise ConfigError("problem_ids", f"has {len(problem_ids)} entries for {len(weak)} samples")
        per = []
        for pid in dict.fromkeys(problem_ids):
            mask = np.array([p == pid for p in problem_ids])
            acc_good = float(np.sum(weak[mask] & full[mask]))
            acc_all = float(np.sum(weak[mask]))
            per.append(acc_good / acc_all if acc_all else 0.0)
        out["ceiling_per_problem"] = float(np.mean(per))
        out["problems"] = len(per)
    return out


# --------------------------------------------------------------------------------------------
# What a verifier can buy: its rates, the fLaws ceiling and optimal N, abstention
# --------------------------------------------------------------------------------------------


def verifier_rates(
    samples: Sequence[Mapping[str, Any]], scorer: str, accept: float = 0.5, conf: float = 0.95
) -> dict[str, Any] | None:
    """A scorer's true- and false-positive rates against the references, over pooled samples.

    A sample is *accepted* when the scorer's probability ``exp(score)`` is above ``accept``
    (default 0.5: the scorer leans to "correct"; for ``arith-check`` only a solution whose every
    computation checks out, for ``self-eval`` P(Yes) > 0.5). Rows are ``{"problem_id",
    "correct", "scores": {scorer: log-score}}``; rows without a score by ``scorer`` are skipped
    (``None`` when none has one). Returns :func:`verifier_false_positive_rate` of (accepted,
    correct) — TPR and FPR with Wilson intervals, precision, base accuracy, the pooled and
    per-problem ceilings — plus Beta-binomial intervals ``tpr_beta`` / ``fpr_beta``, ``scorer``
    and ``accept``.
    """
    if not (0.0 <= accept < 1.0):
        raise ConfigError("accept", f"must be in [0, 1), got {accept!r}")
    rows = [r for r in samples if scorer in (r.get("scores") or {}) and r["scores"][scorer] is not None]
    if not rows:
        return None
    accepted = [math.exp(float(r["scores"][scorer])) > accept for r in rows]
    correct = [bool(r["correct"]) for r in rows]
    out = verifier_false_positive_rate(accepted, correct, [str(r["problem_id"]) for r in rows], conf)
    out["tpr_beta"] = list(beta_interval(out["true_positives"], out["full_passes"], conf)) if out["full_passes"] else None
    out["fpr_beta"] = list(beta_interval(out["false_positives"], out["full_fails"], conf)) if out["full_fails"] else None
    out["accepted"] = int(sum(accepted))
    out.update(scorer=scorer, accept=accept)
    return out


def flaws_prediction(
    base: Sequence[float],
    tpr: float | Sequence[float],
    fpr: float | Sequence[float],
    ns: Sequence[int],
    cost: float = 1.0,
) -> dict[str, Any]:
    """Best-of-N with an imperfect binary verifier, predicted from its rates (Stroebl, Kapoor &
    Narayanan 2024, "Inference Scaling fLaws", arXiv:2411.17501).

    Problem ``i``: a sample is correct with probability ``base[i]``; the verifier accepts a correct
    one with probability ``tpr`` and a wrong one with ``fpr`` (one value for every problem, or one
    per problem). A sample is accepted with ``a = p·tpr + (1-p)·fpr``; an accepted sample is right
    with ``c = p·tpr / a`` (the fLaws ceiling of the problem, :func:`verifier_ceiling`), a rejected
    one with ``q = p·(1-tpr) / (1-a)``. Drawing N samples and answering with an accepted one if
    there is any, else with a rejected one (best-of-N on a pass/fail score):

        accuracy(N) = c·(1 - (1-a)^N) + q·(1-a)^N

    which moves from ``p`` at N = 1 to ``c`` as N grows — up when the verifier helps, down on a
    problem where it prefers wrong answers. ``utility(N)`` is the paper's variant with abstention:
    answer only an accepted sample (+1 if right, ``-cost`` if wrong), else abstain (0):
    ``(1 - (1-a)^N)·(c - cost·(1-c))``; averaged over problems it can peak at a finite N.

    Returns ``ns``, ``accuracy`` and ``utility`` (means over problems), ``ceiling`` (the limit of
    ``accuracy``), ``optimal_n`` (the smallest N in ``ns`` whose predicted accuracy is within
    0.001 of the largest; the curve is flat past it) and ``optimal_n_utility`` (the N of highest
    utility, smallest on ties).
    """
    if not base:
        raise ConfigError("base", "no problems")
    if not ns or any(int(n) < 1 for n in ns):
        raise ConfigError("ns", f"got {list(ns)!r}", "sample counts >= 1")
    p = np.asarray(base, dtype=float)
    t = np.broadcast_to(np.asarray(tpr, dtype=float), p.shape)
    f = np.broadcast_to(np.asarray(fpr, dtype=float), p.shape)
    for name, v in (("base", p), ("tpr", t), ("fpr", f)):
        if np.any((v < 0) | (v > 1)) or np.any(np.isnan(v)):
            raise ConfigError(name, "must be probabilities in [0, 1]")
    a = p * t + (1 - p) * f
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(a > 0, p * t / np.where(a > 0, a, 1), p)
        q = np.where(a < 1, p * (1 - t) / np.where(a < 1, 1 - a, 1), c)
    acc, util = [], []
    for n in ns:
        miss = (1 - a) ** int(n)
        acc.append(float(np.mean(c * (1 - miss) + q * miss)))
        util.append(float(np.mean((1 - miss) * (c - cost * (1 - c)))))
    ceiling = float(np.mean(np.where(a > 0, c, p)))
    best = max(acc)
    opt = next(int(n) for n, v in zip(ns, acc) if v >= best - 1e-3)
    opt_u = int(ns[int(np.argmax(util))])
    return {"ns": [int(n) for n in ns], "accuracy": acc, "utility": util, "ceiling": ceiling, "optimal_n": opt,
            "optimal_n_utility": opt_u, "cost": cost, "problems": int(p.size)}


def chosen_with_confidence(
    pools: Mapping[str, Sequence[Mapping[str, Any]]], rule: str, scorer: str | None = None
) -> list[tuple[float, bool]]:
    """Per problem, the answer a strategy chooses from the whole pool and how sure it is:
    ``rule="vote"`` — the largest answer class (ties: the class seen first) and its vote share;
    ``rule="score"`` — the highest-scored sample (by ``scorer``; ties: the higher log-prob per
    token) and its probability ``exp(score)``. Pools with no answer (vote) or no score give
    confidence 0 and count as wrong. Returns ``(confidence, correct)`` per problem."""
    if rule not in ("vote", "score"):
        raise ConfigError("rule", f"got {rule!r}", "vote or score")
    if rule == "score" and not scorer:
        raise ConfigError("scorer", "missing", "a scorer name for rule=score")
    out = []
    for rows in pools.values():
        if rule == "vote":
            labels = _answer_classes_of_pool(rows)
            counts: dict[str, int] = {}
            for lab in labels:
                if lab is not None:
                    counts[lab] = counts.get(lab, 0) + 1
            if not counts:
                out.append((0.0, False))
                continue
            top = max(counts, key=lambda k: (counts[k], -labels.index(k)))
            ok = any(bool(r["correct"]) for r, lab in zip(rows, labels) if lab == top)
            out.append((counts[top] / len(rows), ok))
        else:
            scored = [r for r in rows if (r.get("scores") or {}).get(scorer) is not None]
            if not scored:
                out.append((0.0, False))
                continue

            def key(r: Mapping[str, Any]) -> tuple[float, float]:
                toks = max(int(r.get("generated_tokens") or 1), 1)
                return float(r["scores"][scorer]), float(r.get("logprob") or 0.0) / toks

            best = max(scored, key=key)
            out.append((math.exp(float(best["scores"][scorer])), bool(best["correct"])))
    return out


def abstention_curve(chosen: Sequence[tuple[float, bool]], conf: float = 0.95) -> list[dict[str, Any]]:
    """Accuracy against abstention: answer only when the chosen answer's confidence (vote share
    or score probability) is at least a threshold. One point per distinct confidence, from the
    strictest threshold to answering everything: ``threshold``, ``answered`` (problems),
    ``answer_rate`` (answered / all), ``accuracy`` on the answered ones with its Wilson
    ``interval``, and ``correct_overall`` (right answers / all problems, abstentions counting as
    not right)."""
    n = len(chosen)
    if n == 0:
        return []
    points = []
    for t in sorted({c for c, _ in chosen}, reverse=True):
        answered = [ok for c, ok in chosen if c >= t]
        k = sum(answered)
        m = len(answered)
        points.append({"threshold": float(t), "answered": m, "answer_rate": m / n, "accuracy": k / m,
                       "interval": list(wilson_interval(k, m, conf)), "correct_overall": k / n})
    return points


def pareto_frontier(cells: Sequence[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """The (strategy, budget) cells no other cell beats on both cost and accuracy: sorted by mean
    generated tokens (ties: higher accuracy first), a cell is on the frontier when its accuracy
    is above every cheaper cell's."""
    ordered = sorted((c for c in cells if math.isfinite(float(c.get("accuracy", float("nan"))))),
                     key=lambda c: (float(c["generated_tokens"]), -float(c["accuracy"])))
    out, best = [], -math.inf
    for c in ordered:
        if float(c["accuracy"]) > best:
            out.append((str(c["strategy"]), int(c["budget"])))
            best = float(c["accuracy"])
    return out


# --------------------------------------------------------------------------------------------
# Reusable holdout
# --------------------------------------------------------------------------------------------


class HoldoutExhausted(InfscaleError):
    """Thresholdout's overfitting budget is spent: the holdout can no longer be consulted safely."""


def _mean_score(v: float | Sequence[float]) -> float:
    if isinstance(v, (int, float, np.floating, np.integer)):
        return float(v)
    arr = np.asarray(v, dtype=float)
    if arr.size == 0:
        raise ConfigError("scores", "an empty score list has no mean")
    return float(arr.mean())


class Thresholdout:
    """The reusable holdout of Dwork et al. (2015, "The reusable holdout: Preserving validity in
    adaptive data analysis", Science 349(6248):636-638).

    ``train_scores`` and ``holdout_scores`` map a query name (e.g. a ``"strategy@budget"`` cell) to
    its score on the training and holdout problem splits — a number, or per-problem scores whose
    mean is taken. :meth:`query` answers with the training value unless it differs from the holdout
    value by more than a noisy threshold; then it answers the holdout value plus Laplace noise and
    spends one unit of ``budget``. The noise scales follow the paper's algorithm: the threshold is
    ``T + γ`` with γ ~ Lap(2σ) (redrawn after each overfitting detection), each comparison adds
    η ~ Lap(4σ), and a holdout answer carries ξ ~ Lap(σ). When the budget is spent, :meth:`query`
    raises :class:`HoldoutExhausted`. Randomness comes only from ``seed``.
    """

    def __init__(
        self,
        train_scores: Mapping[str, float | Sequence[float]],
        holdout_scores: Mapping[str, float | Sequence[float]],
        threshold: float = 0.04,
        sigma: float = 0.01,
        budget: int = 100,
        seed: int = 0,
    ):
        if threshold < 0:
            raise ConfigError("threshold", f"must be >= 0, got {threshold!r}")
        if sigma <= 0:
            raise ConfigError("sigma", f"must be > 0, got {sigma!r}")
        if budget < 0:
            raise ConfigError("budget", f"must be >= 0, got {budget!r}")
        self._train = {str(k): _mean_score(v) for k, v in train_scores.items()}
        self._holdout = {str(k): _mean_score(v) for k, v in holdout_scores.items()}
        self.threshold = float(threshold)
        self.sigma = float(sigma)
        self.budget = int(budget)
        self._remaining = int(budget)
        self._rng = np.random.default_rng(seed)
        self._noisy_threshold = self.threshold + self._rng.laplace(0.0, 2.0 * self.sigma)
        self.log: list[dict[str, Any]] = []

    @property
    def remaining(self) -> int:
        """Overfitting detections still allowed before the holdout is closed."""
        return self._remaining

    def query(self, name: str) -> float:
        """The Thresholdout answer for ``name`` (training value, or noisy holdout value)."""
        if name not in self._train or name not in self._holdout:
            known = ", ".join(sorted(set(self._train) & set(self._holdout))[:10])
            raise ConfigError("name", f"no train and holdout score for {name!r}", known or None)
        if self._remaining < 1:
            raise HoldoutExhausted(f"Thresholdout budget of {self.budget} overfitting detections is spent")
        train, holdout = self._train[name], self._holdout[name]
        eta = self._rng.laplace(0.0, 4.0 * self.sigma)
        if abs(holdout - train) > self._noisy_threshold + eta:
            xi = self._rng.laplace(0.0, self.sigma)
            self._noisy_threshold = self.threshold + self._rng.laplace(0.0, 2.0 * self.sigma)
            self._remaining -= 1
            value, used = holdout + xi, True
        else:
            value, used = train, False
        self.log.append({"name": name, "value": value, "holdout_used": used})
        return value

    def best(self, names: Sequence[str]) -> tuple[str, dict[str, float]]:
        """Query every name once and return the one with the highest answer, with all answers."""
        if not names:
            raise ConfigError("names", "nothing to choose from")
        answers = {n: self.query(n) for n in names}
        return max(answers, key=answers.__getitem__), answers


def holdout_split(problem_ids: Sequence[str], fraction: float = 0.5, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split problem ids into (train, holdout) by a seeded hash of each id: stable under reordering."""
    if not (0.0 < fraction < 1.0):
        raise ConfigError("fraction", f"must be strictly between 0 and 1, got {fraction!r}")
    train, holdout = [], []
    for pid in dict.fromkeys(str(p) for p in problem_ids):
        h = hashlib.blake2b(f"{seed}\x1f{pid}".encode(), digest_size=8).digest()
        (holdout if int.from_bytes(h, "little") / 2.0**64 < fraction else train).append(pid)
    return train, holdout


# --------------------------------------------------------------------------------------------
# Costs and the run summary
# --------------------------------------------------------------------------------------------


def _per_problem_means(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    """Average each key over the rows of each problem (rows without problem_id count as their own)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(str(r.get("problem_id", f"#row{i}")), []).append(r)
    return {
        pid: {k: float(np.mean([float(r.get(k) or 0.0) for r in rs])) for k in keys}
        for pid, rs in groups.items()
    }


def cost_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean cost per problem: prompt and generated tokens, model calls and seconds.

    Rows of the same ``problem_id`` (several seeds) are averaged first, then averaged over
    problems; missing values count as 0. Returns the four means and ``problems``.
    """
    per = _per_problem_means(rows, COST_KEYS)
    out: dict[str, Any] = {k: (float(np.mean([p[k] for p in per.values()])) if per else 0.0) for k in COST_KEYS}
    out["problems"] = len(per)
    return out


def summarize(
    results: Sequence[Mapping[str, Any]],
    samples: Sequence[Mapping[str, Any]] | None = None,
    conf: float = 0.95,
    *,
    baseline: str | None = None,
) -> dict[str, Any]:
    """Summarize a grid run for reports.

    ``results``: one row per (strategy, budget, seed, problem) with ``correct`` in [0, 1] and the
    cost keys. ``samples``: the pooled samples, one row per sample with ``problem_id`` and
    ``correct`` (and optionally ``answer``, which adds the majority@k curve).

    Returns ``{"cells", "coverage", "comparisons", "matched", "frontier", "verifiers", "abstention",
    "conf"}``:

    * ``cells`` — per strategy × budget (sorted by strategy, then budget): ``problems``, ``seeds``
      (distinct counts), ``accuracy`` (mean over problems of the mean over seeds), ``wilson`` and
      ``beta`` intervals on problems, and mean ``generated_tokens``, ``prompt_tokens``, ``calls``,
      ``seconds`` per problem.
    * ``coverage`` — ``ks``, ``coverage`` (mean unbiased pass@k), ``fit``
      (:func:`fit_coverage_power_law`), ``problems``, ``min_samples``, and ``majority`` (``ks``,
      ``accuracy``) when answers are present; ``None`` without samples.
    * ``comparisons`` — each other strategy against the baseline (``baseline`` if given and
      present, else the first strategy in sorted order), each at its largest budget (the most
      compute the run gave it; with equal budget lists that is the same budget), on their common
      problems: :func:`paired_comparison` of (strategy, baseline) plus ``strategy``, ``budget``,
      ``baseline``, ``baseline_budget``, and ``tokens`` / ``baseline_tokens``, the mean generated
      tokens per problem of each side on those problems (what each side's accuracy cost).
    * ``matched`` — the same paired comparison "at matched compute": every budget of every other
      strategy against the baseline budget whose mean generated tokens per problem are nearest
      (ties go to the smaller baseline budget), with the same keys. A width ``--n`` buys roughly
      equal compute across strategies, but not exactly; this pairs by what was actually spent.

    * ``frontier`` — :func:`pareto_frontier` of the cells, as ``[strategy, budget]`` pairs.
    * ``verifiers`` — per scorer with scores on pooled samples (``scores`` in the rows): its rates
      (:func:`verifier_rates`), the fLaws prediction (:func:`flaws_prediction`) with per-problem
      and with pooled rates at the run's best-of-N budgets, the measured ``best-of-n`` curve of
      that scorer and its best budget ``measured_optimal_n``.
    * ``abstention`` — accuracy-vs-abstention curves (:func:`abstention_curve`) of majority vote
      (vote share) and of best-of-N by every scorer (score probability) over the whole pool.

    ``samples`` rows may carry ``task`` (a task name, default ``math``): majority@k folds each
    pool's answers into classes by that task's answer equivalence — the same folding as the
    majority strategy (:func:`infscale.strategies.voting.fold`).
    """
    cells_rows: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for r in results:
        cells_rows.setdefault((str(r["strategy"]), int(r["budget"])), []).append(r)
    cells, scores, tokens = [], {}, {}
    for (strategy, budget) in sorted(cells_rows):
        rows = cells_rows[(strategy, budget)]
        per = _per_problem_means(rows, ("correct", *COST_KEYS))
        n = len(per)
        acc = float(np.mean([p["correct"] for p in per.values()]))
        scores[(strategy, budget)] = {pid: p["correct"] for pid, p in per.items()}
        tokens[(strategy, budget)] = {pid: p["generated_tokens"] for pid, p in per.items()}
        cell: dict[str, Any] = {
            "strategy": strategy,
            "budget": budget,
            "problems": n,
            "seeds": len({r.get("seed") for r in rows}),
            "accuracy": acc,
            "wilson": list(wilson_interval(acc * n, n, conf)),
            "beta": list(beta_interval(acc * n, n, conf)),
        }
        for k in COST_KEYS:
            cell[k] = float(np.mean([p[k] for p in per.values()]))
        cells.append(cell)

    strategies = sorted({s for s, _ in cells_rows})
    comparisons: list[dict[str, Any]] = []
    matched: list[dict[str, Any]] = []
    if strategies:
        base = baseline if baseline in strategies else strategies[0]
        base_budgets = sorted(b for s, b in cells_rows if s == base)
        cell_tokens = {(c["strategy"], c["budget"]): c["generated_tokens"] for c in cells}

        def pair(s: str, budget: int, base_budget: int) -> dict[str, Any] | None:
            sa, sb = scores[(s, budget)], scores[(base, base_budget)]
            pids = sorted(set(sa) & set(sb))
            if not pids:
                return None
            ta, tb = tokens[(s, budget)], tokens[(base, base_budget)]
            return {"strategy": s, "budget": budget, "baseline": base, "baseline_budget": base_budget,
                    "tokens": float(np.mean([ta[p] for p in pids])),
                    "baseline_tokens": float(np.mean([tb[p] for p in pids])),
                    **paired_comparison([sa[p] for p in pids], [sb[p] for p in pids], conf)}

        for s in (t for t in strategies if t != base):
            budgets = sorted(b for t, b in cells_rows if t == s)
            largest = pair(s, budgets[-1], base_budgets[-1])
            if largest is not None:
                comparisons.append(largest)
            for budget in budgets:
                # the baseline budget whose mean generated tokens per problem are nearest (ties: the cheaper)
                nearest = min(base_budgets, key=lambda b: (abs(cell_tokens[(base, b)] - cell_tokens[(s, budget)]), b))
                cmp = pair(s, budget, nearest)
                if cmp is not None:
                    matched.append(cmp)

    return {"cells": cells, "coverage": _coverage_summary(samples), "comparisons": comparisons,
            "matched": matched, "conf": conf, "frontier": [list(f) for f in pareto_frontier(cells)],
            "verifiers": _verifier_summary(samples, cells, conf), "abstention": _abstention_summary(samples, conf)}


def _pools(samples: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    pools: dict[str, list[Mapping[str, Any]]] = {}
    for r in samples:
        pools.setdefault(str(r["problem_id"]), []).append(r)
    return pools


def _best_of_n_scorer(label: str) -> str | None:
    """The scorer of a ``best-of-n[:scorer=X,...]`` spec label (its default if none is named)."""
    name, _, rest = label.partition(":")
    if name != "best-of-n":
        return None
    opts = dict(item.split("=", 1) for item in rest.split(",") if "=" in item)
    if opts.get("scorer"):
        return opts["scorer"]
    from ..strategies import get_strategy  # noqa: PLC0415

    return get_strategy("best-of-n").default_scorer


def _scorers_in(samples: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({k for r in samples for k, v in (r.get("scores") or {}).items() if v is not None})


def _verifier_summary(samples: Sequence[Mapping[str, Any]] | None, cells: Sequence[Mapping[str, Any]],
                      conf: float) -> list[dict[str, Any]]:
    """Per scorer that scored pooled samples: its rates (:func:`verifier_rates`), the fLaws
    prediction from them (:func:`flaws_prediction`, with each problem's own rates, and with the
    pooled rates) at the run's best-of-N budgets, and the measured best-of-N curve."""
    if not samples:
        return []
    out = []
    pools = _pools(samples)
    for scorer in _scorers_in(samples):
        rates = verifier_rates(samples, scorer, conf=conf)
        if rates is None:
            continue
        measured = sorted(({"budget": c["budget"], "accuracy": c["accuracy"], "wilson": c["wilson"],
                            "strategy": c["strategy"]}
                           for c in cells if _best_of_n_scorer(str(c["strategy"])) == scorer),
                          key=lambda m: m["budget"])
        ns = [m["budget"] for m in measured] or coverage_ks(min(len(p) for p in pools.values()))
        base, tprs, fprs = [], [], []
        for rows in pools.values():
            rows = [r for r in rows if (r.get("scores") or {}).get(scorer) is not None]
            if not rows:
                continue
            acc = [math.exp(float(r["scores"][scorer])) > rates["accept"] for r in rows]
            ok = [bool(r["correct"]) for r in rows]
            pos, neg = sum(ok), len(ok) - sum(ok)
            base.append(pos / len(ok))
            tprs.append(sum(a and o for a, o in zip(acc, ok)) / pos if pos else 0.0)
            fprs.append(sum(a and not o for a, o in zip(acc, ok)) / neg if neg else 0.0)
        entry: dict[str, Any] = {"scorer": scorer, "rates": rates, "measured": measured,
                                 "predicted": flaws_prediction(base, tprs, fprs, ns),
                                 "predicted_pooled": flaws_prediction(base, rates["tpr"] or 0.0, rates["fpr"] or 0.0, ns)}
        if measured:
            top = max(m["accuracy"] for m in measured)
            entry["measured_optimal_n"] = next(m["budget"] for m in measured if m["accuracy"] >= top)
        else:
            entry["measured_optimal_n"] = None
        out.append(entry)
    return out


def _abstention_summary(samples: Sequence[Mapping[str, Any]] | None, conf: float) -> list[dict[str, Any]]:
    """Accuracy-vs-abstention curves over the whole pool: majority vote by vote share, and
    best-of-N by score probability for every scorer of the pool."""
    if not samples:
        return []
    pools = _pools(samples)
    out = []
    if any("answer" in r for r in samples):
        out.append({"strategy": "majority", "confidence": "vote share",
                    "points": abstention_curve(chosen_with_confidence(pools, "vote"), conf)})
    for scorer in _scorers_in(samples):
        out.append({"strategy": f"best-of-n:scorer={scorer}", "confidence": f"{scorer} probability",
                    "points": abstention_curve(chosen_with_confidence(pools, "score", scorer), conf)})
    return out


def _coverage_summary(samples: Sequence[Mapping[str, Any]] | None) -> dict[str, Any] | None:
    if not samples:
        return None
    pools: dict[str, list[Mapping[str, Any]]] = {}
    for r in samples:
        pools.setdefault(str(r["problem_id"]), []).append(r)
    n_min = min(len(p) for p in pools.values())
    ks = coverage_ks(n_min)
    per_problem = [(len(p), sum(bool(r["correct"]) for r in p)) for p in pools.values()]
    cov = coverage_curve(per_problem, ks)
    out: dict[str, Any] = {
        "ks": ks,
        "coverage": cov,
        "fit": fit_coverage_power_law(ks, cov),
        "problems": len(pools),
        "min_samples": n_min,
        "majority": None,
    }
    if any("answer" in r for r in samples):
        answers = [_answer_classes_of_pool(p) for p in pools.values()]
        correct = [[bool(r["correct"]) for r in p] for p in pools.values()]
        out["majority"] = {"ks": ks, "accuracy": [majority_at_k(answers, correct, k) for k in ks]}
    return out


def _answer_classes_of_pool(rows: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """Each sample's answer class (its representative answer, ``None`` for no answer): the pool
    folded by its task's equivalence exactly as the majority strategy folds its samples."""
    from ..tasks import get_task  # noqa: PLC0415
    from ..strategies.voting import fold  # noqa: PLC0415
    from ..types import Candidate  # noqa: PLC0415

    task = get_task(str(rows[0].get("task") or "math"))
    candidates = [Candidate(text="", answer=None if r.get("answer") is None else str(r["answer"]), index=i)
                  for i, r in enumerate(rows)]
    label: dict[int, str] = {}
    for cls in fold(candidates, [0.0] * len(candidates), task):
        for member in cls.members:
            label[member.index] = cls.answer
    return [label.get(i) for i in range(len(rows))]
