"""Token sampling from logits: greedy, truncation, reported log-probabilities, and the law of the draws.

Everything is seeded; the statistical test has a fixed false-alarm rate (p-value threshold 1e-4).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from infscale import SamplingParams
from infscale.backends.sampling import _PREFILTER, _truncate, log_softmax, sample_token

LOGITS6 = np.array([2.0, 1.5, 1.0, 0.3, -0.5, -1.0])


def reference(z: np.ndarray, params: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: full sort; temperature, then top-k, min-p, top-p (each on what is left,
    renormalised). Returns (kept ids best first, their renormalised probabilities)."""
    t = np.asarray(z, dtype=np.float64) / params.temperature
    order = np.argsort(-t, kind="stable")
    if params.top_k > 0:
        order = order[: params.top_k]
    p = np.exp(t[order] - t[order].max())
    p = p / p.sum()
    if params.min_p > 0:
        keep = p >= params.min_p * p[0]
        order, p = order[keep], p[keep] / p[keep].sum()
    if params.top_p < 1.0:
        c = np.cumsum(p)
        m = int(np.argmax(c >= params.top_p)) + 1 if c[-1] >= params.top_p else len(order)
        order, p = order[:m], p[:m] / p[:m].sum()
    return order, p


def chi2_sf_wilson_hilferty(x: float, k: int) -> float:
    """Upper tail of a chi-square with k degrees of freedom (Wilson–Hilferty cube-root normal)."""
    h = 2.0 / (9.0 * k)
    zscore = ((x / k) ** (1.0 / 3.0) - (1.0 - h)) / math.sqrt(h)
    return 0.5 * math.erfc(zscore / math.sqrt(2.0))


# -- greedy ---------------------------------------------------------------------------------

def test_greedy_returns_argmax_with_zero_sampled_logprob():
    rng = np.random.default_rng(0)
    for _ in range(20):
        z = rng.normal(size=50) * 3
        tok, lp, slp = sample_token(z, SamplingParams(temperature=0.0), np.random.default_rng(1))
        assert tok == int(np.argmax(z))
        assert slp == 0.0
        assert lp == pytest.approx(float(log_softmax(z)[tok]), abs=1e-12)


def test_greedy_ignores_rng_and_truncation():
    z = np.array([0.1, 3.0, 2.9, -1.0])
    p = SamplingParams(temperature=0.0, top_k=1, top_p=0.1, min_p=0.5)
    outs = {sample_token(z, p, np.random.default_rng(s))[0] for s in range(10)}
    assert outs == {1}


def test_log_softmax_normalises():
    z = np.array([1000.0, 999.0, -50.0])  # large values: must not overflow
    ls = log_softmax(z)
    assert np.isfinite(ls).all()
    assert np.exp(ls).sum() == pytest.approx(1.0)


# -- truncation never returns excluded tokens ------------------------------------------------

TRUNCATIONS = [
    SamplingParams(temperature=1.0, top_k=2),
    SamplingParams(temperature=0.8, top_k=3),
    SamplingParams(temperature=1.0, top_p=0.6),
    SamplingParams(temperature=0.8, top_p=0.9),
    SamplingParams(temperature=1.3, min_p=0.2),
    SamplingParams(temperature=1.0, min_p=0.5),
    SamplingParams(temperature=0.7, top_k=4, top_p=0.8),
    SamplingParams(temperature=1.2, top_k=5, min_p=0.1, top_p=0.95),
    SamplingParams(temperature=1.0, top_k=1),
    SamplingParams(temperature=1.0, top_k=100),  # k >= vocab disables
    SamplingParams(temperature=2.0),
]


def kept_ids(z, params):
    """The ids the sampler keeps (``None`` from ``_truncate`` means the whole vocabulary)."""
    got = _truncate(np.asarray(z, dtype=np.float64), float(np.max(z)), params)
    return list(range(len(z))) if got is None else sorted(int(i) for i in got)


@pytest.mark.parametrize("params", TRUNCATIONS, ids=lambda p: f"T{p.temperature}-k{p.top_k}-p{p.top_p}-m{p.min_p}")
def test_truncation_matches_reference_and_logprobs(params):
    z = LOGITS6
    kept, q = reference(z, params)
    assert kept_ids(z, params) == sorted(kept.tolist())
    qmap = dict(zip(kept.tolist(), q.tolist()))
    full = log_softmax(z)
    rng = np.random.default_rng(123)
    seen = set()
    for _ in range(400):
        tok, lp, slp = sample_token(z, params, rng)
        assert tok in qmap, f"excluded token {tok} drawn"
        seen.add(tok)
        assert lp == pytest.approx(float(full[tok]), abs=1e-12)
        assert slp == pytest.approx(math.log(qmap[tok]), abs=1e-9)
    # every kept token with mass >= 5% shows up in 400 draws (miss probability < 1e-8)
    assert {t for t, w in qmap.items() if w >= 0.05} <= seen


