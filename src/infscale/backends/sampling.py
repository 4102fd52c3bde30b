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
    """Draw one token id from ``logits``; return ``(token, model_logprob, sampled_logprob)``.

    Costs a few passes over the vocabulary; a sort happens only for top-p, and then only over
    the best few hundred tokens unless they do not reach ``top_p``.
    """
    z = np.asarray(logits, dtype=np.float64)
    zmax = float(z.max())
    if params.greedy:
        tok = int(z.argmax())
        lse = zmax + float(np.log(np.exp(z - zmax).sum()))
        return tok, float(z[tok]) - lse, 0.0
    temp = params.temperature
    ids = _truncate(z, zmax, params)
    w = np.exp((z - zmax) / temp) if ids is None else np.exp((z[ids] - zmax) / temp)
    c = np.cumsum(w)
    total = float(c[-1])
    j = min(int(np.searchsorted(c, rng.random() * total, side="right")), len(c) - 1)
    tok = j if ids is None else int(ids[j])
    if temp == 1.0 and ids is None:
        lse = zmax + float(np.log(total))
    else:
        lse = zmax + float(np.log(np.exp(z - zmax).sum()))
    return tok, float(z[tok]) - lse, float(np.log(w[j] / total))


def _truncate(z: np.ndarray, zmax: float, params: SamplingParams) -> np.ndarray | None:
    """Token ids kept by top-k, then min-p, then top-p (all on the tempered distribution);
    ``None`` when nothing is truncated."""
    n = z.shape[0]
    temp = params.temperature
    ids = None
    if 0 < params.top_k < n:
        ids = np.argpartition(-z, params.top_k - 1)[: params.top_k]
    if params.min_p > 0.0:
        # p_i / p_max >= min_p  <=>  (z_i - zmax) / T >= log(min_p)
        thr = zmax + temp * float(np.log(params.min_p))
        ids = np.flatnonzero(z >= thr) if ids is None else ids[z[ids] >= thr]
    if params.top_p < 1.0:
        ids = _top_p(z, zmax, temp, ids, params.top_p)
    return ids


def _top_p(z: np.ndarray, zmax: float, temp: float, ids: np.ndarray | None, top_p: float) -> np.ndarray:
    """The smallest best-first set whose tempered mass (relative to ``ids``, or to the whole
    vocabulary) reaches ``top_p``."""
    n = z.shape[0]
    if ids is None:
        total = float(np.exp((z - zmax) / temp).sum())
        cand = np.argpartition(-z, _PREFILTER - 1)[:_PREFILTER] if n > _PREFILTER else np.arange(n)
    else:
        total = float(np.exp((z[ids] - zmax) / temp).sum())
        cand = ids
    while True:
        order = cand[np.argsort(-z[cand], kind="stable")]
        mass = np.cumsum(np.exp((z[order] - zmax) / temp)) / total
        cut = int(np.searchsorted(mass, top_p, side="left"))
        if cut < len(order) or ids is not None or len(cand) == n:
            return order[: cut + 1]
        cand = np.arange(n)  # the best few hundred did not reach top_p: look at all
