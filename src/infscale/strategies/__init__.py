"""Strategies by name. See :mod:`infscale.strategies.sample` for the sample-level family."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Context, ParamSpec, Strategy
from .confidence import DEEPCONF_STRATEGIES
from .sample import SAMPLE_STRATEGIES, SampleStrategy
from .search import SEARCH_STRATEGIES, SearchStrategy
from .refine import Refine
from .fusion import FUSION_STRATEGIES
from .hints import HintMarginalization
from .auto import AUTO

__all__ = ["STRATEGIES", "get_strategy", "Strategy", "Context", "ParamSpec", "SampleStrategy", "SearchStrategy"]

STRATEGIES: dict[str, Strategy] = {**SAMPLE_STRATEGIES, **DEEPCONF_STRATEGIES, **SEARCH_STRATEGIES}
# refinement and fusion: compositions that feed earlier candidates into new prompts
STRATEGIES.update({s.name: s for s in [Refine(), *FUSION_STRATEGIES.values(), HintMarginalization()]})
# auto: probes, reads a difficulty signal, hands over to the strategy its policy chose
STRATEGIES[AUTO.name] = AUTO


def get_strategy(name: str | Strategy) -> Strategy:
    if isinstance(name, Strategy):
        return name
    s = STRATEGIES.get(name)
    if s is None:
        raise ConfigError("strategy", f"unknown strategy {name!r}", ", ".join(STRATEGIES))
    return s