def test_top_k_and_min_p_exclusions_explicit():
    z = LOGITS6
    rng = np.random.default_rng(7)
    toks = {sample_token(z, SamplingParams(temperature=1.0, top_k=2), rng)[0] for _ in range(300)}
    assert toks == {0, 1}
    # min_p=0.5 at T=1: keep tokens with z >= 2 + log 0.5 = 1.307 -> {0, 1}
    toks = {sample_token(z, SamplingParams(temperature=1.0, min_p=0.5), rng)[0] for _ in range(300)}
    assert toks == {0, 1}
    # a tiny top_p keeps only the top token: it is then drawn with certainty
    tok, _, slp = sample_token(z, SamplingParams(temperature=1.0, top_p=0.01), rng)
    assert tok == 0 and slp == pytest.approx(0.0, abs=1e-12)


# -- the law of the draws --------------------------------------------------------------------

def test_empirical_frequencies_match_target_chi_square():
    """M draws vs the exact truncated, tempered, renormalised target.

    Pearson's statistic over the kept cells is ~chi2(K-1) under the null; we reject only when
    its upper-tail probability (Wilson–Hilferty) is below 1e-4, i.e. the test has a false-alarm
    rate of 1e-4 (and, seeded, is deterministic). Each cell is also held to 5 binomial standard
    errors sqrt(q(1-q)/M)."""
    params = SamplingParams(temperature=0.8, top_p=0.9)
    kept, q = reference(LOGITS6, params)
    assert 2 < len(kept) < 6  # the truncation matters here
    M = 20_000
    rng = np.random.default_rng(20240601)
    counts = np.zeros(len(LOGITS6), dtype=np.int64)
    for _ in range(M):
        counts[sample_token(LOGITS6, params, rng)[0]] += 1
    excluded = np.setdiff1d(np.arange(len(LOGITS6)), kept)
    assert counts[excluded].sum() == 0
    obs = counts[kept]
    exp = M * q
    assert exp.min() >= 5  # chi-square approximation is valid
    stat = float(((obs - exp) ** 2 / exp).sum())
    pval = chi2_sf_wilson_hilferty(stat, len(kept) - 1)
    assert pval > 1e-4, f"chi2={stat:.2f} df={len(kept) - 1} p={pval:.2e} obs={obs} exp={exp}"
    se = np.sqrt(q * (1 - q) / M)
    assert np.all(np.abs(obs / M - q) <= 5 * se), (obs / M, q, se)


def test_chi_square_detects_a_wrong_target():
    """Power check: the same statistic rejects an untempered (T=1) target as the null."""
    params = SamplingParams(temperature=0.8, top_p=0.9)
    kept, _ = reference(LOGITS6, params)
    wrong_kept, wrong_q = reference(LOGITS6, SamplingParams(temperature=1.0, top_k=len(kept)))
    assert list(wrong_kept) == list(kept)
    M = 20_000
    rng = np.random.default_rng(99)
    counts = np.zeros(len(LOGITS6), dtype=np.int64)
    for _ in range(M):
        counts[sample_token(LOGITS6, params, rng)[0]] += 1
    exp = M * wrong_q
    stat = float(((counts[kept] - exp) ** 2 / exp).sum())
    assert chi2_sf_wilson_hilferty(stat, len(kept) - 1) < 1e-4


def test_wilson_hilferty_is_accurate():
    # known chi-square quantiles: (x, df, upper tail)
    for x, k, tail in [(3.841, 1, 0.05), (9.488, 4, 0.05), (18.467, 4, 0.001), (23.209, 10, 0.01)]:
        assert chi2_sf_wilson_hilferty(x, k) == pytest.approx(tail, rel=0.25)


# -- the top-p prefilter is exact -------------------------------------------------------------

