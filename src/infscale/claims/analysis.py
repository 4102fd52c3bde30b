"""The analysis of each claim: pure functions over stored results and pool samples.

Every claim is judged by a few **checks** written down before any run (the ``rule`` of each
check says what holds and what fails). A check's estimate comes with a 95% interval: paired
differences on the same problems use :func:`~infscale.evaluation.metrics.paired_comparison`
(exact McNemar / sign-flip tests, Newcombe's interval); a mean over problems uses a percentile
bootstrap over problems (``scipy.stats.bootstrap``, seeded). A check

* **holds** when its interval lies on the claim's side of the threshold,
* **fails** when its interval lies on the other side (the data contradict the claim),
* is **unclear** otherwise (the interval covers both: too few problems to tell).

The verdict of a claim is ``reproduced`` when every decisive check holds, ``not reproduced`` when
any decisive check fails, and ``inconclusive`` otherwise. Context checks are reported beside but
do not decide.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..evaluation.metrics import (
    coverage_curve,
    fit_coverage_power_law,
    flaws_prediction,
    paired_comparison,
    pass_at_k,
    power_law_coverage,
    summarize,
)

__all__ = ["Check", "Analysis", "per_problem", "mean_interval", "diff_check", "verdict_of", "analyse_monkeys",
           "analyse_flaws", "analyse_bom", "analyse_rpc", "analyse_adaptive", "analyse_search", "analyse_rebase",
           "analyse_optimal"]

CONF = 0.95
MARGIN = 0.05  # non-inferiority margin: "at least as good" holds when the drop is surely below 5 points


@dataclass
class Check:
    """One pre-registered test: ``estimate`` with ``interval``, ``status`` holds/fails/unclear."""

    name: str
    rule: str
    estimate: float | None
    interval: list[float] | None
    status: str
    decisive: bool = True
    detail: str = ""


@dataclass
class Series:
    """One line of a claim's figure."""

    label: str
    x: list[float]
    y: list[float]
    lo: list[float] | None = None
    hi: list[float] | None = None
    style: str = "line"  # line, dashed, hline, points


@dataclass
class Analysis:
    verdict: str
    checks: list[Check]
    headers: list[str]
    rows: list[list[str]]
    series: list[Series] = field(default_factory=list)
    xlabel: str = ""
    ylabel: str = "Accuracy"
    logx: bool = True
    notes: list[str] = field(default_factory=list)


# -------------------------------------------------------------------------------------------
# Helpers


def per_problem(results: Sequence[Mapping[str, Any]], strategy: str, budget: int, key: str = "correct"
                ) -> dict[str, float]:
    """``problem_id -> value`` (mean over seeds) of one strategy × budget cell."""
    acc: dict[str, list[float]] = {}
    for r in results:
        if r["strategy"] == strategy and int(r["budget"]) == int(budget):
            acc.setdefault(str(r["problem_id"]), []).append(float(r[key]))
    return {p: sum(v) / len(v) for p, v in acc.items()}


def budgets_of(results: Sequence[Mapping[str, Any]], strategy: str) -> list[int]:
    return sorted({int(r["budget"]) for r in results if r["strategy"] == strategy})


