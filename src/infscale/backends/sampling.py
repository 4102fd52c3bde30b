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

import threading

import numpy as np

from ..params import SamplingParams

__all__ = ["sample_token", "sample_rows", "sample_masked", "model_logprob", "log_softmax", "token_confidence", "self_certainty"]

_PREFILTER = 512  # tokens looked at first when only top-p truncation applies
_BLOCK = 1024  # vocabulary block of the batched draw (a two-level inverse CDF)


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


def sample_masked(
    logits: np.ndarray, masked: np.ndarray, params: SamplingParams, rng: np.random.Generator
) -> tuple[int, float, float]:
    """Draw one token from ``masked`` (``logits`` with ``-inf`` at the tokens a constraint
    rejects, e.g. a JSON grammar) exactly as :func:`sample_token` draws from unmasked logits
    (temperature, then truncation of the masked distribution, one ``rng.random()``).

    Returns ``(token, model_logprob, sampled_logprob)``: ``model_logprob`` is log p(token) under
    the model's unmodified distribution (softmax of the raw, unmasked logits: the sequence prior,
    as for unconstrained rows); ``sampled_logprob`` is log q(token) under the distribution drawn
    from — masked, tempered, truncated and renormalised over the allowed tokens.
    """
    tok, _, slp = sample_token(masked, params, rng)
    return tok, model_logprob(logits, tok), slp


def model_logprob(logits: np.ndarray, tok: int) -> float:
    """log p(tok) under the unmodified model distribution (softmax of the raw logits), in float64."""
    z = np.asarray(logits, dtype=np.float64)
    zmax = float(z.max())
    return float(z[tok]) - (zmax + float(np.log(np.exp(z - zmax).sum())))


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


def _plain(params: SamplingParams, n_vocab: int) -> bool:
    """Tempered sampling over the whole vocabulary (no truncation, not greedy)."""
    return (not params.greedy and params.top_p >= 1.0 and params.min_p == 0.0
            and not 0 < params.top_k < n_vocab)


