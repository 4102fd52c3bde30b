"""Token sampling from raw logits, in numpy, with both log-probabilities a caller may need.

The order is fixed and documented: temperature first, then top-k, min-p and top-p truncation
on the tempered distribution, then renormalisation and one draw from the sample's own rng.
For the drawn token we report

* ``model_logprob``: log p(token) under the unmodified model distribution (softmax of the raw
  logits, temperature 1, no truncation) — the sequence prior that weighting schemes need;
* ``sampled_logprob``: log q(token) under the distribution actually sampled from — the proposal
  that importance weights divide by. Greedy picks have ``sampled_logprob == 0``.
"""

from __future__ import annotations

import numpy as np

from ..params import SamplingParams

__all__ = ["sample_token", "log_softmax"]

_PREFILTER = 512  # tokens looked at first when only top-p truncation applies


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64, copy=False)
    m = z.max()
    return z - (m + np.log(np.exp(z - m).sum()))


def sample_token(
    logits: np.ndarray, params: SamplingParams, rng: np.random.Generator
) -> tuple[int, float, float]:
    """Draw one token id from ``logits``; return ``(token, model_logprob, sampled_logprob)``."""
    z = logits.astype(np.float64, copy=False)
    zmax = z.max()
    lse = zmax + np.log(np.exp(z - zmax).sum())
    if params.greedy:
        tok = int(np.argmax(z))
        return tok, float(z[tok] - lse), 0.0

    t = z / params.temperature
    ids = _truncate(t, params)
    tk = t[ids]
    tk = tk - tk.max()
    p = np.exp(tk)
    p /= p.sum()
    j = int(np.searchsorted(np.cumsum(p), rng.random() * 1.0, side="right"))
    j = min(j, len(ids) - 1)
    tok = int(ids[j])
    return tok, float(z[tok] - lse), float(np.log(p[j]))


def _truncate(t: np.ndarray, params: SamplingParams) -> np.ndarray:
    """Token ids kept by top-k, min-p and top-p (on tempered logits ``t``), best first."""
    n = t.shape[0]
    k = params.top_k if 0 < params.top_k < n else n
    if params.top_p < 1.0 and k == n and params.min_p == 0.0:
        k = min(_PREFILTER, n)
        widen = True
    else:
        widen = False
    while True:
        if k < n:
            ids = np.argpartition(-t, k - 1)[:k]
        else:
            ids = np.arange(n)
        ids = ids[np.argsort(-t[ids], kind="stable")]
        tk = t[ids]
        if params.min_p > 0.0:
            ids = ids[tk >= tk[0] + np.log(params.min_p)]
            tk = t[ids]
        if params.top_p >= 1.0:
            return ids
        # mass relative to the full tempered distribution, so a prefilter stays exact
        tmax = t.max()
        full = np.exp(t - tmax).sum() if widen else None
        pk = np.exp(tk - tmax)
        total = full if full is not None else pk.sum()
        c = np.cumsum(pk) / total
        cut = int(np.searchsorted(c, params.top_p, side="left"))
        if cut < len(ids) or not widen or k >= n:
            return ids[: cut + 1]
        k = n  # the prefiltered tokens did not reach top_p: look at all of them
