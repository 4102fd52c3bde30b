"""The sizes of each claim's runs: ``tiny`` (the slow test suite), ``quick`` (about 10 minutes
of a quiet 2-core machine for the claims that share a run) and ``full`` (the committed figures;
each run sized for about 20-30 minutes of a quiet 2-core machine).

What is reduced from the papers is said in each claim's verdict: the papers sample up to 10,000
times per problem on GPUs with 7B-70B models; here k stops at 256 and search budgets at 32.
"""

from __future__ import annotations

from ..errors import ConfigError
from .runs import RunSpec

__all__ = ["PRESETS", "pool_run", "search_run", "adaptive_run", "optimal_run", "check_preset"]

PRESETS = ("tiny", "quick", "full")

# One pool of samples for every claim about choosing among independent samples: coverage and
# majority (monkeys), best-of-N with an imperfect verifier (flaws), Best-of-Majority (bom) and
# perplexity-weighted voting (rpc). Pooled strategies share the pool, so it is generated once.
POOL_STRATEGIES = ("majority", "best-of-n:scorer=arith-check", "bom:scorer=arith-check", "weighted:by=prob")
_POOL = {"tiny": (4, 8), "quick": (12, 32), "full": (20, 256)}  # problems, largest k

# Step-level search at matched width, one process scorer (arith-check): particle filtering,
# beam search, DVTS, REBASE and best-of-N (particle-filtering and rebase share it).
SEARCH_STRATEGIES = ("particle-filter", "beam-search:width=2", "dvts:width=2", "rebase",
                     "best-of-n:scorer=arith-check")
_SEARCH = {"tiny": (2, (2, 4)), "quick": (8, (2, 4, 8)), "full": (10, (2, 4, 8, 16, 32))}

_ADAPTIVE = {"tiny": 4, "quick": 12, "full": 20}  # problems (the pool run's first problems)


def check_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise ConfigError("preset", f"unknown preset {preset!r}", ", ".join(PRESETS))
    return preset


def _powers(k: int) -> tuple[int, ...]:
    out, b = [], 1
    while b <= k:
        out.append(b)
        b *= 2
    return tuple(out)


def pool_run(preset: str) -> RunSpec:
    problems, k = _POOL[check_preset(preset)]
    return RunSpec(strategies=POOL_STRATEGIES, budgets=_powers(k), problems=problems)


def search_run(preset: str) -> RunSpec:
    problems, budgets = _SEARCH[check_preset(preset)]
    return RunSpec(strategies=SEARCH_STRATEGIES, budgets=budgets, problems=problems)


def adaptive_run(preset: str) -> RunSpec:
    """Adaptive-Consistency at a budget the pool run also has (its majority@N, on the same
    problems, is the comparison): 32 in the full run, near the paper's 40."""
    problems = _ADAPTIVE[check_preset(preset)]
    budget = {"tiny": 4, "quick": 16, "full": 32}[preset]
    return RunSpec(strategies=("adaptive",), budgets=(budget,), problems=problems)


def optimal_run(preset: str) -> RunSpec:
    """``auto`` beside majority and best-of-N on mixed difficulty (1-4 steps)."""
    problems = {"tiny": 4, "quick": 12, "full": 24}[check_preset(preset)]
    return RunSpec(strategies=("auto", "majority", "best-of-n:scorer=arith-check"), budgets=(1, 2, 4, 8, 16),
                   problems=problems, dataset="arith:seed=1401,steps=1-4")
