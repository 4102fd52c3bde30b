"""The research claims infscale is built on, reproduced on the shipped models.

``infscale reproduce CLAIM [--quick|--tiny]`` runs a claim's evaluations through the normal
harness (stored, resumable, samples reused across claims: :mod:`infscale.claims.runs`), judges
it by checks written down before any run (:mod:`infscale.claims.analysis`) and writes a figure
(SVG and PNG) and a markdown verdict into ``INFSCALE_HOME/claims/`` (:mod:`infscale.claims.write`).

Each :class:`Claim` below carries, fixed in the code before the runs, what the paper claims, why
this task, what would count as "not reproduced", and what is reduced from the paper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ConfigError
from . import analysis as A
from .presets import adaptive_run, optimal_run, pool_run, search_run
from .runs import RunSpec

__all__ = ["Claim", "CLAIMS", "get_claim"]

_TASK = ("Seeded arithmetic word problems with one or two operations (`arith:seed=1401,steps=1-2`): "
         "SmolLM2-135M answers about one in ten right with one sample and about a third within eight "
         "samples (the demo, on the generator's seed 0), so sampling, voting and verifying have room to "
         "move. `arith-check` is a real, imperfect verifier there: it checks every computation but not the "
         "plan. The difficulty and the 96-token limit were chosen on seed 0; these problems (seed 1401) were "
         "never used to choose anything.")


@dataclass(frozen=True)
class Claim:
    """A headline result, how it is tested here, and what would refute it."""

    name: str
    title: str
    paper: str
    statement: str
    not_reproduced_if: str
    reduced: str
    runs: Callable[[str], dict[str, RunSpec]]
    analyse: Callable[[dict], "A.Analysis"]
    requires: tuple[str, ...] = field(default=())
    task: str = _TASK


def _pool(preset: str) -> dict[str, RunSpec]:
    return {"pool": pool_run(preset)}


def _search(preset: str) -> dict[str, RunSpec]:
    return {"search": search_run(preset)}


CLAIMS: dict[str, Claim] = {c.name: c for c in [
    Claim(
        "monkeys", "Coverage grows log-linearly with samples; votes plateau below it",
        "Brown et al. 2024, \"Large Language Monkeys: Scaling Inference Compute with Repeated Sampling\" "
        "(arXiv:2407.21787)",
        "Coverage (pass@k) grows log-linearly with k over orders of magnitude and follows an exponentiated "
        "power law; majority vote and reward-model selection plateau well below coverage.",
        "Coverage at the largest k is not above coverage at k = 1 (95% interval of the difference below 0), or "
        "the power law fitted on k <= K/4 misses the measured coverage at a held-out larger k (outside its 95% "
        "bootstrap interval), or majority vote or best-of-N at the largest k is above coverage (interval below 0).",
        "The paper samples up to 10,000 times per problem with 70M-70B models on GSM8K, MATH and code; here k "
        "stops at 256 (full) or 32 (quick), on 20 (full) or 12 (quick) generated problems, so the log-linear "
        "range is just over two orders of magnitude in the full run and one and a half in the quick one.",
        _pool, lambda o: A.analyse_monkeys(o["pool"].results, o["pool"].samples)),
    Claim(
        "flaws", "An imperfect verifier caps best-of-N at a predictable ceiling",
        "Stroebl, Kapoor & Narayanan 2024, \"Inference Scaling fLaws: The Limits of LLM Resampling with "
        "Imperfect Verifiers\" (arXiv:2411.17501)",
        "With a verifier that has false positives, resampling accuracy is capped at p·TPR/(p·TPR + (1−p)·FPR) "
        "whatever the budget, and can fall with N; the optimal N is often small.",
        "Best-of-N (arith-check) accuracy at the largest N lies above the fLaws ceiling computed from the "
        "verifier's measured rates (its 95% interval entirely above the ceiling).",
        "The paper uses HumanEval/MBPP unit tests as the imperfect verifier for models of many sizes; here the "
        "verifier is arith-check on arithmetic problems and one 135M model, N up to 256 (full) or 32 (quick). The "
        "rates and the measured curve come from the same pool of samples.",
        _pool, lambda o: A.analyse_flaws(o["pool"].results, o["pool"].samples)),
    Claim(
        "particle-filtering", "Particle filtering scales better than beam search, DVTS and best-of-N",
        "Puri et al. 2025, \"A Probabilistic Inference Approach to Inference-Time Scaling of LLMs using "
        "Particle-Based Monte Carlo Methods\" (arXiv:2502.01618)",
        "With the same process reward model, particle filtering beats beam search, DVTS and best-of-N at equal "
        "budgets, and its advantage grows with the budget.",
        "At the largest budget particle filtering is below beam search, DVTS or best-of-N (95% interval of the "
        "paired difference below 0).",
        "The paper uses 1.5B-7B models with a trained PRM on MATH500 and AIME, budgets up to 128; here the "
        "process scorer is arith-check on one 135M model, budgets 2-32 (full) or 2-8 (quick), on 10 (full) or 8 "
        "(quick) problems, beam search and DVTS with width 2.",
        _search, lambda o: A.analyse_search(o["search"].results)),
    Claim(
        "bom", "Best-of-Majority does not degrade as N grows",
        "Di et al. 2025, \"Best-of-Majority: Minimax-Optimal Strategy for Pass@k Inference Scaling\" "
        "(arXiv:2510.03199)",
        "Best-of-Majority's pass@k does not degrade as N grows, while best-of-N's and majority voting's can.",
        "Best-of-Majority's accuracy at the largest N is more than 0.05 below its accuracy at N/4 (95% interval of "
        "the paired difference entirely below −0.05).",
        "The paper works with pass@k for k > 1 on math benchmarks with 7B+ models and trained reward models; "
        "here k = 1 (the chosen answer), arith-check as the reward, N up to 256 (full) or 32 (quick).",
        _pool, lambda o: A.analyse_bom(o["pool"].results)),
    Claim(
        "rpc", "Perplexity consistency reaches majority vote's accuracy with fewer samples",
        "Zhou et al. 2025, \"A Theoretical Study on Bridging Internal Probability and Self-Consistency for LLM "
        "Reasoning\" (NeurIPS 2025, arXiv:2510.15444)",
        "Perplexity consistency with reasoning pruning (RPC) reaches self-consistency's accuracy with about half "
        "the samples.",
        "Weighted voting by sequence probability with half the samples is more than 0.05 below majority vote with "
        "all of them (95% interval of the paired difference entirely below −0.05).",
        "Only the perplexity-consistency half is tested (`weighted:by=prob`, weights = geometric-mean token "
        "probability); infscale has no reasoning pruning. The paper uses 7B+ models on math and code; here one "
        "135M model, N up to 256 (full) or 32 (quick).",
        _pool, lambda o: A.analyse_rpc(o["pool"].results)),
    Claim(
        "adaptive", "Adaptive consistency saves samples at equal accuracy",
        "Aggarwal et al. 2023, \"Let's Sample Step by Step: Adaptive-Consistency for Efficient Reasoning and "
        "Coding with LLMs\" (arXiv:2305.11860)",
        "Stopping sampling once the majority is settled (a Beta/Dirichlet stopping rule) uses several times "
        "fewer samples than fixed self-consistency at nearly the same accuracy.",
        "Adaptive consistency does not stop early on average (95% interval of its mean samples reaches the "
        "budget), or its accuracy is more than 0.05 below majority vote at the same budget (interval entirely "
        "below −0.05).",
        "The paper uses budgets of 40 samples with large models on 17 datasets; here the budget is 32 (full) or "
        "16 (quick) with threshold 0.95, compared with majority@N subsampled from the shared pool on the same "
        "problems.",
        lambda p: {"adaptive": adaptive_run(p), "pool": pool_run(p)},
        lambda o: A.analyse_adaptive(o["adaptive"].results, o["pool"].results)),
    Claim(
        "rebase", "REBASE beats beam search at equal compute",
        "Wu et al. 2024, \"Inference Scaling Laws: An Empirical Analysis of Compute-Optimal Inference for "
        "Problem-Solving with Language Models\" (arXiv:2408.00724)",
        "REBASE (reward-balanced expansion) gives better accuracy than beam search (and sampling) at the same "
        "compute, and is Pareto-optimal.",
        "At the largest budget REBASE is below beam search (95% interval of the paired difference below 0).",
        "The paper uses Llemma 7B/34B with a trained PRM on MATH500 and GSM8K; here arith-check as the process "
        "scorer, one 135M model, budgets 2-32 (full) or 2-8 (quick).",
        _search, lambda o: A.analyse_rebase(o["search"].results)),
    Claim(
        "compute-optimal", "Per-query compute allocation beats uniform best-of-N",
        "Snell et al. 2024, \"Scaling LLM Test-Time Compute Optimally can be More Effective than Scaling Model "
        "Parameters\" (arXiv:2408.03314)",
        "Choosing the strategy and budget per query by estimated difficulty matches best-of-N at about 4x fewer "
        "tokens.",
        "auto's accuracy at the largest budget is more than 0.05 below the best fixed strategy's (interval entirely "
        "below −0.05), or it spends at least as many tokens.",
        "The paper uses PaLM 2-S* with trained verifiers and revision models on MATH; here the `auto` strategy "
        "with the shipped policy on mixed-difficulty arithmetic (1-4 steps), budgets up to 16.",
        lambda p: {"optimal": optimal_run(p)}, lambda o: A.analyse_optimal(o["optimal"].results),
        requires=("auto",),
        task="Seeded arithmetic word problems of mixed difficulty, one to four operations "
             "(`arith:seed=1401,steps=1-4`), so that a per-query difficulty signal has something to separate; "
             "the policy is the one `auto` ships, tuned on other seeds."),
]}


def get_claim(name: str) -> Claim:
    if name not in CLAIMS:
        raise ConfigError("claim", f"unknown claim {name!r}", ", ".join(CLAIMS))
    return CLAIMS[name]