def mean_interval(values: Sequence[float], seed: int = 0) -> tuple[float, list[float]]:
    """Mean and a 95% percentile-bootstrap interval over the values (one per problem)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return float("nan"), [float("nan"), float("nan")]
    if v.size == 1 or np.all(v == v[0]):
        return float(v.mean()), [float(v.mean()), float(v.mean())]
    from scipy.stats import bootstrap  # noqa: PLC0415

    res = bootstrap((v,), np.mean, confidence_level=CONF, n_resamples=4000, method="percentile",
                    random_state=np.random.default_rng(seed))
    return float(v.mean()), [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def _status(interval: Sequence[float], above: float, fail_below: float | None = None) -> str:
    """holds if the interval is above ``above``; fails if it is entirely below ``fail_below``
    (default ``above``); unclear otherwise."""
    lo, hi = interval
    if lo > above:
        return "holds"
    if hi < (above if fail_below is None else fail_below):
        return "fails"
    return "unclear"


def diff_check(name: str, a: Mapping[str, float], b: Mapping[str, float], rule: str, *, margin: float = 0.0,
               decisive: bool = True) -> Check:
    """Paired check that ``a - b`` is above ``-margin`` on the common problems: holds when the
    interval's lower end is above ``-margin``, fails when its upper end is below ``-margin`` when
    ``margin > 0`` (surely worse by more than the margin) or below 0 when ``margin == 0``."""
    pids = sorted(set(a) & set(b))
    if not pids:
        return Check(name, rule, None, None, "unclear", decisive, "no common problems")
    cmp = paired_comparison([a[p] for p in pids], [b[p] for p in pids], CONF)
    lo, hi = cmp["interval"]
    if lo > -margin:
        status = "holds"
    elif hi < -margin or (margin == 0.0 and hi < 0):
        status = "fails"
    else:
        status = "unclear"
    return Check(name, rule, cmp["diff"], [lo, hi], status, decisive,
                 f"{len(pids)} problems, W/L/T {cmp['wins']}/{cmp['losses']}/{cmp['ties']}, p = {cmp['p_value']:.3g}")


def verdict_of(checks: Sequence[Check]) -> str:
    decisive = [c for c in checks if c.decisive]
    if any(c.status == "fails" for c in decisive):
        return "not reproduced"
    if decisive and all(c.status == "holds" for c in decisive):
        return "reproduced"
    return "inconclusive"


def _f(v: float | None, d: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{d}f}"


def _iv(iv: Sequence[float] | None) -> str:
    return "-" if not iv else f"[{iv[0]:.3f}, {iv[1]:.3f}]"


def _cell(results, strategy: str, budget: int) -> tuple[float, list[float], float]:
    vals = per_problem(results, strategy, budget)
    toks = per_problem(results, strategy, budget, "generated_tokens")
    m, iv = mean_interval(list(vals.values()))
    return m, iv, float(np.mean(list(toks.values()))) if toks else float("nan")


def _pools(samples: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    pools: dict[str, list[Mapping[str, Any]]] = {}
    for s in samples:
        pools.setdefault(str(s["problem_id"]), []).append(s)
    return pools


# -------------------------------------------------------------------------------------------
# monkeys: coverage grows log-linearly; the power law predicts held-out k; votes plateau below


MAJORITY = "majority"
BON = "best-of-n:scorer=arith-check"
BOM = "bom:scorer=arith-check"
WEIGHTED = "weighted:by=prob"


def analyse_monkeys(results: Sequence[Mapping[str, Any]], samples: Sequence[Mapping[str, Any]]) -> Analysis:
    pools = _pools(samples)
    n_min = min(len(p) for p in pools.values())
    ks = [k for k in (2**i for i in range(20)) if k <= n_min]
    K = ks[-1]
    per = {pid: [pass_at_k(len(rows), sum(bool(r["correct"]) for r in rows), k) for k in ks]
           for pid, rows in pools.items()}
    cov = coverage_curve([(len(r), sum(bool(x["correct"]) for x in r)) for r in pools.values()], ks)
    cis = [mean_interval([v[i] for v in per.values()], seed=i)[1] for i in range(len(ks))]
    # fit on the smaller k, predict the held-out larger ones
    train = [k for k in ks if k <= max(ks[0], K // 4)]
    held = [k for k in ks if k not in train]
    fit = fit_coverage_power_law(train, cov[: len(train)])
    checks = []
    grow = {pid: v[-1] - v[0] for pid, v in per.items()}
    m, iv = mean_interval(list(grow.values()))
    checks.append(Check(f"coverage grows from k=1 to k={K}", "holds if the 95% interval of coverage@K - "
                        "coverage@1 is above 0; fails if it is below 0", m, iv, _status(iv, 0.0)))
    if fit.get("a") is not None and held:
        pred = power_law_coverage(held, fit["a"], fit["b"])
        inside = [cis[ks.index(k)][0] <= p <= cis[ks.index(k)][1] for k, p in zip(held, pred)]
        worst = max(abs(p - cov[ks.index(k)]) for k, p in zip(held, pred))
        checks.append(Check(f"power law fitted on k <= {train[-1]} predicts held-out k = {', '.join(map(str, held))}",
                            "holds if every held-out prediction lies in the 95% bootstrap interval of the measured "
                            "coverage; fails otherwise", worst, None, "holds" if all(inside) else "fails",
                            detail=f"fit a = {fit['a']:.3f}, b = {fit['b']:.3f}; largest error {worst:.3f}"))
    else:
        checks.append(Check("power law predicts held-out k", "needs a fit on the smaller k", None, None, "unclear",
                            detail=str(fit.get("reason", "too few k"))))
    cov_k = {pid: v[-1] for pid, v in per.items()}
    for name, strat in (("majority", MAJORITY), ("best-of-N (arith-check)", BON)):
        if K in budgets_of(results, strat):
            checks.append(diff_check(f"{name}@{K} plateaus below coverage@{K}", cov_k, per_problem(results, strat, K),
                                     "holds if coverage@K - accuracy@K has its 95% interval above 0; fails if below 0"))
    headers = ["k", "coverage", "95% interval", "fit (train k)", "majority@k", "best-of-N@k"]
    rows, maj, bon = [], [], []
    for i, k in enumerate(ks):
        mk = _cell(results, MAJORITY, k)[0] if k in budgets_of(results, MAJORITY) else float("nan")
        bk = _cell(results, BON, k)[0] if k in budgets_of(results, BON) else float("nan")
        maj.append(mk)
        bon.append(bk)
        fv = power_law_coverage([k], fit["a"], fit["b"])[0] if fit.get("a") is not None else None
        rows.append([str(k), _f(cov[i]), _iv(cis[i]), _f(fv) + ("" if k in train else " (held out)"), _f(mk), _f(bk)])
    series = [Series("coverage (pass@k)", [float(k) for k in ks], cov, [c[0] for c in cis], [c[1] for c in cis]),
              Series("majority@k", [float(k) for k in ks], maj), Series("best-of-N@k (arith-check)", [float(k) for k in ks], bon)]
    if fit.get("a") is not None:
        grid = list(np.geomspace(ks[0], ks[-1], 60))
        series.append(Series(f"power law fitted on k <= {train[-1]}", grid, power_law_coverage(grid, fit["a"], fit["b"]),
                             style="dashed"))
    return Analysis(verdict_of(checks), checks, headers, rows, series, "Samples per problem k (log scale)",
                    "Coverage / accuracy")


# -------------------------------------------------------------------------------------------
# flaws: best-of-N stops at the ceiling the verifier's rates predict


def analyse_flaws(results: Sequence[Mapping[str, Any]], samples: Sequence[Mapping[str, Any]],
                  scorer: str = "arith-check") -> Analysis:
    # the verifier's part of the run summary (answers left out: no vote folding is needed here)
    summary = summarize(list(results), [{k: v for k, v in s.items() if k != "answer"} for s in samples])
    v = next((x for x in summary["verifiers"] if x["scorer"] == scorer), None)
    if v is None or not v["measured"]:
        return Analysis("inconclusive", [Check("verifier measured", "needs best-of-N cells and scores", None, None,
                                               "unclear")], ["-"], [])
    bon = f"best-of-n:scorer={scorer}"
    ns = [m["budget"] for m in v["measured"]]
    K = ns[-1]
    ceiling = v["predicted"]["ceiling"]
    last = per_problem(results, bon, K)
    m, iv = mean_interval(list(last.values()))
    checks = [Check(f"best-of-{K} stays at or below the fLaws ceiling {ceiling:.3f}",
                    "holds if the 95% interval of best-of-N accuracy at the largest N contains the ceiling; fails "
                    "if it lies above the ceiling (resampling beat it); unclear if it lies below (not reached yet)",
                    m - ceiling, [iv[0] - ceiling, iv[1] - ceiling],
                    "fails" if iv[0] > ceiling else ("unclear" if iv[1] < ceiling else "holds"))]
    best_n = v["measured_optimal_n"]
    if best_n != K:
        checks.append(diff_check(f"accuracy falls from N={best_n} to N={K}", per_problem(results, bon, best_n), last,
                                 "context: the measured curve peaks before the largest N", decisive=False))
    r = v["rates"]
    headers = ["N", "measured best-of-N", "95% interval", "predicted (per-problem rates)", "predicted (pooled rates)"]
    rows = []
    for i, mm in enumerate(v["measured"]):
        rows.append([str(mm["budget"]), _f(mm["accuracy"]), _iv(mm["wilson"]), _f(v["predicted"]["accuracy"][i]),
                     _f(v["predicted_pooled"]["accuracy"][i])])
    notes = [f"{scorer}: TPR {_f(r['tpr'])} {_iv(r['tpr_interval'])}, FPR {_f(r['fpr'])} {_iv(r['fpr_interval'])}, "
             f"precision {_f(r['precision'])}, base accuracy {_f(r['base_accuracy'])} ({r['samples']} samples, "
             f"{r['accepted']} accepted)",
             f"fLaws ceiling {ceiling:.3f} (per-problem rates), {v['predicted_pooled']['ceiling']:.3f} (pooled rates); "
             f"optimal N predicted {v['predicted']['optimal_n']}, measured {best_n}; with a wrong answer costing as "
             f"much as a right one gains, the optimal N is {v['predicted']['optimal_n_utility']}"]
    xs = [float(n) for n in ns]
    series = [Series("measured best-of-N", xs, [mm["accuracy"] for mm in v["measured"]],
                     [mm["wilson"][0] for mm in v["measured"]], [mm["wilson"][1] for mm in v["measured"]]),
              Series("predicted (per-problem rates)", xs, v["predicted"]["accuracy"], style="dashed"),
              Series("predicted (pooled rates)", xs, v["predicted_pooled"]["accuracy"], style="dashed"),
              Series(f"fLaws ceiling {ceiling:.3f}", xs, [ceiling] * len(xs), style="hline")]
    return Analysis(verdict_of(checks), checks, headers, rows, series, "Samples N (log scale)", notes=notes)


# -------------------------------------------------------------------------------------------
# bom, rpc: curves over N from the shared pool


def _curve_table(results, strategies: Sequence[tuple[str, str]]) -> tuple[list[str], list[list[str]], list[Series]]:
    budgets = sorted(set.intersection(*(set(budgets_of(results, s)) for _, s in strategies)))
    headers = ["N"] + [label for label, _ in strategies]
    rows, series = [], []
    cells = {(s, b): _cell(results, s, b) for _, s in strategies for b in budgets}
    for b in budgets:
        rows.append([str(b)] + [f"{_f(cells[(s, b)][0])} {_iv(cells[(s, b)][1])}" for _, s in strategies])
    for label, s in strategies:
        series.append(Series(label, [float(b) for b in budgets], [cells[(s, b)][0] for b in budgets],
                             [cells[(s, b)][1][0] for b in budgets], [cells[(s, b)][1][1] for b in budgets]))
    return headers, rows, series


def analyse_bom(results: Sequence[Mapping[str, Any]]) -> Analysis:
    budgets = budgets_of(results, BOM)
    K = budgets[-1]
    ref = max((b for b in budgets if b <= K // 4), default=budgets[0])
    rule = (f"holds if accuracy@{K} - accuracy@{ref} has its 95% interval above -{MARGIN} (no drop of more than "
            f"{MARGIN:.2f}); fails if the whole interval is below -{MARGIN}")
    checks = [diff_check(f"Best-of-Majority does not degrade from N={ref} to N={K}", per_problem(results, BOM, K),
                         per_problem(results, BOM, ref), rule, margin=MARGIN)]
    for label, s in (("best-of-N", BON), ("majority", MAJORITY)):
        c = diff_check(f"{label} from N={ref} to N={K} (context: can degrade)", per_problem(results, s, K),
                       per_problem(results, s, ref), rule, margin=MARGIN, decisive=False)
        checks.append(c)
    checks.append(diff_check(f"Best-of-Majority@{K} vs best-of-N@{K} (context)", per_problem(results, BOM, K),
                             per_problem(results, BON, K), "context", decisive=False))
    headers, rows, series = _curve_table(results, [("bom (arith-check)", BOM), ("best-of-N (arith-check)", BON),
                                                   ("majority", MAJORITY)])
    return Analysis(verdict_of(checks), checks, headers, rows, series, "Samples N (log scale)")


def analyse_rpc(results: Sequence[Mapping[str, Any]]) -> Analysis:
    budgets = budgets_of(results, WEIGHTED)
    K = budgets[-1]
    half = budgets[-2] if len(budgets) > 1 else K
    rule = (f"holds if weighted@{half} - majority@{K} has its 95% interval above -{MARGIN} (half the samples lose "
            f"at most {MARGIN:.2f}); fails if the whole interval is below -{MARGIN}")
    checks = [diff_check(f"perplexity-weighted vote with {half} samples vs majority with {K}",
                         per_problem(results, WEIGHTED, half), per_problem(results, MAJORITY, K), rule, margin=MARGIN),
              diff_check(f"weighted@{K} vs majority@{K} (context)", per_problem(results, WEIGHTED, K),
                         per_problem(results, MAJORITY, K), "context", decisive=False)]
    headers, rows, series = _curve_table(results, [("weighted by=prob (PC)", WEIGHTED), ("majority", MAJORITY)])
    return Analysis(verdict_of(checks), checks, headers, rows, series, "Samples N (log scale)")


# -------------------------------------------------------------------------------------------
# adaptive: fewer samples at equal accuracy


def analyse_adaptive(adaptive_results: Sequence[Mapping[str, Any]], pool_results: Sequence[Mapping[str, Any]]
                     ) -> Analysis:
    (N,) = budgets_of(adaptive_results, "adaptive")
    ad = per_problem(adaptive_results, "adaptive", N)
    used = per_problem(adaptive_results, "adaptive", N, "samples")
    maj = {p: v for p, v in per_problem(pool_results, MAJORITY, N).items() if p in ad}
    m, iv = mean_interval(list(used.values()))
    checks = [Check(f"adaptive stops before {N} samples", f"holds if the 95% interval of its mean samples per "
                    f"problem is below {N}; fails if it is not below {N}", N - m, [N - iv[1], N - iv[0]],
                    "holds" if iv[1] < N else "fails", detail=f"mean {m:.2f} samples {_iv(iv)}"),
              diff_check(f"adaptive@{N} accuracy vs majority@{N}", ad, maj,
                         f"holds if the 95% interval of the difference is above -{MARGIN}; fails if below -{MARGIN}",
                         margin=MARGIN)]
    am, aiv, at = _cell(adaptive_results, "adaptive", N)
    mm, miv, mt = _cell(pool_results, MAJORITY, N)
    headers = ["strategy", "accuracy", "95% interval", "samples/problem", "generated tokens/problem"]
    rows = [[f"adaptive (n={N})", _f(am), _iv(aiv), _f(m, 2), _f(at, 1)],
            [f"majority@{N}", _f(mm), _iv(miv), str(N), _f(mt, 1)]]
    xs_budgets = [b for b in budgets_of(pool_results, MAJORITY) if b <= N]
    majs = [_cell(pool_results, MAJORITY, b) for b in xs_budgets]
    series = [Series("majority@N", [float(b) for b in xs_budgets], [c[0] for c in majs], [c[1][0] for c in majs],
                     [c[1][1] for c in majs]),
              Series(f"adaptive (n={N})", [m], [am], [aiv[0]], [aiv[1]], style="points")]
    return Analysis(verdict_of(checks), checks, headers, rows, series, "Samples per problem (log scale)")


# -------------------------------------------------------------------------------------------
# particle-filtering and rebase: step-level search at matched compute


PF, BEAM, DVTS, REBASE = "particle-filter", "beam-search:width=2", "dvts:width=2", "rebase"


def _search_table(results, strategies: Sequence[tuple[str, str]]) -> tuple[list[str], list[list[str]], list[Series]]:
    headers = ["strategy", "N", "accuracy", "95% interval", "generated tokens/problem"]
    rows, series = [], []
    for label, s in strategies:
        cells = [(b, *_cell(results, s, b)) for b in budgets_of(results, s)]
        for b, m, iv, t in cells:
            rows.append([label, str(b), _f(m), _iv(iv), _f(t, 1)])
        series.append(Series(label, [c[3] for c in cells], [c[1] for c in cells], [c[2][0] for c in cells],
                             [c[2][1] for c in cells]))
    return headers, rows, series


def analyse_search(results: Sequence[Mapping[str, Any]]) -> Analysis:
    K = budgets_of(results, PF)[-1]
    others = [("beam search", BEAM), ("DVTS", DVTS), ("best-of-N", BON)]
    rule = "holds if particle filtering minus the other has its 95% interval above 0; fails if below 0"
    checks = [diff_check(f"particle filtering@{K} vs {label}@{K}", per_problem(results, PF, K),
                         per_problem(results, s, K), rule) for label, s in others]
    # context: does particle filtering gain more from the smallest to the largest budget?
    b0 = budgets_of(results, PF)[0]
    top, low = per_problem(results, PF, K), per_problem(results, PF, b0)
    gain = {p: v - low.get(p, 0.0) for p, v in top.items()}
    m, iv = mean_interval(list(gain.values()))
    checks.append(Check(f"particle filtering gains from N={b0} to N={K} (context)", "context", m, iv,
                        _status(iv, 0.0), decisive=False))
    headers, rows, series = _search_table(results, [("particle filtering", PF), *others])
    return Analysis(verdict_of(checks), checks, headers, rows, series, "Generated tokens per problem (log scale)")


def analyse_rebase(results: Sequence[Mapping[str, Any]]) -> Analysis:
    budgets = budgets_of(results, REBASE)
    K = budgets[-1]
    rule = "holds if REBASE minus beam search has its 95% interval above 0; fails if below 0"
    checks = [diff_check(f"REBASE@{K} vs beam search@{K}", per_problem(results, REBASE, K),
                         per_problem(results, BEAM, K), rule)]
    for b in budgets[:-1]:
        checks.append(diff_check(f"REBASE@{b} vs beam search@{b} (context)", per_problem(results, REBASE, b),
                                 per_problem(results, BEAM, b), "context", decisive=False))
    headers, rows, series = _search_table(results, [("REBASE", REBASE), ("beam search", BEAM)])
    return Analysis(verdict_of(checks), checks, headers, rows, series, "Generated tokens per problem (log scale)")


# -------------------------------------------------------------------------------------------
# compute-optimal: auto against uniform best-of-N


def analyse_optimal(results: Sequence[Mapping[str, Any]]) -> Analysis:
    K = budgets_of(results, "auto")[-1]
    fixed = [("best-of-N", BON), ("majority", MAJORITY)]
    best_label, best = max(fixed, key=lambda ls: _cell(results, ls[1], K)[0])
    auto = per_problem(results, "auto", K)
    acc = diff_check(f"auto@{K} accuracy vs {best_label}@{K}", auto, per_problem(results, best, K),
                     f"holds if the 95% interval of the difference is above -{MARGIN}; fails if below -{MARGIN}",
                     margin=MARGIN)
    at = _cell(results, "auto", K)[2]
    bt = _cell(results, best, K)[2]
    ratio = at / bt if bt else float("nan")
    tok = Check(f"auto@{K} spends at most half of {best_label}@{K}'s tokens", "holds if the ratio is <= 0.5; "
                "fails if it is >= 1", ratio, None, "holds" if ratio <= 0.5 else ("fails" if ratio >= 1 else "unclear"))
    headers, rows, series = _search_table(results, [("auto", "auto"), *fixed])
    checks = [acc, tok]
    return Analysis(verdict_of(checks), checks, headers, rows, series, "Generated tokens per problem (log scale)")
