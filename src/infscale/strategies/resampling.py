"""Resampling and selection over log-weights. Weights are logs; impossible is ``-inf``.

Every resampler maps log-weights and a count to ancestor indices (which particle each new
particle copies); its expected offspring count for particle i is ``n * w_i`` (w normalised),
except ``top_k`` (deterministic selection, beam search's greedy limit) and ``rebase_allocate``
(children counts by softmax(score / T)). When every weight is ``-inf`` the resamplers fall back
to uniform weights: nothing is known, so nothing is preferred.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "normalize",
    "ess",
    "log_mean_exp",
    "multinomial",
    "systematic",
    "stratified",
    "residual",
    "top_k",
    "rebase_allocate",
    "RESAMPLERS",
]


def normalize(logw) -> np.ndarray:
    """Normalised weights from log-weights (uniform if all are ``-inf``)."""
    lw = np.asarray(logw, dtype=np.float64)
    if lw.size == 0:
        return lw
    m = lw.max()
    if not np.isfinite(m):
        if m == np.inf:  # any +inf dominates
            w = (lw == np.inf).astype(np.float64)
            return w / w.sum()
        return np.full(lw.shape, 1.0 / lw.size)
    w = np.exp(lw - m)
    return w / w.sum()


def log_mean_exp(logw) -> float:
    """log(mean(exp(logw))), -inf when all are -inf."""
    lw = np.asarray(logw, dtype=np.float64)
    m = lw.max()
    if not np.isfinite(m):
        return float(m)
    return float(m + math.log(np.exp(lw - m).mean()))


def ess(logw) -> float:
    """Effective sample size 1 / sum(w^2) of the normalised weights."""
    w = normalize(logw)
    return float(1.0 / np.sum(w * w)) if w.size else 0.0


def multinomial(logw, n: int, rng: np.random.Generator) -> np.ndarray:
    w = normalize(logw)
    return np.sort(rng.choice(len(w), size=n, p=w))


def _inverse_cdf(w: np.ndarray, u: np.ndarray) -> np.ndarray:
    c = np.cumsum(w)
    c[-1] = 1.0
    return np.minimum(np.searchsorted(c, u, side="right"), len(w) - 1)


def systematic(logw, n: int, rng: np.random.Generator) -> np.ndarray:
    """One uniform offset, n evenly spaced points: each count is floor or ceil of n*w_i."""
    w = normalize(logw)
    return _inverse_cdf(w, (rng.random() + np.arange(n)) / n)


def stratified(logw, n: int, rng: np.random.Generator) -> np.ndarray:
    """One uniform per stratum [i/n, (i+1)/n)."""
    w = normalize(logw)
    return _inverse_cdf(w, (rng.random(n) + np.arange(n)) / n)


def residual(logw, n: int, rng: np.random.Generator) -> np.ndarray:
    """floor(n*w_i) copies deterministically, the rest multinomially on the residuals."""
    w = normalize(logw)
    counts = np.floor(n * w + 1e-9).astype(int)  # 10 * 0.3 must give 3, not 2.999...
    rest = n - counts.sum()
    if rest > 0:
        r = np.maximum(n * w - counts, 0.0)
        r = r / r.sum()
        counts += np.bincount(rng.choice(len(w), size=rest, p=r), minlength=len(w))
    return np.repeat(np.arange(len(w)), counts)


def top_k(logw, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """The n largest log-weights, without replacement (ties: lower index first)."""
    lw = np.asarray(logw, dtype=np.float64)
    order = np.argsort(-lw, kind="stable")
    return order[: min(n, len(lw))]


def rebase_allocate(scores, budget: int, temperature: float = 1.0) -> np.ndarray:
    """REBASE's balanced expansion: node i gets round(budget * softmax(score/T)_i) children
    (largest remainders fill the rounding gap), summing exactly to ``budget``."""
    s = np.asarray(scores, dtype=np.float64)
    if budget <= 0 or s.size == 0:
        return np.zeros(s.size, dtype=int)
    w = normalize(s / temperature)
    raw = budget * w
    counts = np.floor(raw).astype(int)
    rest = budget - counts.sum()
    if rest > 0:
        order = np.argsort(-(raw - counts), kind="stable")
        counts[order[:rest]] += 1
    return counts


RESAMPLERS = {
    "multinomial": multinomial,
    "systematic": systematic,
    "stratified": stratified,
    "residual": residual,
}