def sample_rows(
    logits: np.ndarray, params: list[SamplingParams], rngs: list[np.random.Generator]
) -> list[tuple[int, float | None, float]]:
    """Draw one token from each row of ``logits`` (shape ``(m, V)``) with its own params and rng.

    Returns ``(token, model_logprob, sampled_logprob)`` per row, like :func:`sample_token`;
    ``model_logprob`` is ``None`` for rows whose params ask for no log-probabilities
    (``logprobs=False`` and no ``top_logprobs``): the full-vocabulary normaliser of the
    untempered distribution is computed only for rows that need it.

    Rows with plain tempered sampling (no truncation, not greedy) are drawn together in float32
    array operations across all rows: tempered weights ``exp((z - max z) / T)``, their sums per
    vocabulary block of 1024, then one uniform draw per row from its rng, located first among
    the block sums and then inside one block (an exact inverse CDF in two levels, accumulated in
    float64). Each row uses one ``rng.random()`` as :func:`sample_token` does; a row's result
    does not depend on the other rows. Other rows go through :func:`sample_token` one by one.
    """
    m, V = logits.shape
    out: list[tuple[int, float | None, float] | None] = [None] * m
    plain = []
    for i in range(m):
        if _plain(params[i], V):
            plain.append(i)
        else:
            tok, lp, slp = sample_token(logits[i], params[i], rngs[i])
            out[i] = (tok, lp if _wants_logprob(params[i]) else None, slp)
    if not plain:
        return out  # type: ignore[return-value]
    z = logits if len(plain) == m else logits[plain]
    z = np.ascontiguousarray(z, dtype=np.float32)
    k = len(plain)
    nb = -(-V // _BLOCK)
    buf = _workspace(k, nb * _BLOCK)
    w = buf[:, :V]
    if V < nb * _BLOCK:
        buf[:, V:] = 0.0
    zmax = z.max(axis=1, keepdims=True)
    inv_t = np.array([[1.0 / params[i].temperature] for i in plain], dtype=np.float32)
    np.subtract(z, zmax, out=w)
    w *= inv_t
    np.exp(w, out=w)
    blocks = np.cumsum(buf.reshape(k, nb, _BLOCK).sum(axis=2), axis=1, dtype=np.float64)
    total = blocks[:, -1]
    toks = np.empty(k, dtype=np.int64)
    for r, i in enumerate(plain):
        u = rngs[i].random() * total[r]
        b = min(int(np.searchsorted(blocks[r], u, side="right")), nb - 1)
        lo = b * _BLOCK
        inner = np.cumsum(buf[r, lo : lo + _BLOCK], dtype=np.float64)
        j = min(int(np.searchsorted(inner, u - (blocks[r, b - 1] if b else 0.0), side="right")), _BLOCK - 1)
        tok = lo + j
        if tok >= V or buf[r, tok] == 0.0:  # rounding at a block's end: the last positive weight
            tok = int(np.flatnonzero(buf[r, : min(tok + 1, V)] > 0.0)[-1])
        toks[r] = tok
    chosen = w[np.arange(k), toks].astype(np.float64)  # read before w is reused below
    slp = np.log(chosen) - np.log(total)
    # the model's own log-probability needs the untempered normaliser, for the rows that ask
    need = [r for r, i in enumerate(plain) if _wants_logprob(params[i]) and params[i].temperature != 1.0]
    lse = {}
    if need:
        zn = z if len(need) == k else z[need]
        e = w[: len(need)]  # the tempered weights are no longer needed: reuse their memory
        np.subtract(zn, zmax if len(need) == k else zmax[need], out=e)
        np.exp(e, out=e)
        sums = e.sum(axis=1)
        lse = {r: float(np.log(sums[q])) for q, r in enumerate(need)}
    for r, i in enumerate(plain):
        tok = int(toks[r])
        if not _wants_logprob(params[i]):
            lp = None
        elif params[i].temperature == 1.0:
            lp = float(slp[r])
        else:
            lp = float(z[r, tok] - zmax[r, 0]) - lse[r]
        out[i] = (tok, lp, float(slp[r]))
    return out  # type: ignore[return-value]


def token_confidence(logits: np.ndarray, k: int) -> np.ndarray:
    """DeepConf's token confidence of each row of ``logits`` (shape ``(m, V)``): the negative
    mean log-probability of the row's ``k`` most likely tokens under the unmodified model
    distribution (softmax of the raw logits), ``-(1/k) * sum_j log p_j = logsumexp(z) - mean of
    the k largest z`` (Fu et al. 2025, "Deep Think with Confidence"). High means the mass sits on
    few tokens and the rest are far below (the model is sure); the smallest possible value is
    ``log k`` (k equally likely candidates holding all the mass). Costs one partial sort and
    one exponential pass per row, paid only by rows that ask for it.
    """
    z = np.asarray(logits, dtype=np.float32)
    if z.ndim != 2:
        raise ValueError(f"token_confidence: logits must be 2-D, got shape {z.shape}")
    m, V = z.shape
    k = max(1, min(int(k), V))
    top = np.partition(z, V - k, axis=1)[:, V - k:].astype(np.float64)
    zmax = top.max(axis=1)
    e = np.exp(z - zmax[:, None].astype(np.float32))
    lse = zmax + np.log(e.sum(axis=1, dtype=np.float64))
    return lse - top.mean(axis=1)


def self_certainty(logits: np.ndarray) -> np.ndarray:
    """The self-certainty of each row of ``logits`` (shape ``(m, V)``): the KL divergence of the
    uniform distribution U over the whole vocabulary from the model's next-token distribution
    p = softmax(z) (raw logits, temperature 1, no truncation), as Kang et al. 2025 ("Scalable
    Best-of-N Selection for Large Language Models via Self-Certainty") define it:

        KL(U || p) = -(1/V) * sum_j log(V * p_j) = logsumexp(z) - mean(z) - log V

    0 for a uniform p, large when the mass sits on few tokens (the model is sure). Costs one
    exponential pass and one sum per row, paid only by rows that ask for it.
    """
    z = np.asarray(logits, dtype=np.float32)
    if z.ndim != 2:
        raise ValueError(f"self_certainty: logits must be 2-D, got shape {z.shape}")
    V = z.shape[1]
    zmax = z.max(axis=1)
    e = np.exp(z - zmax[:, None])
    lse = zmax.astype(np.float64) + np.log(e.sum(axis=1, dtype=np.float64))
    return lse - z.mean(axis=1, dtype=np.float64) - np.log(V)


_local = threading.local()


def _workspace(rows: int, cols: int) -> np.ndarray:
    """A reused float32 scratch array (per thread), so that no step pays fresh page faults."""
    buf = getattr(_local, "buf", None)
    if buf is None or buf.shape[1] != cols or buf.shape[0] < rows:
        buf = np.empty((max(rows, 8), cols), dtype=np.float32)
        _local.buf = buf
    return buf[:rows]


def _wants_logprob(params: SamplingParams) -> bool:
    return params.logprobs or params.top_logprobs > 0