@pytest.mark.parametrize("scale, widened", [(3.0, False), (0.3, True)])
def test_prefilter_matches_full_sort(scale, widened):
    rng = np.random.default_rng(5000 + int(scale * 10))
    z = rng.normal(size=5000) * scale
    params = SamplingParams(temperature=1.0, top_p=0.5)
    kept, q = reference(z, params)
    # the scale chooses which path runs: prefilter sufficient, or widened to the whole vocabulary
    top = np.sort(np.exp(log_softmax(z)))[::-1]
    assert (top[:_PREFILTER].sum() < 0.5) == widened
    assert (len(kept) > _PREFILTER) == widened
    assert kept_ids(z, params) == sorted(kept.tolist())
    qmap = dict(zip(kept.tolist(), q.tolist()))
    draw_rng = np.random.default_rng(1)
    for _ in range(200):
        tok, lp, slp = sample_token(z, params, draw_rng)
        assert tok in qmap
        assert slp == pytest.approx(math.log(qmap[tok]), abs=1e-9)


def test_sampling_is_reproducible_with_the_same_rng_seed():
    z = np.random.default_rng(3).normal(size=200)
    p = SamplingParams(temperature=0.9, top_p=0.95)
    a = [sample_token(z, p, r)[0] for r in [np.random.default_rng(11)] for _ in range(50)]
    b = [sample_token(z, p, r)[0] for r in [np.random.default_rng(11)] for _ in range(50)]
    assert a == b


# -- the batched sampler (all live sequences in one array operation) ----------------------------

def test_sample_rows_matches_sample_token_draw_for_draw():
    """Same rng streams, same tokens and log-probabilities (float32 vs float64: 1e-5), in every
    kind of row: plain tempered rows are drawn together, the others one by one."""
    from infscale.backends.sampling import sample_rows

    rng = np.random.default_rng(17)
    z = (rng.normal(size=(6, 3000)) * 2.5).astype(np.float32)  # 3000: not a multiple of the block
    params = [SamplingParams(temperature=0.7), SamplingParams(temperature=1.0), SamplingParams(temperature=1.3),
              SamplingParams(temperature=0.8, top_p=0.9), SamplingParams(temperature=0.0),
              SamplingParams(temperature=0.9, top_k=40)]
    ra = [np.random.default_rng(100 + i) for i in range(6)]
    rb = [np.random.default_rng(100 + i) for i in range(6)]
    for _ in range(200):
        got = sample_rows(z, params, ra)
        want = [sample_token(z[i], params[i], rb[i]) for i in range(6)]
        for (t1, lp1, s1), (t2, lp2, s2) in zip(got, want):
            assert t1 == t2
            assert lp1 == pytest.approx(lp2, abs=1e-5)
            assert s1 == pytest.approx(s2, abs=1e-5)


def test_sample_rows_does_not_depend_on_the_other_rows():
    from infscale.backends.sampling import sample_rows

    z = (np.random.default_rng(4).normal(size=(5, 50_000)) * 3).astype(np.float32)
    params = [SamplingParams(temperature=t) for t in (0.6, 0.7, 1.0, 1.2, 0.7)]
    together = sample_rows(z, params, [np.random.default_rng(i) for i in range(5)])
    alone = [sample_rows(z[i : i + 1], [params[i]], [np.random.default_rng(i)])[0] for i in range(5)]
    assert together == alone


def test_sample_rows_chi_square_against_the_tempered_target():
    """M draws of one plain row vs softmax(z / T); false-alarm rate 1e-4 as above."""
    from infscale.backends.sampling import sample_rows

    params = SamplingParams(temperature=0.8)
    q = np.exp(log_softmax(LOGITS6 / 0.8))
    M, rows = 20_000, 50
    z = np.tile(LOGITS6.astype(np.float32), (rows, 1))
    rngs = [np.random.default_rng(7000 + i) for i in range(rows)]
    counts = np.zeros(len(LOGITS6), dtype=np.int64)
    for _ in range(M // rows):
        for tok, _, _ in sample_rows(z, [params] * rows, rngs):
            counts[tok] += 1
    exp = M * q
    assert exp.min() >= 5
    stat = float(((counts - exp) ** 2 / exp).sum())
    assert chi2_sf_wilson_hilferty(stat, len(q) - 1) > 1e-4, (counts, exp)


def test_sample_rows_skips_the_model_logprob_when_not_asked():
    from infscale.backends.sampling import sample_rows

    z = np.tile(LOGITS6.astype(np.float32), (3, 1))
    params = [SamplingParams(temperature=0.7, logprobs=False), SamplingParams(temperature=0.7),
              SamplingParams(temperature=0.7, logprobs=False, top_logprobs=2)]
    out = sample_rows(z, params, [np.random.default_rng(i) for i in range(3)])
    assert out[0][1] is None and out[1][1] is not None and out[2][1] is not None
    assert all(s <= 0.0 for _, _, s in out)
